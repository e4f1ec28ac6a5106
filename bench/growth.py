"""How cost grows with the catalogue: 367,983, 1,000,000 and 3,000,000 items.

    python bench/growth.py                                  # the three sizes, Lite + server
    python bench/growth.py --items 367983 --backends lite   # one size, one backend
    python bench/growth.py --items 20000 --backends lite --out /tmp/g.json   # smoke

Per size, on the synthetic generator (`sh data.sh synthetic`, users in proportion to items,
AmazonBook's ratio of 603,668 users to 367,982 items), each part in a process of its own so
that its peak RSS is its own:
  train   median step ms of trainer.py's loop (batch 128, 1,280 negatives, lazy Adam) and the
          process's peak RSS; then the size and write time of one epoch checkpoint
  insert  /rec/insert_data's work per backend (UserTower.load, then ItemStore.replace_items):
          seconds, peak RSS of that process and of the Milvus Lite child
  search  one user's 4 interest vectors, top 50: median ms; recall@50 of each vector's hits
          against exact search (the model has had a few hundred steps, not a full training)
Writes bench/results/growth.json and growth.md (--out elsewhere).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

SIZES = (367_983, 1_000_000, 3_000_000)
USERS_PER_ITEM = 603_668 / 367_982
TRAIN_STEPS, WARMUP = 30, 5


def workdir(items: int) -> Path:
    return common.WORK / f"growth_{items}"


def ensure_data(items: int) -> Path:
    out = workdir(items) / "data"
    if (out / "meta.json").exists():
        return out
    users = int(round(items * USERS_PER_ITEM))
    common.log(f"generating {items:,} items, {users:,} users")
    subprocess.run(["sh", "data.sh", "synthetic", "--full", "--items", str(items - 1),
                    "--users", str(users), "--out", str(out)], cwd=common.DATA_DIR, check=True,
                   env={**os.environ, "PYTHON": sys.executable}, stdout=subprocess.DEVNULL)
    return out


def config_for(items: int) -> Path:
    data = ensure_data(items)
    raw = yaml.safe_load(common.BASE_CONFIG.read_text())
    model = workdir(items) / "model"
    raw["runner"].update({
        "train_data_dir": str(data / "train"), "test_data_dir": str(data / "test"),
        "valid_data_dir": str(data / "valid"), "model_save_path": str(model),
        "infer_load_path": str(model), "epochs": 1, "print_interval": 10_000, "early_stopping_patience": 0,
    })
    raw["hyper_parameters"]["item_count"] = "auto"
    path = workdir(items) / "config.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------- parts (own process)
def part_train(config_path: Path) -> dict[str, Any]:
    import paddle
    import trainer
    from evaluation.baselines import click_counts
    from mind.checkpoint import save_checkpoint
    from mind.config import load_config
    from mind.network import MIND
    from mind.reader import TrainSampler, read_train_dir

    config = load_config(config_path)
    r, hp = config.runner, config.hyper_parameters
    trainer.select_device(False, r.cpu_threads)
    sequences = read_train_dir(r.train_data_dir, item_count=hp.item_count)
    counts = click_counts(sequences, hp.item_count)
    sampler = TrainSampler(sequences, r.train_batch_size, maxlen=hp.maxlen, seed=r.seed,
                           samples_per_epoch=(TRAIN_STEPS + WARMUP) * r.train_batch_size,
                           min_len=r.min_len)
    users = len(sequences)
    del sequences
    trainer.init_seed(r.seed)
    model = MIND(hp)
    optimizer = trainer.build_optimizer(hp, model)
    model.train()
    step_s = []
    for i, (hist, target) in enumerate(sampler.epoch(0)):
        t0 = time.perf_counter()
        loss = model(paddle.to_tensor(hist), paddle.to_tensor(target))
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()
        if i >= WARMUP:
            step_s.append(time.perf_counter() - t0)
    train_rss = peak_rss_mb()
    root = r.model_save_path
    shutil.rmtree(root, ignore_errors=True)
    t0 = time.perf_counter()
    final = save_checkpoint(root, 0, model, optimizer, config, {"seed": r.seed, "record": {}},
                            item_counts=counts, state={"rng": trainer.rng_state()})
    write_s = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in final.iterdir())
    return {"items": hp.item_count, "users": users, "train_step_ms": 1000 * statistics.median(step_s),
            "train_peak_rss_mb": train_rss, "checkpoint_mb": size / 2**20,
            "checkpoint_write_s": write_s}


def part_insert(config_path: Path, backend: str, uri: str) -> dict[str, Any]:
    from itemstore import ItemStore
    from evaluation.exact_search import ExactSearch
    from mind.reader import read_eval_dir
    from mind.user_tower import UserTower

    t0 = time.perf_counter()
    tower = UserTower.load(config_path, 0)
    ids, vectors = tower.item_embeddings()
    store = ItemStore(uri, "growth_items", dim=tower.dim, timeout=60, identity=tower.identity())
    count = store.replace_items(ids, vectors)
    insert_s = time.perf_counter() - t0
    lite_peak = max((common.proc_status_kb(p, "VmHWM") or 0) / 1024
                    for p in common.process_tree(os.getpid())[1:]) if backend == "lite" else None
    own_peak = peak_rss_mb()
    data = read_eval_dir(tower.config.runner.test_data_dir, tower.item_count)
    queries = tower.interests(data.histories[:200])  # [200, K, dim]
    search_ms = []
    for q in queries[:100]:
        t1 = time.perf_counter()
        store.search(q, 50)
        search_ms.append(1000 * (time.perf_counter() - t1))
    flat = queries.reshape(-1, tower.dim)
    got, _ = store.search(flat, 50)
    want, _ = ExactSearch(ids, vectors).search(flat, 50)
    recall = float(np.mean([len(set(g) & set(w)) / 50 for g, w in zip(got, want)]))
    store.drop()
    return {"backend": backend, "count": count, "insert_s": insert_s,
            "service_peak_rss_mb": own_peak, "lite_server_peak_rss_mb": lite_peak,
            "search_4x50_median_ms": statistics.median(search_ms), "recall@50_vs_exact": recall}


# ---------------------------------------------------------------- driver
def run_part(*args: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, __file__, "--part", *args], capture_output=True,
                          text=True, cwd=common.MODEL_DIR)
    if done.returncode != 0:
        raise RuntimeError(f"part {args} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| items | train users | train step ms | train peak RSS MB | checkpoint MB | checkpoint "
             "write s | backend | insert_data s | service peak RSS MB | Lite server peak RSS MB "
             "| search 4x50 ms | recall@50 vs exact |",
             "|" + "---|" * 12]
    for r in rows:
        for ins in r["insert"]:
            lite = ins["lite_server_peak_rss_mb"]
            lines.append(
                f"| {r['items']:,} | {r['users']:,} | {r['train_step_ms']:.1f} | "
                f"{r['train_peak_rss_mb']:,.0f} | {r['checkpoint_mb']:,.0f} | "
                f"{r['checkpoint_write_s']:.1f} | {ins['backend']} | {ins['insert_s']:.0f} | "
                f"{ins['service_peak_rss_mb']:,.0f} | {'-' if lite is None else f'{lite:,.0f}'} | "
                f"{ins['search_4x50_median_ms']:.1f} | {ins['recall@50_vs_exact']:.3f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, nargs="+", default=list(SIZES),
                    help="catalogue sizes (rows incl. the padding id 0)")
    ap.add_argument("--backends", default="lite,server", help="comma-separated: lite, server")
    ap.add_argument("--milvus-uri", default=None, help="a running server for 'server'")
    ap.add_argument("--out", type=Path, default=common.RESULTS / "growth.json")
    ap.add_argument("--part", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.part:
        kind, config = args.part[0], Path(args.part[1])
        out = part_train(config) if kind == "train" else part_insert(config, *args.part[2:])
        print(json.dumps(out))
        return
    backends = [b for b in args.backends.split(",") if b]
    server = None
    if "server" in backends and not args.milvus_uri:
        server = common.MilvusServer("growth_server").__enter__()
    try:
        rows = []
        for items in args.items:
            config = config_for(items)
            common.log(f"{items:,} items: training steps and checkpoint")
            row = run_part("train", str(config))
            row["insert"] = []
            row["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
            row["load_average_at_start"] = os.getloadavg()[0]
            for backend in backends:
                uri = (str(workdir(items) / "growth.db") if backend == "lite"
                       else args.milvus_uri or server.uri)
                common.log(f"{items:,} items: insert_data on {backend}")
                row["insert"].append(run_part("insert", str(config), backend, uri))
            rows.append(row)
            common.log(json.dumps(row))
    finally:
        if server is not None:
            server.__exit__(None, None, None)
    # Sizes measured in an earlier run (and not now) are kept, each with its own date.
    earlier = json.loads(args.out.read_text())["rows"] if args.out.exists() else []
    rows = sorted([r for r in earlier if r["items"] not in {x["items"] for x in rows}] + rows,
                  key=lambda r: r["items"])
    result = {"machine": {"cores": os.cpu_count()}, "rows": rows}
    common.write_json(args.out, result)
    args.out.with_suffix(".md").write_text(markdown(rows))
    print(markdown(rows))


if __name__ == "__main__":
    main()
