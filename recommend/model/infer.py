"""Evaluate saved MIND epochs on held-out users: Recall@N, NDCG@N, HitRate@N.

    cd recommend/model
    python -u infer.py -m mind/config.yaml -top_n 50                 # Milvus (embedded Milvus Lite)
    python -u infer.py -m mind/config_synthetic.yaml -top_n 50 --baselines
    python -u infer.py -m mind/config_synthetic.yaml --search exact  # in-process exact search
    MILVUS_URI=http://127.0.0.1:19530 python -u infer.py -m mind/config.yaml   # a Milvus server
    python -u infer.py -m mind/config.yaml --export /srv/mind_tower [--epoch 3]  # no evaluation

For each saved epoch in [runner.infer_start_epoch, runner.infer_end_epoch]: load the model,
load every item embedding into Milvus (the same ItemStore the service uses), compute the
interest vectors of all held-out users in batches, search each batch's vectors in one
request, merge each user's K lists (pool, sort by score, drop duplicates and id 0, keep
top_n) and score them. Results go to stdout and, as JSON, to
{infer_load_path}/infer_results_{split}_{search}[_baselines][_exclude_history].json, so runs with
other options keep their own file; the plots beside it carry the same suffix
(recall_curve_*.png with --curve, metrics_by_epoch_*.png). With --json PATH, the plots are
named PATH's stem + _recall_curve.png / _metrics_by_epoch.png.

--export DIR writes the user tower of one saved epoch (--epoch, default the last in that range)
as a static model for Paddle Inference, with its identity (mind/export.py), and evaluates nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from mind import cli
from mind.checkpoint import CheckpointError, checkpoint_root, list_epochs, read_run
from mind.config import Config, ConfigError, load_config
from evaluation.evaluate import EvalResult, evaluate_baselines, evaluate_tower
from evaluation.exact_search import ExactSearch
from mind.reader import read_eval_dir, read_train_dir
from mind.retrieval import DEFAULT_MERGE, MERGES
from mind.user_tower import UserTower

CURVE_CUTOFFS = (10, 20, 50, 100, 150, 200)
EVAL_COLLECTION = "mind_eval_items"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-m", "--config", required=True, help="the config.yaml the model was trained with")
    p.add_argument("-top_n", "--top-n", dest="top_n", type=int, default=50, help="list length N (default 50)")
    p.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. -o runner.infer_end_epoch=3")
    p.add_argument("--search", choices=("milvus", "exact"), default="milvus",
                   help="Milvus (default; embedded Milvus Lite unless MILVUS_URI names a server) "
                        "or exact in-process search, for comparison")
    p.add_argument("--milvus-uri", default=os.environ.get("MILVUS_URI", ""),
                   help="Milvus Lite .db path or http://host:port (default: $MILVUS_URI, "
                        "else {infer_load_path}/milvus_eval.db, beside the model)")
    p.add_argument("--split", choices=("test", "valid"), default="test",
                   help="held-out users: runner.test_data_dir (default) or runner.valid_data_dir")
    p.add_argument("--baselines", action="store_true",
                   help="also evaluate MostPopular and cosine item co-occurrence on the same users")
    p.add_argument("--curve", action="store_true",
                   help=f"also report metrics at N in {CURVE_CUTOFFS} (one search at the largest)")
    p.add_argument("--exclude-history", action="store_true",
                   help="leave the user's history out of the lists (the paper protocol does not)")
    p.add_argument("--merge", choices=MERGES, default=DEFAULT_MERGE,
                   help="how each user's K lists become one: score = best score first (the "
                        "service's), round_robin = by rank in turn, slots / slots_norm = each "
                        f"interest a share of the N places (default {DEFAULT_MERGE})")
    p.add_argument("--json", type=Path, default=None, metavar="PATH",
                   help="where to write the JSON results (default: {infer_load_path}/"
                        "infer_results_<split>_<search>[_baselines].json)")
    p.add_argument("--export", type=Path, default=None, metavar="DIR",
                   help="write the user tower as a Paddle Inference model into DIR and stop "
                        "(mind/export.py; run it with mind/inference_tower.py)")
    p.add_argument("--epoch", type=int, default=None,
                   help="with --export: the saved epoch (default: the last in "
                        "[runner.infer_start_epoch, runner.infer_end_epoch])")
    cli.add_debug_option(p)
    args = p.parse_args(argv)
    if args.epoch is not None and args.export is None:
        p.error("--epoch is only used with --export")
    if args.top_n < 1:
        p.error("-top_n must be >= 1")
    return args


def eval_dir(config: Config, split: str) -> Path:
    runner = config.runner
    if split == "valid":
        if runner.valid_data_dir is None:
            raise ConfigError("--split valid: runner.valid_data_dir is not set in the config")
        return runner.valid_data_dir
    return runner.test_data_dir


def make_search(args: argparse.Namespace, config: Config, tower: UserTower):
    """Load the tower's items into the chosen backend; return (search function, seconds to load)."""
    ids, vectors = tower.item_embeddings()
    start = time.perf_counter()
    if args.search == "exact":
        backend = ExactSearch(ids, vectors)
        return backend.search, time.perf_counter() - start, None
    from itemstore import ItemStore  # pymilvus is only needed on this path

    uri = args.milvus_uri or str(checkpoint_root(config) / "milvus_eval.db")
    store = ItemStore(uri, EVAL_COLLECTION, dim=tower.dim, identity=tower.identity())
    store.replace_items(ids, vectors)
    return store.search, time.perf_counter() - start, store


