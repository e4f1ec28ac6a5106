"""Shared plumbing of the speed benchmarks: sizes, cached data and model, Milvus server, stats.

Everything generated (data, checkpoints, Milvus Lite files, server state) lives under
bench/work/ (git-ignored) and is reused by later runs: the catalogue is generated once per
profile by `sh data.sh synthetic`, the model trained once by `trainer.py`, both the
project's own commands.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
WORK = Path(os.environ.get("BENCH_WORK", BENCH / "work"))
RESULTS = BENCH / "results"
MODEL_DIR = REPO / "recommend" / "model"
DATA_DIR = REPO / "recommend" / "data"
SERVICE_DIR = REPO / "recommend"
BASE_CONFIG = MODEL_DIR / "mind" / "config_synthetic.yaml"

# infer.py, trainer.py and tests/milvus_server.py are scripts, not package modules.
for _p in (MODEL_DIR, DATA_DIR, REPO / "tests"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))


@dataclass(frozen=True)
class Profile:
    """How big and how long: `full` is the issue's setting, `quick` < 3 min, `tiny` for tests."""

    name: str
    data_args: tuple[str, ...]          # sh data.sh synthetic ...
    model_samples: int                  # samples the cached eval/serve model is trained on
    train_steps: int                    # timed steps per training repeat
    train_repeats: int
    eval_users: int                     # held-out users evaluated per backend
    eval_chunk: int                     # users per timed chunk (median over chunks)
    store_reps_small: int               # repeats of the 4-vector search
    store_reps_large: int               # repeats of the 512-vector search
    recall_queries: int                 # interest vectors for the ANN recall check
    lat_reps: tuple[tuple[int, int], ...]  # (users per request, requests) for latency
    load_seconds: float                 # per concurrency level
    load_max_requests: int              # per concurrency level
    concurrency: tuple[int, ...] = (1, 4, 16)


PROFILES = {
    "full": Profile("full", ("--full",), model_samples=128 * 300, train_steps=150,
                    train_repeats=3, eval_users=20_000, eval_chunk=2_560, store_reps_small=100,
                    store_reps_large=10, recall_queries=512,
                    lat_reps=((1, 200), (16, 60), (128, 20)), load_seconds=10.0,
                    load_max_requests=20_000),
    "quick": Profile("quick", ("--items", "20000", "--categories", "100", "--users", "20000",
                               "--min-len", "5", "--max-len", "25"),
                     model_samples=128 * 60, train_steps=30, train_repeats=2, eval_users=1_000,
                     eval_chunk=256, store_reps_small=30, store_reps_large=5, recall_queries=256,
                     lat_reps=((1, 50), (16, 20), (128, 8)), load_seconds=2.5,
                     load_max_requests=2_000),
    "tiny": Profile("tiny", ("--items", "1500", "--categories", "20", "--users", "1500",
                             "--min-len", "8", "--max-len", "20"),
                    model_samples=64 * 4, train_steps=3, train_repeats=2, eval_users=128,
                    eval_chunk=64, store_reps_small=3, store_reps_large=2, recall_queries=32,
                    lat_reps=((1, 5), (16, 3), (128, 2)), load_seconds=0.5,
                    load_max_requests=50, concurrency=(1, 4)),
}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------- statistics
def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by linear interpolation; NaN for no values."""
    if not values:
        return float("nan")
    s = sorted(values)
    pos = q * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def summary_ms(seconds: list[float]) -> dict[str, float]:
    """median / p95 / p99 / mean of durations, in milliseconds."""
    ms = [s * 1000 for s in seconds]
    return {"n": len(ms), "median_ms": pct(ms, 0.5), "p95_ms": pct(ms, 0.95),
            "p99_ms": pct(ms, 0.99), "mean_ms": statistics.fmean(ms) if ms else float("nan")}


def timed(fn, *args, **kw) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t0


# ---------------------------------------------------------------- data and model
def data_dir(profile: Profile) -> Path:
    return WORK / f"data_{profile.name}"


def ensure_data(profile: Profile) -> Path:
    """The profile's synthetic catalogue, generated once with `sh data.sh synthetic`."""
    out = data_dir(profile)
    stamp = out / "bench_args.json"
    if (out / "meta.json").exists() and stamp.exists() and \
            json.loads(stamp.read_text()) == list(profile.data_args):
        ensure_item_map(out)  # data cached before the bench wrote maps
        return out
    log(f"generating the {profile.name} catalogue into {out} (sh data.sh synthetic "
        f"{' '.join(profile.data_args)})")
    env = {**os.environ, "PYTHON": sys.executable}
    subprocess.run(["sh", "data.sh", "synthetic", *profile.data_args, "--out", str(out)],
                   cwd=DATA_DIR, env=env, check=True, stdout=subprocess.DEVNULL)
    ensure_item_map(out)
    stamp.write_text(json.dumps(list(profile.data_args)))
    return out


