"""Measure ItemStore on the trained full catalogue: build time, search latency, served recall.

    python milvus/bench_store.py --uri /tmp/bench.db                          # Lite, defaults
    python milvus/bench_store.py --uri http://127.0.0.1:19530 --index HNSW --build M=16,efConstruction=128 --search ef=64
    python milvus/bench_store.py --uri /tmp/bench.db --index FLAT --users 2048
    python milvus/bench_store.py --uri /tmp/bench.db --client-overhead    # fast vs public search path

Items are the item embeddings of a trained MIND model (default: bench/work/config_full.yaml,
epoch 0 - bench/README.md builds it); queries are the interest vectors of held-out test users.
Recall is that of the *served* list, as /rec/recall builds it: per-interest searches of
top_k + history length hits, merged by mind.retrieval.merge_hits (history left out), compared
with the same pipeline on an exact numpy search of the same vectors. --synthetic uses the old
clustered random vectors instead (no model needed; recall then per query vector).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
for p in (REPO / "recommend" / "model", REPO / "recommend"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from itemstore import ItemStore  # noqa: E402
from mind.retrieval import merge_hits  # noqa: E402

TOP_K = 50
BATCH_USERS = 128


def load_trained(config: str, users: int):
    from mind.config import load_config
    from mind.reader import read_eval_dir
    from mind.user_tower import UserTower

    cfg = load_config(config)
    tower = UserTower(cfg, 0)
    ids, vectors = tower.item_embeddings()
    data = read_eval_dir(cfg.runner.test_data_dir, cfg.hyper_parameters.item_count)
    hist = data.histories[:users]
    return ids, vectors, tower.interests(hist), [tower.known_items(h) for h in hist]


def exact(ids: np.ndarray, items: np.ndarray, q: np.ndarray, k: int):
    s = q @ items.T
    part = np.argpartition(-s, k, axis=1)[:, :k]
    ps = np.take_along_axis(s, part, axis=1)
    order = np.argsort(-ps, axis=1)
    return ids[np.take_along_axis(part, order, 1)], np.take_along_axis(ps, order, 1)


def served(search, q: np.ndarray, known: list) -> list[np.ndarray]:
    """/rec/recall's lists for all users, 128 users (512 vectors) per search."""
    out: list[np.ndarray] = []
    for s in range(0, q.shape[0], BATCH_USERS):
        qb, kb = q[s:s + BATCH_USERS], known[s:s + BATCH_USERS]
        u, k, d = qb.shape
        per = TOP_K + max(len(np.unique(x)) for x in kb)
        got, sc = search(qb.reshape(u * k, d).astype(np.float32), per)
        out += merge_hits(got.reshape(u, -1), sc.reshape(u, -1), TOP_K, kb, lists=k)
    return out


def recall(got: list, want: list) -> float:
    return float(np.mean([len(set(g.tolist()) & set(w.tolist())) / max(1, len(w))
                          for g, w in zip(got, want)]))


def median_ms(fn, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def kv(text: str | None) -> dict[str, int]:
    return {k: int(v) for k, v in (p.split("=") for p in text.split(","))} if text else {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--uri", required=True)
    ap.add_argument("--collection", default="bench_items")
    ap.add_argument("--config", default=str(REPO / "bench" / "work" / "config_full.yaml"))
    ap.add_argument("--users", type=int, default=1024, help="held-out users for recall")
    ap.add_argument("--index", default=None, help="index type (default: the backend's)")
    ap.add_argument("--build", default=None, help="build params, e.g. nlist=128 or M=16,efConstruction=128")
    ap.add_argument("--search", default=None, help="search params, e.g. nprobe=8 or ef=64")
    ap.add_argument("--repeats", type=int, default=30, help="timed searches of 4 vectors")
    ap.add_argument("--skip-insert", action="store_true", help="reuse the loaded collection")
    ap.add_argument("--client-overhead", action="store_true",
                    help="also time the fast (numpy) and public pymilvus result paths, alternating")
    args = ap.parse_args()

    ids, items, q, known = load_trained(args.config, args.users)
    index = args.index.upper() if args.index else None
    build = {index: kv(args.build)} if index and args.build else None
    store = ItemStore(args.uri, args.collection, dim=items.shape[1], timeout=600,
                      search_params=kv(args.search), build_params=build)
    norms = np.linalg.norm(items, axis=1)
    print(f"backend={store.backend} items={len(ids)} users={q.shape[0]} index={index or 'default'} "
          f"build={args.build} search_params={store.search_params} load={os.getloadavg()} "
          f"item norms min/median/max {norms.min():.3f}/{np.median(norms):.3f}/{norms.max():.3f}")
    if not args.skip_insert:
        t0 = time.perf_counter()
        store.replace_items(ids, items, index_type=index)
        print(f"replace_items (insert+flush+index+load): {time.perf_counter() - t0:.1f} s")
    want = served(lambda x, k: exact(ids, items, x, k), q, known)
    got = served(store.search, q, known)
    q4 = q[0].astype(np.float32)
    q512 = q[:BATCH_USERS].reshape(-1, q.shape[-1]).astype(np.float32)
    print(f"served recall@{TOP_K} vs exact ({q.shape[0]} users): {recall(got, want):.4f}")
    print(f"search nq=4: median {median_ms(lambda: store.search(q4, TOP_K), args.repeats):.2f} ms; "
          f"nq=512: median {median_ms(lambda: store.search(q512, TOP_K), 5):.1f} ms")
    if args.client_overhead:
        res: dict[tuple[bool, int], list[float]] = {}
        for _ in range(5):  # alternate, so both paths see the same load
            for fast in (False, True):
                store.fast_search = fast
                for nq, x, reps in ((4, q4, args.repeats), (512, q512, 3)):
                    res.setdefault((fast, nq), []).append(
                        median_ms(lambda: store.search(x, TOP_K), reps))
        for nq in (4, 512):
            pub = statistics.median(res[(False, nq)])
            fast = statistics.median(res[(True, nq)])
            print(f"client path nq={nq}: public {pub:.2f} ms, fast {fast:.2f} ms, "
                  f"ratio fast/public {fast / pub:.2f}")
    print(f"load average at end {os.getloadavg()}")
    store.close()


if __name__ == "__main__":
    main()