def result_record(result: EvalResult, epoch: int | None, load_seconds: float | None = None) -> dict:
    record = {"name": result.name, "epoch": epoch, "users": result.users,
              "metrics": {str(n): m for n, m in result.metrics.items()},
              "seconds": result.seconds}
    if load_seconds is not None:
        record["seconds"]["load_items"] = load_seconds
    total = result.seconds.get("total", 0.0)
    record["users_per_second"] = result.users / total if total > 0 else None
    return record


def output_paths(args: argparse.Namespace, model_dir: Path) -> dict[str, Path]:
    """Where this run's JSON and plots go; named after the options that change the results."""
    if args.json is not None:
        return {"json": args.json,
                "curve": args.json.with_name(f"{args.json.stem}_recall_curve.png"),
                "epochs": args.json.with_name(f"{args.json.stem}_metrics_by_epoch.png")}
    tag = f"{args.split}_{args.search}" + ("_baselines" if args.baselines else "") + (
        "_exclude_history" if args.exclude_history else "") + (
        f"_{args.merge}" if args.merge != DEFAULT_MERGE else "")
    return {"json": model_dir / f"infer_results_{tag}.json",
            "curve": model_dir / f"recall_curve_{tag}.png",
            "epochs": model_dir / f"metrics_by_epoch_{tag}.png"}


def _save(plt, fig, ax, title: str, xlabel: str, ylabel: str, path: Path) -> Path:
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_curve(records: list[dict], path: Path) -> Path | None:
    """Recall@K against K for each method; skipped without matplotlib."""
    plt = cli.pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for rec in records:
        ks = sorted(int(k) for k in rec["metrics"])
        label = rec["name"] + (f" (epoch {rec['epoch']})" if rec["epoch"] is not None else "")
        ax.plot(ks, [rec["metrics"][str(k)]["recall"] for k in ks], marker="o", label=label)
    return _save(plt, fig, ax, "Recall@K on the eval users", "K", "Recall@K", path)


def plot_epochs(records: list[dict], top_n: int, path: Path) -> Path | None:
    """Recall/NDCG/HitRate@top_n against the epoch; skipped without matplotlib."""
    plt = cli.pyplot()
    epochs = [r for r in records if r["epoch"] is not None]
    if plt is None or len(epochs) < 2:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for name in ("recall", "ndcg", "hitrate"):
        ax.plot([r["epoch"] for r in epochs],
                [r["metrics"][str(top_n)][name] for r in epochs], marker="o", label=f"{name}@{top_n}")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _save(plt, fig, ax, f"metrics@{top_n} by saved epoch", "epoch", "metric", path)


def main(argv: list[str] | None = None) -> int:
    from mind.export import ExportError

    return cli.run("infer.py", _main, argv, known=cli.KNOWN_ERRORS + (ExportError,))