def ensure_item_map(data: Path) -> Path:
    """The data's item_map.tsv; when `data.sh synthetic` wrote none, one from truth.npz: key
    `SKU-0000017` for id 17 and a `category` column (the planted category), so the serve bench
    can measure the key path. A map the data already has is used unchanged."""
    from recdata.itemmap import ITEM_MAP_FILE, write_item_map

    path = data / ITEM_MAP_FILE
    if not path.exists():
        category = np.load(data / "truth.npz")["item_category"][1:]
        write_item_map(path, [f"SKU-{i:07d}" for i in range(1, len(category) + 1)],
                       {"category": [f"C{c:03d}" for c in category.tolist()]})
    return path


def item_count(profile: Profile) -> int:
    return int(json.loads((data_dir(profile) / "meta.json").read_text())["item_count"])


def config_path(profile: Profile) -> Path:
    """config_synthetic.yaml with the runner pointed at the bench's data and model folders.

    A file (not only -o overrides) because the service loads MODEL_CONFIG_PATH by itself.
    """
    data = ensure_data(profile)
    model = WORK / f"model_{profile.name}"
    raw = yaml.safe_load(BASE_CONFIG.read_text())
    raw["runner"].update({
        "train_data_dir": str(data / "train"), "test_data_dir": str(data / "test"),
        "valid_data_dir": str(data / "valid"), "model_save_path": str(model),
        "infer_load_path": str(model), "samples_per_epoch": profile.model_samples,
        "epochs": 1, "infer_start_epoch": 0, "infer_end_epoch": 0, "print_interval": 10_000,
        "early_stopping_patience": 0,
    })
    if profile.name == "tiny":
        raw["runner"]["train_batch_size"] = 64
        raw["hyper_parameters"]["neg_samples"] = 64
    path = WORK / f"config_{profile.name}.yaml"
    text = yaml.safe_dump(raw, sort_keys=False)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path


def ensure_model(profile: Profile) -> Path:
    """Config path of a model trained once (epoch 0) with `trainer.py` on the profile's data."""
    cfg = config_path(profile)
    from mind.checkpoint import ITEM_MAP_FILE, META_FILE, list_epochs
    from mind.config import load_config
    from recdata.itemmap import file_sha256

    root = Path(load_config(cfg).runner.model_save_path)
    data_map = file_sha256(ensure_item_map(data_dir(profile)))
    # A model trained before the data had its map (or on another map) serves no keys: retrain.
    trained = 0 in list_epochs(root) and json.loads((root / "0" / META_FILE).read_text()).get(
        "files", {}).get(ITEM_MAP_FILE) == data_map
    if not trained:
        log(f"training the {profile.name} bench model ({profile.model_samples} samples)")
        subprocess.run([sys.executable, "-u", "trainer.py", "-m", str(cfg), "--overwrite"],
                       cwd=MODEL_DIR, check=True, stdout=subprocess.DEVNULL)
    return cfg


def load_tower(profile: Profile):
    from mind.config import load_config
    from mind.user_tower import UserTower

    return UserTower(load_config(ensure_model(profile)), 0)


def eval_users(profile: Profile, n: int | None = None):
    """The first n held-out test users (an EvalSet)."""
    from mind.config import load_config
    from mind.reader import EvalSet, read_eval_dir

    cfg = load_config(ensure_model(profile))
    data = read_eval_dir(cfg.runner.test_data_dir, cfg.hyper_parameters.item_count)
    n = min(n or profile.eval_users, len(data.user_ids))
    return EvalSet(data.user_ids[:n], data.histories[:n], data.eval_items[:n])


