"""Measure ItemStore on a full-size synthetic catalogue: insert time, search latency, ANN recall.

    python milvus/bench_store.py --uri /tmp/bench.db                      # Milvus Lite
    milvus/start_server.sh && python milvus/bench_store.py --uri http://127.0.0.1:19530
    python milvus/bench_store.py --uri /tmp/bench.db --index FLAT --nprobe 16

Vectors are "random-ish": a Gaussian mixture (items scattered around 2,000 centres), as
trained item embeddings cluster; --uniform uses plain Gaussian noise (worst case for IVF).
Queries are drawn from the same mixture, like user-interest vectors. Recall@k is the share
of numpy's exact inner-product top-k that Milvus returned.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from mind.milvus_store import ItemStore


def catalogue(n: int, dim: int, uniform: bool, rng: np.random.Generator) -> np.ndarray:
    if uniform:
        return rng.standard_normal((n, dim), dtype=np.float32)
    centres = rng.standard_normal((2000, dim), dtype=np.float32)
    pick = rng.integers(0, len(centres), n)
    return centres[pick] + 0.6 * rng.standard_normal((n, dim), dtype=np.float32)


def exact_top_k(items: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    scores = q @ items.T
    part = np.argpartition(-scores, k, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1)
    return np.take_along_axis(part, order, axis=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--uri", required=True)
    ap.add_argument("--collection", default="bench_items")
    ap.add_argument("--n", type=int, default=367_983)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--index", default=None, help="index type (default: the backend's)")
    ap.add_argument("--nprobe", type=int, default=None)
    ap.add_argument("--ef", type=int, default=None)
    ap.add_argument("--top-k", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--uniform", action="store_true")
    ap.add_argument("--skip-insert", action="store_true", help="reuse the loaded collection")
    args = ap.parse_args()

    rng = np.random.default_rng(7)
    items = catalogue(args.n, args.dim, args.uniform, rng)
    ids = np.arange(args.n, dtype=np.int64)
    params = {k: v for k, v in (("nprobe", args.nprobe), ("ef", args.ef)) if v is not None}
    store = ItemStore(args.uri, args.collection, dim=args.dim, timeout=60, search_params=params)
    print(f"backend={store.backend} n={args.n} dim={args.dim} index={args.index or 'default'} "
          f"search_params={store.search_params} data={'uniform' if args.uniform else 'mixture'}")
    if not args.skip_insert:
        t0 = time.perf_counter()
        store.replace_items(ids, items, index_type=args.index)
        print(f"replace_items (insert+flush+index+load): {time.perf_counter() - t0:.1f} s, "
              f"count={store.count()}")

    queries = catalogue(512, args.dim, args.uniform, np.random.default_rng(11))
    for nq in (4, 512):
        q = queries[:nq]
        store.search(q, args.top_k)  # warm-up
        times = []
        for _ in range(args.repeats if nq == 4 else max(5, args.repeats // 5)):
            t0 = time.perf_counter()
            store.search(q, args.top_k)
            times.append((time.perf_counter() - t0) * 1000)
        times.sort()
        print(f"search nq={nq} top_k={args.top_k}: median {statistics.median(times):.1f} ms, "
              f"p90 {times[int(0.9 * (len(times) - 1))]:.1f} ms")
    got, _ = store.search(queries, args.top_k)
    want = exact_top_k(items, queries, args.top_k)
    recall = np.mean([len(set(g) & set(w)) / args.top_k for g, w in zip(got, want)])
    print(f"recall@{args.top_k} vs numpy exact over 512 queries: {recall:.4f}")
    store.close()


if __name__ == "__main__":
    main()