def _main(argv: list[str] | None) -> int:
    args = parse_args(argv)
    config = load_config(args.config, args.override)
    if args.export is not None:
        from mind.export import export_epoch

        out = export_epoch(config, args.export, args.epoch)
        meta = json.loads((out / "tower_meta.json").read_text())
        print(f"[infer] exported epoch {meta['identity']['epoch']} of {checkpoint_root(config)} "
              f"to {out} ({meta['model_file']}, {meta['params_file']}, tower_meta.json)")
        return 0
    runner = config.runner
    cutoffs = sorted(set(CURVE_CUTOFFS) | {args.top_n}) if args.curve else [args.top_n]
    data = read_eval_dir(eval_dir(config, args.split), config.hyper_parameters.item_count)
    root = checkpoint_root(config)  # the loaded model's folder: its results go beside it
    saved = list_epochs(root)
    epochs = [e for e in saved if runner.infer_start_epoch <= e <= runner.infer_end_epoch]
    if not epochs:
        raise CheckpointError(
            f"no saved epoch in [{runner.infer_start_epoch}, {runner.infer_end_epoch}] under "
            f"{root} (found {saved or 'none'}); train first: "
            f"python -u trainer.py -m {args.config}")
    run = read_run(root) or {}
    print(f"[infer] model {root}, epochs {epochs[0]}-{epochs[-1]}"
          + (f", run {run['run_id'][:8]}" if run.get("run_id") else ""))
    print(f"[infer] {len(data.user_ids)} {args.split} users from {eval_dir(config, args.split)}")

    # The best epoch is chosen on the valid users, never on the users it is reported for.
    select_on = None
    if args.split == "test" and runner.valid_data_dir is not None and len(epochs) > 1:
        select_on = read_eval_dir(runner.valid_data_dir, config.hyper_parameters.item_count)
    records = []
    for epoch in epochs:
        tower = UserTower(config, epoch)
        search, load_seconds, store = make_search(args, config, tower)
        try:
            result = evaluate_tower(tower, search, data, cutoffs, runner.infer_batch_size,
                                    args.exclude_history, name=f"MIND[{args.search}]",
                                    merge=args.merge)
            valid = None if select_on is None else evaluate_tower(
                tower, search, select_on, [args.top_n], runner.infer_batch_size,
                args.exclude_history, name="valid", merge=args.merge)
        finally:
            if store is not None:
                store.close()
        rec = result_record(result, epoch, load_seconds)
        rec["selection_recall"] = (valid or result).metrics[args.top_n]["recall"]
        records.append(rec)
        t = result.seconds
        print(f"[infer] epoch {epoch} {result.line(args.top_n)} | {rec['users_per_second']:,.0f} users/s "
              f"(tower {t['tower']:.2f}s, search {t['search']:.2f}s, merge {t['merge']:.2f}s, "
              f"metrics {t['metrics']:.2f}s; item load {load_seconds:.1f}s)", flush=True)

    if args.baselines:
        train = read_train_dir(runner.train_data_dir, config.hyper_parameters.item_count)
        for result in evaluate_baselines(train, config.hyper_parameters.item_count, data, cutoffs,
                                         args.exclude_history):
            records.append(result_record(result, None))
            print(f"[infer] baseline {result.line(args.top_n)}")

    mind_records = [r for r in records if r["epoch"] is not None]
    if select_on is not None:
        best, chosen_by = max(mind_records, key=lambda r: r["selection_recall"]), "valid Recall"
    else:  # nothing to choose on but the reported users themselves: take the last epoch
        best, chosen_by = mind_records[-1], "being the last epoch (no valid split to choose on)"
    print(f"[infer] best epoch {best['epoch']} (chosen by {chosen_by}): {args.split} "
          f"Recall@{args.top_n}={best['metrics'][str(args.top_n)]['recall']:.4f}")
    paths = output_paths(args, root)
    out = paths["json"]
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"config": str(Path(args.config).resolve()), "split": args.split, "top_n": args.top_n,
               "best_epoch": best["epoch"], "best_epoch_chosen_on": chosen_by,
               "search": args.search, "exclude_history": args.exclude_history, "merge": args.merge,
               "results": records}
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"[infer] JSON results: {out}")
    if cli.pyplot() is None:
        print("[infer] plots skipped: matplotlib is not installed (pip install -r requirements.txt)")
        return 0
    png = plot_epochs(records, args.top_n, paths["epochs"])
    if png:
        print(f"[infer] metrics per epoch: {png}")
    if args.curve:
        curve = [r for r in records if r["epoch"] in (None, best["epoch"])]
        print(f"[infer] Recall@K curve: {plot_curve(curve, paths['curve'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
