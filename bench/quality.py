"""Reproduce the MIND quality table (issue 3, "Quality to reach").

    . .venv/bin/activate
    (cd recommend/data && sh data.sh movielens && sh data.sh synthetic)
    python bench/quality.py                       # seeds 2024 2025, both datasets (~25 min, 2 cores)
    python bench/quality.py --quick               # one seed, short runs: a smoke test (~3 min)
    python bench/quality.py --datasets movielens --seeds 1 2 3
    python bench/quality.py --datasets movielens --valid-only -o hyper_parameters.optimizer.learning_rate=0.002

For each dataset and seed, MIND is trained twice from the dataset's shipped config, once with the
config's K (4 interests, the tutorial's shape) and once with K = 1 (the ablation), with the
trainer's own early stopping on VALID Recall@50. The epoch with the best valid Recall@50 is then
evaluated on the valid and the test users (exact inner-product search, the paper protocol: history
not filtered), beside MostPopular and cosine item co-occurrence on the same users. The test split
is never used for a choice.

Synthetic data only: users are grouped by their number of planted interests (truth.npz); for the
users with 3-4 planted interests we report Recall@50 and the planted-interest coverage = the share
of the user's planted categories that appear among the categories of the 50 recalled items.

Writes bench/results/quality.json (every figure, per seed) and bench/results/quality.md (the table,
mean +- half the range over seeds).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODEL_DIR = ROOT / "recommend" / "model"
sys.path.insert(0, str(MODEL_DIR))
sys.path.insert(0, str(ROOT / "recommend" / "data"))

from mind.baselines import CosineCooccurrence, MostPopular, recommend_all  # noqa: E402
from mind.config import Config, load_config  # noqa: E402
from mind.evaluation import metrics_at  # noqa: E402
from mind.exact_search import ExactSearch  # noqa: E402
from mind.reader import EvalSet, read_eval_dir, read_train_dir  # noqa: E402
from mind.retrieval import DEFAULT_MERGE, recall  # noqa: E402
from mind.user_tower import UserTower  # noqa: E402

import trainer  # noqa: E402

CONFIGS = {
    "movielens": MODEL_DIR / "mind" / "config_movielens.yaml",
    "synthetic": MODEL_DIR / "mind" / "config_synthetic.yaml",
}
TOP_N = 50
RESULTS = ROOT / "bench" / "results"


# ------------------------------------------------------------------------------ evaluation
def mind_lists(tower: UserTower, data: EvalSet, top_n: int, merge: str) -> list[np.ndarray]:
    ids, vectors = tower.item_embeddings()
    search = ExactSearch(ids, vectors).search
    out: list[np.ndarray] = []
    for lo in range(0, len(data.user_ids), 256):
        batch = data.histories[lo : lo + 256]
        out.extend(np.asarray(r, np.int64) for r in recall(tower, search, batch, top_n, False,
                                                              merge=merge))
    return out


def coverage(lists: list[np.ndarray], planted: np.ndarray, item_category: np.ndarray) -> np.ndarray:
    """Per user: |planted categories among the recalled items' categories| / |planted|."""
    out = np.zeros(len(lists))
    for u, items in enumerate(lists):
        want = planted[u][planted[u] >= 0]
        got = np.unique(item_category[items[(items > 0) & (items < len(item_category))]])
        out[u] = np.isin(want, got).mean()
    return out


class Scorer:
    """Metrics on one split: all users, and (synthetic) the users with 3-4 planted interests."""

    def __init__(self, config: Config, split: str, truth: dict | None):
        r = config.runner
        folder = r.valid_data_dir if split == "valid" else r.test_data_dir
        self.data = read_eval_dir(folder, config.hyper_parameters.item_count)
        self.truth = truth
        self.multi = None
        if truth is not None:
            row = {int(u): i for i, u in enumerate(truth["user_ids"])}
            self.planted = truth["user_interests"][[row[int(u)] for u in self.data.user_ids]]
            n_planted = (self.planted >= 0).sum(axis=1)
            self.multi = np.flatnonzero(n_planted >= 3)

    def score(self, lists: list[np.ndarray]) -> dict:
        d = self.data
        out = {"all": {**metrics_at(lists, d.eval_items, [TOP_N])[TOP_N], "users": len(lists)}}
        if self.multi is not None:
            sub = [lists[i] for i in self.multi]
            m = metrics_at(sub, [d.eval_items[i] for i in self.multi], [TOP_N])[TOP_N]
            cov = coverage(sub, self.planted[self.multi], self.truth["item_category"])
            out["planted_3_4"] = {**m, "coverage": float(cov.mean()), "users": len(sub)}
        return out


