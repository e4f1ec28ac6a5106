"""Vector store: insert time of the whole catalogue, search latency (4 and 512 vectors, top-50)
and recall of each backend's default index against exact search, for the model's own item
embeddings and the interest vectors of held-out users.

Backends: Milvus Lite and the Milvus server through itemstore.ItemStore (the class the
service and infer.py use), and the in-process limits: exact numpy search (evaluation.exact_search)
and a faiss IVF index (when faiss-cpu is installed: bench/requirements.txt).

    python bench/store_bench.py [--profile quick] [--backends lite,server] [--milvus-uri URI]
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

import common
from common import Profile, log, summary_ms

TOP_K = 50
SearchFn = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]


class FaissIVF:
    """In-process ANN limit: faiss IndexIVFFlat, inner product, one thread (as issue 6 quotes)."""

    def __init__(self, ids: np.ndarray, vectors: np.ndarray, nprobe: int = 8, threads: int = 1):
        import faiss

        faiss.omp_set_num_threads(threads)
        n, d = vectors.shape
        self.nlist = int(max(1, min(1024, n // 64)))
        quant = faiss.IndexFlatIP(d)
        self.index = faiss.IndexIVFFlat(quant, d, self.nlist, faiss.METRIC_INNER_PRODUCT)
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        t0 = time.perf_counter()
        self.index.train(x)
        self.index.add(x)
        self.build_seconds = time.perf_counter() - t0
        self.index.nprobe = nprobe
        self.ids = np.asarray(ids, dtype=np.int64)

    def search(self, queries: np.ndarray, top_k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, rows = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), top_k)
        return np.where(rows >= 0, self.ids[np.maximum(rows, 0)], -1), scores


def in_process_limits(ids: np.ndarray, vectors: np.ndarray) -> dict[str, Any]:
    """name -> object with .search: exact numpy, and faiss IVF if importable."""
    from evaluation.exact_search import ExactSearch

    out: dict[str, Any] = {"exact_numpy": ExactSearch(ids, vectors)}
    try:
        out["faiss_ivf"] = FaissIVF(ids, vectors)
    except ImportError:
        log("faiss-cpu not installed (pip install -r bench/requirements.txt): no faiss limit")
    return out


def recall_at_k(got: np.ndarray, want: np.ndarray) -> float:
    k = want.shape[1]
    return float(np.mean([len(set(g[:k]) & set(w)) / k for g, w in zip(got, want)]))


def latency(search: SearchFn, q: np.ndarray, reps: int) -> dict[str, float]:
    search(q, TOP_K)  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        search(q, TOP_K)
        times.append(time.perf_counter() - t0)
    return summary_ms(times)


def interest_queries(tower, profile: Profile) -> np.ndarray:
    """[n, D] interest vectors of the first held-out users (K per user)."""
    users = common.eval_users(profile, -(-profile.recall_queries // tower.num_interests))
    v = tower.interests(users.histories)
    return v.reshape(-1, v.shape[-1])[: profile.recall_queries].astype(np.float32)


def measure(name: str, search: SearchFn, queries: np.ndarray, truth: np.ndarray,
            profile: Profile, insert_seconds: float | None) -> dict[str, Any]:
    got, _ = search(queries, TOP_K)
    out = {
        "insert_seconds": insert_seconds,
        "search_4": latency(search, queries[:4], profile.store_reps_small),
        "search_512": latency(search, np.resize(queries, (512, queries.shape[1])),
                              profile.store_reps_large),
        "recall@50_vs_exact": recall_at_k(got, truth),
    }
    ins = f"insert {insert_seconds:.1f}s, " if insert_seconds is not None else ""
    log(f"store {name}: {ins}search 4 vectors {out['search_4']['median_ms']:.1f} ms, "
        f"512 vectors {out['search_512']['median_ms']:.0f} ms, "
        f"recall@50 {out['recall@50_vs_exact']:.4f}")
    return out


def run(profile: Profile, backends=("lite", "server"), server_uri: str | None = None,
        **_: Any) -> dict[str, Any]:
    from itemstore import DEFAULT_INDEX, ItemStore

    tower = common.load_tower(profile)
    ids, vectors = tower.item_embeddings()
    queries = interest_queries(tower, profile)
    limits = in_process_limits(ids, vectors)
    truth, _ = limits["exact_numpy"].search(queries, TOP_K)
    log(f"store: {len(ids)} items, {len(queries)} interest vectors, backends {','.join(backends)}")
    results: dict[str, Any] = {"items": int(len(ids)), "queries": int(len(queries))}
    for b in backends:
        store = ItemStore(common.backend_uri(b, "store", server_uri), "bench_store",
                          dim=tower.dim, timeout=120)
        try:
            _, insert_s = common.timed(store.replace_items, ids, vectors)
            results[b] = measure(b, store.search, queries, truth, profile, insert_s)
            results[b]["index"] = DEFAULT_INDEX[store.backend]
            results[b]["search_params"] = dict(store.search_params)
        finally:
            store.close()
    for name, backend in limits.items():
        results[name] = measure(name, backend.search, queries, truth, profile,
                                getattr(backend, "build_seconds", None))
    # The floor of any exact search: the matrix product alone for the 512 vectors.
    q512 = np.resize(queries, (512, queries.shape[1]))
    results["exact_numpy"]["matmul_only_512"] = latency(lambda q, _k: q @ vectors.T, q512,
                                                        profile.store_reps_large)
    return results


def main() -> None:
    common.cli(run, __doc__, backends="lite")


if __name__ == "__main__":
    main()
