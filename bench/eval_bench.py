"""Evaluation speed: users/s of infer.py's path, split tower / search / merge / metrics, per backend.

infer.py's own functions do the work (infer.make_search loads the items into the backend,
evaluation.evaluate.evaluate_tower recalls and scores). The held-out users are cut into chunks; each
chunk is evaluated end to end and then its interest vectors (computed beforehand, untimed) are
searched raw, batch by batch as infer does, so the two are measured side by side under the same
load. Reported: medians over chunks and the median per-chunk ratio end-to-end / raw search.

    python bench/eval_bench.py [--profile quick] [--backends exact,lite,server] [--milvus-uri URI]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import numpy as np

import common
from common import Profile, log

TOP_N = 50
BACKENDS = ("exact", "lite", "server")


def _chunks(data, size: int):
    from mind.reader import EvalSet

    for lo in range(0, len(data.user_ids), size):
        hi = lo + size
        yield EvalSet(data.user_ids[lo:hi], data.histories[lo:hi], data.eval_items[lo:hi])


def bench_backend(backend: str, tower, config, data, profile: Profile,
                  server_uri: str | None) -> dict[str, Any]:
    import infer
    from evaluation.evaluate import evaluate_tower

    bs = config.runner.infer_batch_size
    uri = "" if backend == "exact" else common.backend_uri(backend, "eval", server_uri)
    args = argparse.Namespace(search="exact" if backend == "exact" else "milvus", milvus_uri=uri)
    search, load_seconds, store = infer.make_search(args, config, tower)
    try:
        # Warm-up: first searches pay for loading segments / caches.
        warm = next(_chunks(data, bs))
        evaluate_tower(tower, search, warm, [TOP_N], bs)
        chunks = []
        for chunk in _chunks(data, profile.eval_chunk):
            res = evaluate_tower(tower, search, chunk, [TOP_N], bs, name=backend)
            batches = [tower.interests(chunk.histories[lo:lo + bs])
                       for lo in range(0, len(chunk.user_ids), bs)]
            t0 = time.perf_counter()
            for v in batches:
                search(v.reshape(-1, v.shape[-1]).astype(np.float32), TOP_N)
            raw = time.perf_counter() - t0
            n = len(chunk.user_ids)
            chunks.append({"users": n, "e2e_users_per_s": n / res.seconds["total"],
                           "raw_search_users_per_s": n / raw,
                           "seconds": dict(res.seconds), "raw_search_seconds": raw,
                           "recall@50": res.metrics[TOP_N]["recall"]})
    finally:
        if store is not None:
            store.close()
    med = statistics.median
    totals = {k: sum(c["seconds"][k] for c in chunks) for k in ("tower", "search", "merge", "metrics", "total")}
    users = sum(c["users"] for c in chunks)
    out = {
        "users": users, "chunks": len(chunks), "batch_users": bs, "top_n": TOP_N,
        "item_load_seconds": load_seconds,
        "e2e_users_per_s": med(c["e2e_users_per_s"] for c in chunks),
        "raw_search_users_per_s": med(c["raw_search_users_per_s"] for c in chunks),
        "e2e_over_raw": med(c["e2e_users_per_s"] / c["raw_search_users_per_s"] for c in chunks),
        "ms_per_1000_users": {k: 1000 * v / users * 1000 for k, v in totals.items()},
        "share": {k: totals[k] / totals["total"] for k in ("tower", "search", "merge", "metrics")},
        "recall@50": float(np.average([c["recall@50"] for c in chunks],
                                      weights=[c["users"] for c in chunks])),
        "chunk_e2e_users_per_s": [c["e2e_users_per_s"] for c in chunks],
        "chunk_raw_users_per_s": [c["raw_search_users_per_s"] for c in chunks],
    }
    log(f"eval {backend}: {out['e2e_users_per_s']:.0f} users/s end-to-end, raw search "
        f"{out['raw_search_users_per_s']:.0f} users/s (ratio {out['e2e_over_raw']:.2f}); share "
        + ", ".join(f"{k} {v:.0%}" for k, v in out["share"].items()))
    return out


def run(profile: Profile, backends=BACKENDS, server_uri: str | None = None, **_: Any) -> dict[str, Any]:
    from mind.config import load_config

    config = load_config(common.ensure_model(profile))
    tower = common.load_tower(profile)
    data = common.eval_users(profile)
    log(f"eval: {len(data.user_ids)} held-out users, item_count {tower.item_count}, "
        f"backends {','.join(backends)}")
    return {b: bench_backend(b, tower, config, data, profile, server_uri) for b in backends}


def main() -> None:
    common.cli(run, __doc__, backends="exact,lite")


if __name__ == "__main__":
    main()