# ------------------------------------------------------------------------------ training
def train_and_pick(config: Config, log) -> tuple[int, list[dict]]:
    """Train with early stopping on valid Recall@N; return (best valid epoch, epoch records)."""
    root = config.runner.model_save_path
    if root.exists():
        shutil.rmtree(root)
    evaluate = trainer.make_valid_evaluator(config)
    records = trainer.train(config, evaluate=evaluate, log=log)
    key = f"valid_recall@{config.runner.early_stopping_top_n}"
    best = max(records, key=lambda rec: (rec[key], -rec["epoch"]))
    return best["epoch"], records


def run_dataset(name: str, args, log) -> dict:
    truth = None
    if name == "synthetic":
        t = np.load(ROOT / "recommend" / "data" / "synthetic" / "truth.npz")
        truth = {k: t[k] for k in t.files}
    out: dict = {"runs": [], "baselines": {}}
    splits = ["valid"] if args.valid_only else ["valid", "test"]
    base_cfg = load_config(CONFIGS[name], args.override)
    scorers = {s: Scorer(base_cfg, s, truth) for s in splits}

    train_seqs = read_train_dir(base_cfg.runner.train_data_dir, base_cfg.hyper_parameters.item_count)
    for cls in (MostPopular, CosineCooccurrence):
        model = cls(train_seqs, base_cfg.hyper_parameters.item_count)
        out["baselines"][cls.name] = {
            s: scorers[s].score(recommend_all(model, scorers[s].data.histories, TOP_N))
            for s in splits
        }

    k_main = base_cfg.hyper_parameters.interest_num
    for k in args.ks or dict.fromkeys([k_main, 1]):
        for seed in args.seeds:
            overrides = [
                *args.override,
                f"hyper_parameters.capsual.max_k={k}",
                f"runner.seed={seed}",
                f"runner.model_save_path={args.work_dir / f'{name}_k{k}_s{seed}'}",
                f"runner.infer_load_path={args.work_dir / f'{name}_k{k}_s{seed}'}",
                "runner.print_interval=100000",
            ]
            if base_cfg.runner.early_stopping_patience == 0:
                overrides.append("runner.early_stopping_patience=100")  # log valid, never stop
            if args.quick:
                overrides.append(f"runner.epochs={min(base_cfg.runner.epochs, 3)}")
            cfg = load_config(CONFIGS[name], overrides)
            t0 = time.perf_counter()
            best, records = train_and_pick(cfg, log)
            assert cfg.runner.infer_load_path == cfg.runner.model_save_path
            tower = UserTower(cfg, best)
            run = {"k": k, "seed": seed, "best_epoch": best, "epochs_run": len(records),
                   "train_seconds": round(time.perf_counter() - t0, 1),
                   "valid_curve": [r[f"valid_recall@{TOP_N}"] for r in records], "merge": {}}
            for merge in args.merges:
                run["merge"][merge] = {
                    s: scorers[s].score(mind_lists(tower, scorers[s].data, TOP_N, merge))
                    for s in splits
                }
            log(f"[quality] {name} K={k} seed={seed} best epoch {best}: " + "; ".join(
                f"{m}/{s} R@50={v[s]['all']['recall']:.4f}"
                for m, v in run["merge"].items() for s in splits))
            out["runs"].append(run)
    return out


# ------------------------------------------------------------------------------ report
def _agg(values: list[float]) -> str:
    a = np.asarray(values, dtype=float)
    if len(a) == 1:
        return f"{a[0]:.4f}"
    return f"{a.mean():.4f} ± {(a.max() - a.min()) / 2:.4f}"


