"""Data-parallel training: samples/s of 1 process against N ranks of Paddle's launcher.

The tutorial's synthetic data (`sh data.sh synthetic`, 3,001 items), its config, one epoch:
`scripts/train.sh CONFIG` (1 process) and `scripts/train.sh CONFIG --nproc 2` (two ranks on this
machine, gloo), in turn, `repeats` times each; each run's samples/s is the trainer's own epoch
record (train_log.jsonl). On one machine the ranks share its cores: this measures the cost of
the all-reduce, not a speed-up.

    python bench/distributed_bench.py [--profile full|quick]
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import common
from common import Profile, log

TRAIN_SH = common.REPO / "scripts" / "train.sh"
CONFIG = common.REPO / "recommend" / "model" / "mind" / "config_synthetic.yaml"
NPROC = 2


def ensure_tutorial_data() -> Path:
    """`sh data.sh synthetic` (the tutorial's defaults) into the bench's work folder, once."""
    out = common.WORK / "data_tutorial_synthetic"
    if not (out / "meta.json").exists():
        subprocess.run(["sh", "data.sh", "synthetic", "--out", str(out)], cwd=common.DATA_DIR,
                       env={**os.environ, "PYTHON": sys.executable}, check=True,
                       stdout=subprocess.DEVNULL)
    return out


def train_once(data: Path, nproc: int, run_dir: Path, samples: int | None) -> dict[str, Any]:
    """One epoch from scratch; the trainer's record of it."""
    overrides = {"runner.epochs": 1, "runner.model_save_path": run_dir / "model",
                 "runner.infer_load_path": run_dir / "model",
                 "runner.train_data_dir": data / "train", "runner.valid_data_dir": data / "valid",
                 "runner.test_data_dir": data / "test"}
    if samples is not None:
        overrides["runner.samples_per_epoch"] = samples
    args = [a for k, v in overrides.items() for a in ("-o", f"{k}={v}")]
    if nproc > 1:
        args = ["--nproc", str(nproc), "--log_dir", str(run_dir / "launch"), *args]
    done = subprocess.run(["bash", str(TRAIN_SH), str(CONFIG), *args, "--overwrite"],
                          capture_output=True, text=True, timeout=1800,
                          env={**os.environ, "PYTHON": sys.executable})
    if done.returncode != 0:
        raise RuntimeError(f"train.sh --nproc {nproc} failed: {done.stdout[-2000:]}"
                           f"{done.stderr[-2000:]}")
    records = [json.loads(line) for line in (run_dir / "model" / "train_log.jsonl")
               .read_text().splitlines() if line.strip()]
    return {k: records[-1][k] for k in ("batches", "seconds", "samples_per_s")}


def run(profile: Profile, **_: Any) -> dict[str, Any]:
    data = ensure_tutorial_data()
    # full: the tutorial's whole epoch (895 steps of 128); quick: 200 steps.
    samples = None if profile.name == "full" else 200 * 128
    repeats = 2 if profile.name == "full" else 1
    runs: dict[str, list[dict[str, Any]]] = {"1": [], str(NPROC): []}
    for r in range(repeats):
        for nproc in (1, NPROC):
            got = train_once(data, nproc, common.WORK / f"dist_{nproc}", samples)
            log(f"distributed: {nproc} process(es), repeat {r}: {got['samples_per_s']:,.0f} "
                "samples/s")
            runs[str(nproc)].append(got)
    out: dict[str, Any] = {"config": str(CONFIG.relative_to(common.REPO)), "runs": runs,
                           "batches": runs["1"][0]["batches"]}
    for n, rs in runs.items():
        out[f"nproc_{n}"] = {"samples_per_s": statistics.median(x["samples_per_s"] for x in rs)}
    out["ratio"] = out[f"nproc_{NPROC}"]["samples_per_s"] / out["nproc_1"]["samples_per_s"]
    return out


def main() -> None:
    common.cli(run, __doc__)


if __name__ == "__main__":
    main()
