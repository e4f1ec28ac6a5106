"""User tower: one forward pass of 1, 16 and 128 users, Paddle Inference against dygraph.

The profile's bench model (epoch 0, trained once by common.ensure_model) is exported with
mind.export into bench/work/tower_<profile>/ and run by mind.inference_tower beside the
checkpoint's dygraph UserTower, in this one process. A pass is what the service calls:
`interests(histories)` on raw held-out histories (known ids, padding, the forward, numpy out).
Runtimes take turns within each repeat, so drift on a shared machine hits all of them alike;
figures are medians. Also reported: the max abs difference of each runtime's vectors from
dygraph's over every user, the export and predictor load times, and which runtime measured
fastest (the service's TOWER_RUNTIME default follows it).

    python bench/tower_bench.py [--profile quick|full|tiny] [--out FILE]
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np

import common
from common import Profile, log, summary_ms

PASS_USERS = (1, 16, 128)
# Paddle Inference's CPU options tried: the runtime's default (IR passes, no oneDNN, 1 thread),
# without the IR passes, with oneDNN, with 2 math threads.
RUNTIMES: dict[str, dict[str, Any]] = {
    "inference": {},
    "inference_no_ir_optim": {"ir_optim": False},
    "inference_onednn": {"onednn": True},
    "inference_2_threads": {"threads": 2},
}


def repeats(profile: Profile) -> dict[int, int]:
    """Passes per size: 5x the serve bench's requests of that size (a pass is ~1 ms, not ~10)."""
    reps = dict(profile.lat_reps)
    return {n: 5 * reps.get(n, reps[max(reps)]) for n in PASS_USERS}


def time_passes(towers: dict[str, Any], histories: list[list[int]], reps: dict[int, int],
                label: str = "") -> dict[str, Any]:
    """Per pass size: each runtime's summary_ms, and dygraph's median over each runtime's."""
    passes: dict[str, Any] = {}
    for users, n in reps.items():
        times: dict[str, list[float]] = {name: [] for name in towers}
        for r in range(n + 1):
            lo = (r * users) % (len(histories) - users + 1)
            batch = histories[lo:lo + users]
            for name, t in towers.items():
                t0 = time.perf_counter()
                t.interests(batch)
                if r:  # the first pass of each size is the warm-up
                    times[name].append(time.perf_counter() - t0)
        stats = {name: summary_ms(ts) for name, ts in times.items()}
        dy = stats["dygraph"]["median_ms"]
        passes[str(users)] = {
            **stats, "dygraph_over": {k: dy / s["median_ms"] for k, s in stats.items()
                                      if k != "dygraph"}}
        log(f"tower pass of {users}{' ' + label if label else ''}: dygraph {dy:.3f} ms, "
            + ", ".join(f"{k} {s['median_ms']:.3f} ms" for k, s in stats.items() if k != "dygraph"))
    return passes


class BusyThread:
    """A thread running pure Python until the block ends (it takes the GIL whenever it can)."""

    def __enter__(self) -> "BusyThread":
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()
        return self

    def _spin(self) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def run(profile: Profile, **_: Any) -> dict[str, Any]:
    from mind.export import export_tower
    from mind.inference_tower import InferenceTower

    tower = common.load_tower(profile)
    histories = [[int(i) for i in h] for h in common.eval_users(profile, 1024).histories]
    t0 = time.perf_counter()
    export_dir = export_tower(tower, common.WORK / f"tower_{profile.name}")
    export_seconds = time.perf_counter() - t0
    towers: dict[str, Any] = {"dygraph": tower}
    load_seconds = {}
    for name, options in RUNTIMES.items():
        t0 = time.perf_counter()
        towers[name] = InferenceTower(export_dir, **options)
        load_seconds[name] = time.perf_counter() - t0
    want = tower.interests(histories)
    diff = {name: float(np.abs(t.interests(histories) - want).max())
            for name, t in towers.items() if name != "dygraph"}
    log(f"tower: {len(histories)} users, item_count {tower.item_count}; max abs diff to dygraph "
        + ", ".join(f"{k} {v:.2g}" for k, v in diff.items()))

    passes = time_passes(towers, histories, repeats(profile))
    # In the service a pass runs beside the event loop's thread, which wants the GIL too: the
    # same passes beside a thread running Python all along.
    with BusyThread():
        busy = time_passes(towers, histories, repeats(profile), "beside a busy Python thread")
    # Fastest on the sizes a served pass mostly has (1-16 one-user clients): the sum of medians.
    served = {name: sum(passes[str(n)][name]["median_ms"] for n in (1, 16)) for name in towers}
    return {
        "pass_users": list(PASS_USERS), "repeats": repeats(profile),
        "item_count": tower.item_count, "maxlen": tower.maxlen,
        "num_interests": tower.num_interests, "dim": tower.dim,
        "what": "median ms of UserTower.interests / InferenceTower.interests on raw histories",
        "runtimes": {"dygraph": "UserTower (paddle eager)",
                     **{k: f"InferenceTower({v})" for k, v in RUNTIMES.items()}},
        "export_seconds": export_seconds, "predictor_load_seconds": load_seconds,
        "max_abs_diff_vs_dygraph": diff, "passes": passes, "passes_beside_busy_thread": busy,
        "fastest_1_16": min(served, key=served.get),
    }


def main() -> None:
    # --backends / --milvus-uri are accepted and ignored (no Milvus here), so run.py's run_part
    # calls this part as it calls the others.
    common.cli(run, __doc__, backends="")


if __name__ == "__main__":
    main()