def markdown(results: dict, args) -> str:
    merge = args.merges[0]
    lines = [
        "# MIND quality (bench/quality.py)",
        "",
        "Commands: " + "; ".join(f"`python bench/quality.py {c}`".replace(" `", "`")
                                 for c in args.commands) + "  ",
        f"Seeds {args.seeds}; MIND figures are mean ± half-range over seeds at the epoch with the "
        f"best VALID Recall@50 (early stopping on valid); merge `{merge}`; exact search; "
        "history not filtered (paper protocol).",
        "",
    ]
    for name, res in results["datasets"].items():
        splits = list(next(iter(res["baselines"].values())).keys())
        lines += [f"## {name}", "", "| method | " + " | ".join(
            f"{s} Recall@50 | {s} NDCG@50 | {s} HitRate@50" for s in splits) + " | best epochs |",
                  "|---" * (1 + 3 * len(splits) + 1) + "|"]
        ks = sorted({r["k"] for r in res["runs"]}, reverse=True)
        for k in ks:
            runs = [r for r in res["runs"] if r["k"] == k]
            cells = []
            for s in splits:
                for metric in ("recall", "ndcg", "hitrate"):
                    cells.append(_agg([r["merge"][merge][s]["all"][metric] for r in runs]))
            lines.append(f"| MIND K={k} | " + " | ".join(cells) + " | "
                         + ", ".join(str(r["best_epoch"]) for r in runs) + " |")
        for bname, b in res["baselines"].items():
            cells = [f"{b[s]['all'][m]:.4f}" for s in splits for m in ("recall", "ndcg", "hitrate")]
            lines.append(f"| {bname} | " + " | ".join(cells) + " | – |")
        lines.append("")
        if len(args.merges) > 1:
            lines += ["Merge of the K lists (MIND, Recall@50):", "",
                      "| K | " + " | ".join(f"{m} {s}" for m in args.merges for s in splits) + " |",
                      "|---" * (1 + len(args.merges) * len(splits)) + "|"]
            for k in ks:
                runs = [r for r in res["runs"] if r["k"] == k]
                lines.append(f"| {k} | " + " | ".join(
                    _agg([r["merge"][m][s]["all"]["recall"] for r in runs])
                    for m in args.merges for s in splits) + " |")
            lines.append("")
        if name == "synthetic":
            lines += ["Users with 3-4 planted interests (Recall@50; planted-interest coverage = "
                      "share of their planted categories among the 50 recalled items' categories):",
                      "", "| method | " + " | ".join(
                          f"{s} users | {s} Recall@50 | {s} coverage" for s in splits) + " |",
                      "|---" * (1 + 3 * len(splits)) + "|"]
            for k in ks:
                runs = [r for r in res["runs"] if r["k"] == k]
                cells = []
                for s in splits:
                    p = [r["merge"][merge][s]["planted_3_4"] for r in runs]
                    cells += [str(p[0]["users"]), _agg([x["recall"] for x in p]),
                              _agg([x["coverage"] for x in p])]
                lines.append(f"| MIND K={k} | " + " | ".join(cells) + " |")
            for bname, b in res["baselines"].items():
                cells = []
                for s in splits:
                    p = b[s]["planted_3_4"]
                    cells += [str(p["users"]), f"{p['recall']:.4f}", f"{p['coverage']:.4f}"]
                lines.append(f"| {bname} | " + " | ".join(cells) + " |")
            lines.append("")
    return "\n".join(lines) + "\n"


def write_outputs(results: dict, args) -> int:
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.tag}.json").write_text(json.dumps(results, indent=1) + "\n")
    md = markdown(results, args)
    (args.out / f"{args.tag}.md").write_text(md)
    print(md)
    return 0


def combine(args) -> int:
    """Merge result files: runs are pooled per dataset; baselines (seed-free) from the first."""
    merged: dict = {"argv": [], "seeds": [], "top_n": TOP_N, "datasets": {}}
    for path in args.combine:
        part = json.loads(path.read_text())
        merged["argv"].append(part["argv"])
        merged["seeds"] += [x for x in part["seeds"] if x not in merged["seeds"]]
        for name, res in part["datasets"].items():
            into = merged["datasets"].setdefault(name, {"runs": [], "baselines": res["baselines"]})
            into["runs"] += res["runs"]
    args.seeds = merged["seeds"]
    args.commands = [" ".join(a) for a in merged["argv"]] + [" ".join(args.argv)]
    return write_outputs(merged, args)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", choices=sorted(CONFIGS), default=["movielens", "synthetic"])
    p.add_argument("--seeds", nargs="+", type=int, default=[2024, 2025])
    p.add_argument("--quick", action="store_true", help="one seed, at most 3 epochs: a smoke test")
    p.add_argument("--ks", nargs="+", type=int, default=None,
                   help="interest counts to train (default: the config's K, then 1)")
    p.add_argument("--valid-only", action="store_true", help="never touch the test users (tuning)")
    p.add_argument("--merges", nargs="+", default=[DEFAULT_MERGE, "round_robin"],
                   help="merges to report; the first is the table's")
    p.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                   help="config override applied to every run (e.g. a grid point)")
    p.add_argument("--work-dir", type=Path, default=Path("/tmp/mind_quality"),
                   help="checkpoints of the runs (deleted and rewritten)")
    p.add_argument("--out", type=Path, default=RESULTS, help="folder for quality.json / quality.md")
    p.add_argument("--tag", default="quality", help="output file stem")
    p.add_argument("--combine", nargs="+", type=Path, default=None, metavar="JSON",
                   help="no training: merge earlier result files (e.g. one per seed or dataset, "
                        "run in parallel) into {out}/{tag}.json and .md")
    args = p.parse_args(argv)
    args.argv = argv
    args.commands = [" ".join(argv)]
    if args.quick:
        args.seeds = args.seeds[:1]
    if args.combine:
        return combine(args)
    quiet = lambda msg: print(msg, flush=True) if msg.startswith("[quality]") or "valid_recall" in msg else None  # noqa: E731
    results = {"argv": argv, "seeds": args.seeds, "top_n": TOP_N, "datasets": {}}
    for name in args.datasets:
        results["datasets"][name] = run_dataset(name, args, quiet)
    return write_outputs(results, args)


if __name__ == "__main__":
    sys.exit(main())