# ---------------------------------------------------------------- Milvus server
class MilvusServer:
    """A Milvus standalone server under bench/work/ via tests/milvus_server.py (the scripts)."""

    def __init__(self, name: str = "milvus_server"):
        from milvus_server import MilvusServerProcess

        self.proc = MilvusServerProcess(WORK / name)
        self.uri = self.proc.uri
        self.start_seconds: float | None = None

    def __enter__(self) -> "MilvusServer":
        t0 = time.perf_counter()
        try:
            self.proc.start()
        except BaseException:
            self.proc.stop()
            raise
        self.start_seconds = time.perf_counter() - t0
        log(f"Milvus server up at {self.uri} after {self.start_seconds:.1f}s")
        return self

    def __exit__(self, *exc) -> None:
        self.proc.stop()


def backend_uri(backend: str, tag: str, server_uri: str | None) -> str:
    """Where a backend lives: a fresh Milvus Lite file under bench/work/, or the server."""
    if backend == "lite":
        path = WORK / f"lite_{tag}.db"
        for p in WORK.glob(f"lite_{tag}.db*"):  # one file per run: no leftovers skew it
            if p.is_file():
                p.unlink()
        return str(path)
    if backend == "server":
        if not server_uri:
            raise ValueError("backend 'server' needs a server URI")
        return server_uri
    raise ValueError(backend)


# ---------------------------------------------------------------- memory
def proc_status_kb(pid: int, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def process_tree(pid: int) -> list[int]:
    """pid and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """User + system CPU seconds each process has used so far (from /proc; gone ones left out)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[pid] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return out


def milvus_pids() -> list[int]:
    """Every Milvus process on the machine (Milvus Lite's child and a server alike)."""
    out = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and (d / "comm").read_text().strip() == "milvus":
                out.append(int(d.name))
        except OSError:
            continue
    return out


class CpuMeter:
    """Cores each group of processes used while the block ran: where the machine's time went."""

    def __init__(self, groups: dict[str, list[int]]):
        self.groups, self.cores = groups, {}

    def __enter__(self) -> "CpuMeter":
        self._t0 = time.perf_counter()
        self._cpu0 = {name: cpu_seconds(pids) for name, pids in self.groups.items()}
        return self

    def __exit__(self, *exc: Any) -> None:
        elapsed = time.perf_counter() - self._t0
        # Only processes running at both ends: one that exited meanwhile (another engineer's
        # Milvus) would count its whole CPU time as negative.
        self.seconds = {name: sum(now - self._cpu0[name][pid] for pid, now in
                                  cpu_seconds(pids).items() if pid in self._cpu0[name])
                        for name, pids in self.groups.items()}
        self.cores = {name: round(s / elapsed, 3) for name, s in self.seconds.items()}


def tree_rss_mb(pid: int) -> dict[str, float]:
    """RSS of the process, of its whole tree (e.g. the Milvus Lite child), peak of the process."""
    own = proc_status_kb(pid, "VmRSS") or 0
    peak = proc_status_kb(pid, "VmHWM") or 0
    tree = sum(proc_status_kb(p, "VmRSS") or 0 for p in process_tree(pid))
    return {"rss_mb": own / 1024, "peak_rss_mb": peak / 1024, "tree_rss_mb": tree / 1024}


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=float) + "\n")


def profile_dict(profile: Profile) -> dict[str, Any]:
    return asdict(profile)


def cli(run, doc: str, backends: str | None = None) -> None:
    """The command line of one bench module: --profile, --out (and --backends, --milvus-uri)."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--profile", default="quick", choices=sorted(PROFILES))
    ap.add_argument("--out", default=None, help="write the results here as JSON (else print)")
    if backends is not None:
        ap.add_argument("--backends", default=backends)
        ap.add_argument("--milvus-uri", default=None, help="a running server for 'server'")
    args = ap.parse_args()
    kw = {}
    if backends is not None:
        kw = {"backends": args.backends.split(","), "server_uri": args.milvus_uri}
    out = run(PROFILES[args.profile], **kw)
    if args.out:
        write_json(Path(args.out), out)
    else:
        print(json.dumps(out, indent=2, default=float))
