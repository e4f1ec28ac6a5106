"""The MIND quality table: MIND-K vs MIND-1 vs baselines, over split seeds and training seeds.

    . .venv/bin/activate
    python bench/quality.py --datasets movielens                       # 5 splits x 2 seeds x K in (4, 1)
    python bench/quality.py --datasets movielens --resume              # go on with a cut-short grid
    python bench/quality.py --datasets synthetic --splits 3 --seeds 1 --tag quality_synthetic
    python bench/quality.py --datasets movielens --splits 2 --seeds 1 --epochs 2   # reduced grid
    python bench/quality.py --datasets movielens --ks 4 --valid-only --tag ablate_relu \
        -o hyper_parameters.relu_layer=true                             # a variant, valid only
    python bench/quality.py --compare bench/results/quality.json bench/results/ablate_relu.json

Protocol. For each split seed S the users are split anew (`sh data.sh <dataset> --seed S`, 8:1:1
users, ComiRec protocol) into {work_dir}/data/<dataset>_split<S>. For each training seed, MIND is
trained from the dataset's config with each K in --ks; the trainer's early stopping watches VALID
Recall@50 (paper protocol) and the epoch with the best valid Recall@50 is evaluated on the TEST
users. Nothing on test is used for a choice. Exact inner-product search.

Two protocols side by side: *paper* (history items may be recalled) and *served* (the user's
whole history left out, what the service returns). Baselines are training-free and scored from
the same history window as MIND (the last `maxlen` known clicks) and, labelled, from the full
history; in *served* every method leaves out the whole history.

Figures: mean over runs (split seed x training seed; baselines: one run per split) and a 95%
t-interval over those runs (mean +- t_{0.975, n-1} sd / sqrt(n)); runs of one split share its
users, so the interval is somewhat narrow. An epoch cap binds when a run's best epoch is its last
epoch and that is the cap: such runs are named in the report. The targets (MIND-K above the best
baseline by >= 0.02 with intervals apart; MIND-K within 0.01 of MIND-1; on synthetic, a higher
planted-interest coverage than MIND-1) are checked on paired differences over the runs.

Writes {out}/{tag}.json and {out}/{tag}.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# The code a MIND run depends on; a run is reused by --resume only if none of it changed.
RUN_CODE = ("recommend/model/trainer.py", "recommend/model/mind", "recommend/model/evaluation",
            "recommend/data", "bench/quality.py")
MODEL_DIR = ROOT / "recommend" / "model"
DATA_SH = ROOT / "recommend" / "data" / "data.sh"
sys.path.insert(0, str(MODEL_DIR))

from evaluation.baselines import CosineCooccurrence, MostPopular, recommend_all  # noqa: E402
from mind.config import Config, load_config  # noqa: E402
from evaluation.evaluate import metrics_at  # noqa: E402
from evaluation.exact_search import ExactSearch  # noqa: E402
from mind.reader import EvalSet, read_eval_dir, read_train_dir  # noqa: E402
from mind.retrieval import MERGES, item_categories, recall  # noqa: E402
from mind.user_tower import UserTower  # noqa: E402
from recdata.itemmap import ITEM_MAP_FILE, read_item_map  # noqa: E402

import trainer  # noqa: E402

# dataset -> extractor -> its shipped config (the SA files differ in extractor, lr and readout).
CONFIGS = {
    "movielens": {"routing": MODEL_DIR / "mind" / "config_movielens.yaml",
                  "self_attention": MODEL_DIR / "mind" / "config_movielens_sa.yaml"},
    "synthetic": {"routing": MODEL_DIR / "mind" / "config_synthetic.yaml",
                  "self_attention": MODEL_DIR / "mind" / "config_synthetic_sa.yaml"},
}
EXTRACTORS = ("routing", "self_attention")
# Row labels: routing keeps the "MIND K=..." of the earlier result files, so they combine.
LABELS = {"routing": "MIND", "self_attention": "SA"}
# lambdas of ComiRec's controllable aggregation scored beside the score merge (lambda 0).
LAMBDAS = (0.05, 0.1, 0.2)
# The merges --merges scores ("controllable" comes with --lambdas instead).
LIST_MERGES = tuple(m for m in MERGES if m != "controllable")
# Before the user's -o: the synthetic config trains 2 fixed epochs (the demo's minute); the judge
# gives it MovieLens' rule instead, early stopping on valid with a cap that does not bind.
JUDGE_DEFAULTS = {"synthetic": ["runner.epochs=15", "runner.early_stopping_patience=3"]}
TOP_N = 50
METRICS = ("recall", "ndcg", "hitrate")
PROTOCOLS = {"paper": False, "served": True}  # protocol -> history left out
RESULTS = ROOT / "bench" / "results"
FIRST_TRAIN_SEED = 2024
# t_{0.975, df} for df = 1..30 (two-sided 95%); beyond 30 the normal 1.96 is within 2%.
T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
        2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
        2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def t_interval(values: list[float]) -> tuple[float, list[float]]:
    """(mean, [lo, hi]) with the 95% t-interval over the values (one value: [v, v])."""
    a = np.asarray(values, dtype=float)
    if len(a) < 2:
        return float(a.mean()), [float(a.mean())] * 2
    half = (T975[len(a) - 2] if len(a) <= 31 else 1.96) * a.std(ddof=1) / np.sqrt(len(a))
    return float(a.mean()), [float(a.mean() - half), float(a.mean() + half)]


# ------------------------------------------------------------------------------ data
def prepare_split(name: str, seed: int, work: Path, data_args: list[str]) -> Path:
    """`sh data.sh <name> --seed S --out DIR` once per split seed; returns DIR."""
    out = work / "data" / f"{name}_split{seed}"
    meta = out / "meta.json"
    if meta.exists() and json.loads(meta.read_text()).get("seed") == seed:
        return out
    env = {**os.environ, "PYTHON": sys.executable}
    subprocess.run(["sh", str(DATA_SH), name, "--seed", str(seed), "--out", str(out), *data_args],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    return out


def split_overrides(data_dir: Path) -> list[str]:
    return [f"runner.{k}_data_dir={data_dir / k}" for k in ("train", "valid", "test")]


# ------------------------------------------------------------------------------ evaluation
class Planted:
    """Synthetic data: the held-out users with 3-4 planted interests (truth.npz of the split)."""

    def __init__(self, data_dir: Path, data: EvalSet):
        t = np.load(data_dir / "truth.npz")
        row = {int(u): i for i, u in enumerate(t["user_ids"])}
        planted = t["user_interests"][[row[int(u)] for u in data.user_ids]]
        self.users = np.flatnonzero((planted >= 0).sum(axis=1) >= 3)
        self.planted = planted[self.users]
        self.category = t["item_category"]

    def coverage(self, lists: list[np.ndarray]) -> float:
        """Mean share of a user's planted categories among the recalled items' categories."""
        shares = []
        for want, u in zip(self.planted, self.users):
            items = lists[u][(lists[u] > 0) & (lists[u] < len(self.category))]
            shares.append(np.isin(want[want >= 0], self.category[items]).mean())
        return float(np.mean(shares))


class Split(NamedTuple):
    data: EvalSet
    planted: Planted | None  # synthetic only
    categories: np.ndarray | None = None  # bool [item_count, C] from the split's item map


def split_categories(data_dir: Path, item_count: int) -> np.ndarray | None:
    """The items' categories (synthetic: category; MovieLens: genres), None without a map."""
    path = data_dir / ITEM_MAP_FILE
    return item_categories(read_item_map(path), item_count) if path.exists() else None


def category_scores(lists: list[np.ndarray], split: Split) -> dict[str, float]:
    """categories: mean number of distinct categories in a list; category_coverage: mean share
    of the categories of a user's eval items that the list holds (users whose eval items have
    one)."""
    cats = split.categories
    assert cats is not None
    n, shares = [], []
    for row, want in zip(lists, split.data.eval_items):
        got = cats[row[(row > 0) & (row < len(cats))]].any(axis=0)
        need = cats[want[(want > 0) & (want < len(cats))]].any(axis=0)
        n.append(int(got.sum()))
        if need.any():
            shares.append(float((got & need).sum() / need.sum()))
    return {"categories": float(np.mean(n)), "category_coverage": float(np.mean(shares))}


def score(lists: list[np.ndarray], split: Split) -> dict[str, float]:
    m = metrics_at(lists, split.data.eval_items, [TOP_N])[TOP_N]
    out = {k: m[k] for k in METRICS}
    if split.planted is not None:
        out["coverage_3_4"] = split.planted.coverage(lists)
    if split.categories is not None:
        out.update(category_scores(lists, split))
    return out


def mind_lists(tower: UserTower, data: EvalSet, merge: str, exclude: bool,
               categories: np.ndarray | None = None) -> list[np.ndarray]:
    """Every user's top-N; merge "controllable λ=x" is ComiRec's aggregation with lambda x."""
    ids, vectors = tower.item_embeddings()
    search = ExactSearch(ids, vectors).search
    lam = float(merge.split("=")[1]) if merge.startswith("controllable") else 0.0
    out: list[np.ndarray] = []
    for lo in range(0, len(data.user_ids), 256):
        rows = recall(tower, search, data.histories[lo : lo + 256], TOP_N, exclude,
                      merge="score" if merge.startswith("controllable") else merge,
                      diversity=lam, categories=categories)
        out.extend(np.asarray(r, np.int64) for r in rows)
    return out


def baseline_scores(config: Config, splits: dict[str, Split]) -> dict:
    """{split: {protocol: {method: metrics}}} for both baselines, window and full history."""
    hp = config.hyper_parameters
    seqs = read_train_dir(config.runner.train_data_dir, hp.item_count)
    out: dict = {s: {p: {} for p in PROTOCOLS} for s in splits}
    for cls in (MostPopular, CosineCooccurrence):
        model = cls(seqs, hp.item_count)
        for label, window in ((f"last {hp.maxlen}", hp.maxlen), ("full history", None)):
            for s, split in splits.items():
                for p, exclude in PROTOCOLS.items():
                    lists = recommend_all(model, split.data.histories, TOP_N, exclude, window=window)
                    out[s][p][f"{cls.name} ({label})"] = score(lists, split)
    return out


def train_and_pick(config: Config, log) -> tuple[int, list[dict]]:
    """Train with early stopping on valid Recall@N; return (best valid epoch, epoch records)."""
    root = config.runner.model_save_path
    if root.exists():
        shutil.rmtree(root)
    records = trainer.train(config, evaluate=trainer.make_valid_evaluator(config), log=log)
    key = f"valid_recall@{config.runner.early_stopping_top_n}"
    best = max(records, key=lambda rec: (rec[key], -rec["epoch"]))
    return best["epoch"], records


def _files_digest(files: list[Path]) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(str(f.relative_to(ROOT) if f.is_relative_to(ROOT) else f.name).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


# Taken once, at start-up: the code this process runs, even if the files change meanwhile.
CODE_DIGEST = _files_digest([f for entry in RUN_CODE for f in (
    sorted((ROOT / entry).rglob("*.py")) + sorted((ROOT / entry).rglob("*.sh"))
    if (ROOT / entry).is_dir() else [ROOT / entry])])


def fingerprint(name: str, extractor: str, k: int, split: int, seed: int, data_dir: Path,
                args) -> str:
    """sha256 of what decides a run's figures: the code, config, options and split data."""
    settings = [name, extractor, k, split, seed, args.override, args.epochs, args.merges,
                args.lambdas, args.valid_only]
    data = [CONFIGS[name][extractor], *sorted(p for p in data_dir.rglob("*") if p.is_file())]
    return hashlib.sha256(json.dumps([settings, CODE_DIGEST, _files_digest(data)]).encode()).hexdigest()


def mind_run(name: str, extractor: str, k: int, split: int, seed: int, data_dir: Path, splits,
             args, log) -> dict:
    """Train one model; its metrics per split, protocol and merge at the best valid epoch."""
    key = fingerprint(name, extractor, k, split, seed, data_dir, args)
    what = f"{name} split {split} seed {seed} {LABELS[extractor]} K={k}"
    if key in args.reusable:
        log(f"[quality] {what}: reused from {args.tag}.json")
        return args.reusable[key]
    run_dir = args.work_dir / f"{name}_{extractor}_k{k}_split{split}_s{seed}"
    overrides = [*split_overrides(data_dir), *JUDGE_DEFAULTS.get(name, []), *args.override,
                 f"hyper_parameters.capsual.max_k={k}", f"runner.seed={seed}",
                 f"runner.model_save_path={run_dir}", f"runner.infer_load_path={run_dir}",
                 "runner.print_interval=100000"]
    if args.epochs:
        overrides.append(f"runner.epochs={args.epochs}")
    config_path = CONFIGS[name][extractor]
    cfg = load_config(config_path, overrides)
    if cfg.runner.early_stopping_patience == 0:
        cfg = load_config(config_path, [*overrides, "runner.early_stopping_patience=100"])
    t0 = time.perf_counter()
    best, records = train_and_pick(cfg, log)
    tower = UserTower(cfg, best)
    merges = args.merges if k > 1 else args.merges[:1]  # one list: every merge is the same
    if any(sp.categories is not None for sp in splits.values()):
        merges = [*merges, *(f"controllable λ={lam:g}" for lam in args.lambdas)]
    run = {"extractor": extractor, "k": k, "split_seed": split, "train_seed": seed,
           "fingerprint": key, "best_epoch": best,
           "epochs_run": len(records), "epoch_cap": cfg.runner.epochs,
           "cap_binds": best == len(records) - 1 == cfg.runner.epochs - 1,
           "train_seconds": round(time.perf_counter() - t0, 1),
           "valid_curve": [r[f"valid_recall@{TOP_N}"] for r in records],
           "scores": {s: {p: {m: score(mind_lists(tower, sp.data, m, ex, sp.categories), sp)
                              for m in merges}
                          for p, ex in PROTOCOLS.items()} for s, sp in splits.items()}}
    shutil.rmtree(run_dir, ignore_errors=True)
    log(f"[quality] {what}: best epoch {best} of {len(records)}; "
        + "; ".join(f"{s}/{p} R@50={v[merges[0]]['recall']:.4f}"
                    for s, by_p in run["scores"].items() for p, v in by_p.items()))
    return run


def run_dataset(name: str, args, log, save) -> dict:
    """Every run of one dataset; save(res) after each, so a cut-short grid keeps what it ran.

    Training seeds are the outer loop: the first pass covers every split once."""
    split_names = ["valid"] if args.valid_only else ["valid", "test"]
    res: dict = {"split_seeds": args.split_seeds, "train_seeds": args.train_seeds,
                 "baseline_runs": [], "mind_runs": []}
    for seed in args.train_seeds:
        for split in args.split_seeds:
            data_dir = prepare_split(name, split, args.work_dir, args.data_arg)
            cfg = load_config(CONFIGS[name]["routing"], [*split_overrides(data_dir),
                                                         *args.override])
            ks = args.ks or list(dict.fromkeys([cfg.hyper_parameters.interest_num, 1]))
            item_count = cfg.hyper_parameters.item_count
            cats = split_categories(data_dir, item_count) if args.lambdas else None
            splits = {}
            for s in split_names:
                data = read_eval_dir(getattr(cfg.runner, f"{s}_data_dir"), item_count)
                truth = (data_dir / "truth.npz").exists()
                splits[s] = Split(data, Planted(data_dir, data) if truth else None, cats)
            if seed == args.train_seeds[0]:
                res["baseline_runs"].append({"split_seed": split,
                                             "scores": baseline_scores(cfg, splits)})
            for extractor in args.extractors:
                for k in ks:
                    res["mind_runs"].append(mind_run(name, extractor, k, split, seed, data_dir,
                                                     splits, args, log))
                    for s in split_names:
                        res[s] = summarise(res, s)
                    save(res)
    return res


ALL_METRICS = (*METRICS, "coverage_3_4", "categories", "category_coverage")
HEADS = {"recall": "Recall@50", "ndcg": "NDCG@50", "hitrate": "HitRate@50",
         "coverage_3_4": "planted coverage (3-4 interests)", "categories": "categories in list",
         "category_coverage": "eval-category coverage"}


def extractor_of(run: dict) -> str:
    return run.get("extractor", "routing")  # runs written before the extractor dimension


def run_label(run: dict, merge: str) -> str:
    """"MIND K=4 (score merge)", "SA K=1", "MIND K=1 (controllable λ=0.1 merge)", ..."""
    one = run["k"] == 1 and not merge.startswith("controllable")
    return f"{LABELS[extractor_of(run)]} K={run['k']}" + ("" if one else f" ({merge} merge)")


def summarise(res: dict, split: str) -> dict:
    """{protocol: {method: {"recall@50": {mean, ci95}, ..., "runs": [...]}}} on one split."""
    table: dict = {}
    for p in PROTOCOLS:
        rows: dict[str, list[dict]] = {}
        for run in res["mind_runs"]:
            for merge, m in run["scores"][split][p].items():
                label = run_label(run, merge)
                rows.setdefault(label, []).append({"split_seed": run["split_seed"],
                                                   "train_seed": run["train_seed"],
                                                   "best_epoch": run["best_epoch"], **m})
        for run in res["baseline_runs"]:
            for method, m in run["scores"][split][p].items():
                rows.setdefault(method, []).append({"split_seed": run["split_seed"], **m})
        table[p] = {}
        for method, runs in rows.items():
            entry = {}
            for metric in [m for m in ALL_METRICS if all(m in r for r in runs)]:
                mean, ci = t_interval([r[metric] for r in runs])
                entry[f"{metric}@{TOP_N}"] = {"mean": mean, "ci95": ci}
            table[p][method] = {**entry, "runs": runs}
    return table


# ------------------------------------------------------------------------------ report
def _cell(e: dict) -> str:
    lo, hi = e["ci95"]
    return f"{e['mean']:.4f} [{lo:.4f}, {hi:.4f}]"


def paired(a: list[dict], b: list[dict], metric: str, by: tuple[str, ...]) -> tuple[float, list[float]]:
    """Mean and 95% t-interval of a - b over the runs of a, each paired with b's run of the same
    `by` (runs without a partner, as in a grid still running, are left out)."""
    other = {tuple(r[k] for k in by): r[metric] for r in b}
    return t_interval([r[metric] - other[key] for r in a
                       if (key := tuple(r[k] for k in by)) in other])


def _diff(a: dict, b: dict, by: tuple[str, ...], metric: str = "recall") -> str:
    mean, (lo, hi) = paired(a["runs"], b["runs"], metric, by)
    return f"{mean:+.4f} [{lo:+.4f}, {hi:+.4f}]"


def best_on_valid(res: dict, p: str, rows: list[str]) -> str | None:
    """The row with the best mean VALID Recall@50 under protocol p (a choice test never makes)."""
    valid = res.get("valid", {}).get(p, {})
    rows = [r for r in rows if r in valid]
    return max(rows, key=lambda r: valid[r]["recall@50"]["mean"]) if rows else None


def targets(res: dict) -> list[str]:
    """The issue's targets on test, paired over splits (and seeds): PASS/MISS lines.

    The best 4-interest configuration (any extractor and merge) and the best 1-interest one are
    picked on VALID Recall@50, then compared on test: 4 >= co-occurrence on the last maxlen clicks
    + 0.02 with the intervals apart, and 4 >= 1 - 0.01. With planted interests (synthetic): for
    each extractor, K=4 (score merge) above K=1 in Recall@50 and in planted coverage, the paired
    interval above 0."""
    if "test" not in res:
        return []
    lines = ["### Targets (test, paired differences; configurations chosen on valid)", ""]
    same_run = ("split_seed", "train_seed")
    for p, table in res["test"].items():
        cooc = next((m for m in table if m.startswith("CosineCooccurrence (last")), None)
        four = best_on_valid(res, p, [m for m in table if " K=4" in m])
        one = best_on_valid(res, p, [m for m in table if m.endswith(" K=1")])
        if cooc is None or four is None or one is None:
            continue
        mk, b, o = table[four], table[cooc], table[one]
        d_base = paired(mk["runs"], b["runs"], "recall", ("split_seed",))
        d_one = paired(mk["runs"], o["runs"], "recall", same_run)
        apart = mk["recall@50"]["ci95"][0] > b["recall@50"]["ci95"][1]
        ok_base, ok_one = d_base[0] >= 0.02 and apart, d_one[0] >= -0.01
        lines += [f"- {p}: best 4-interest on valid = {four}; best 1-interest = {one}",
                  f"- {p}: {four} − {cooc} Recall@50 {_diff(mk, b, ('split_seed',))}, intervals "
                  f"{'apart' if apart else 'overlap'} (target ≥ +0.02, apart): "
                  f"**{'PASS' if ok_base else 'MISS'}**",
                  f"- {p}: {four} − {one} Recall@50 {_diff(mk, o, same_run)} (target ≥ −0.01): "
                  f"**{'PASS' if ok_one else 'MISS'}**"]
        for label in LABELS.values():
            k4, k1 = table.get(f"{label} K=4 (score merge)"), table.get(f"{label} K=1")
            if k4 is None or k1 is None:
                continue
            if "coverage_3_4@50" not in k4:
                lines.append(f"- {p}: {label} K=4 (score merge) − {label} K=1 Recall@50 "
                             f"{_diff(k4, k1, same_run)}; − {cooc} "
                             f"{_diff(k4, b, ('split_seed',))}")
            else:
                for metric, name in (("recall", "Recall@50"),
                                     ("coverage_3_4", "planted coverage of 3-4-interest users")):
                    d = paired(k4["runs"], k1["runs"], metric, same_run)
                    lines.append(f"- {p}: {label} K=4 − K=1 {name} {d[0]:+.4f} "
                                 f"[{d[1][0]:+.4f}, {d[1][1]:+.4f}] (target > 0): "
                                 f"**{'PASS' if d[1][0] > 0 else 'MISS'}**")
        ex = {extractor_of(r) for r in res["mind_runs"]}
        if ex == {"self_attention", "routing"}:
            sa4, r4 = table.get("SA K=4 (score merge)"), table.get("MIND K=4 (score merge)")
            if sa4 is not None and r4 is not None:
                lines.append(f"- {p}: SA K=4 − MIND K=4 (score merges) Recall@50 "
                             f"{_diff(sa4, r4, same_run)}")
    return [*lines, ""]


def markdown(results: dict, args) -> str:
    lines = ["# MIND quality (bench/quality.py)", "",
             f"Command: `python bench/quality.py {' '.join(args.argv)}`  ",
             *[f"Part: `python bench/quality.py {' '.join(part['argv'])}`  "
               for part in results.get("parts", [])],
             f"Split seeds {args.split_seeds}, training seeds {args.train_seeds}; mean and 95% "
             "t-interval over the runs (split x training seed; baselines: one run per split). "
             "MIND at the epoch with the best VALID Recall@50 (paper protocol); exact search. "
             "*paper*: history not filtered; *served*: the whole history left out.", ""]
    for name, res in results["datasets"].items():
        for split in ("test", "valid"):
            if split not in res:
                continue
            lines += [f"## {name}: {split}", ""]
            for p, table in res[split].items():
                metrics = [m for m in ALL_METRICS if any(f"{m}@{TOP_N}" in e
                                                         for e in table.values())]
                lines += [f"### {p} protocol ({split})", "",
                          "| method | runs | " + " | ".join(HEADS[m] for m in metrics) + " |",
                          "|---" * (2 + len(metrics)) + "|"]
                for method, e in table.items():
                    lines.append(f"| {method} | {len(e['runs'])} | " + " | ".join(
                        _cell(e[f"{m}@{TOP_N}"]) if f"{m}@{TOP_N}" in e else "" for m in metrics)
                        + " |")
                lines.append("")
        lines += targets(res)
        runs = res["mind_runs"]
        binds = [f"{LABELS[extractor_of(r)]} K={r['k']} split {r['split_seed']} seed "
                 f"{r['train_seed']}" for r in runs if r["cap_binds"]]
        lines += ["Best valid epochs: " + ", ".join(
            f"{LABELS[extractor_of(r)]} K={r['k']}/s{r['split_seed']}/t{r['train_seed']}: "
            f"{r['best_epoch']} of "
            f"{r['epochs_run']}" for r in runs) + ".  ",
                  "Epoch cap binds (best epoch = last = cap): "
                  + (", ".join(binds) if binds else "never") + ".", ""]
    return "\n".join(lines) + "\n"


def reusable_runs(path: Path) -> dict[str, dict]:
    """fingerprint -> run, for every fingerprinted MIND run of an earlier result file."""
    if not path.exists():
        return {}
    old = json.loads(path.read_text())
    return {run["fingerprint"]: run for res in old["datasets"].values()
            for run in res["mind_runs"] if "fingerprint" in run}


def combine(args) -> int:
    """One result from several files of the same grid run in parts (their MIND runs joined;
    the baselines, which do not train, from the first file, which must cover the same splits)."""
    parts = [json.loads(path.read_text()) for path in args.combine]
    if args.split_seeds:  # only these splits of every file (e.g. the ones a cut-short grid ran)
        keep = set(args.split_seeds)
        for part in parts:
            for res in part["datasets"].values():
                res["split_seeds"] = [s for s in res["split_seeds"] if s in keep]
                for runs in ("mind_runs", "baseline_runs"):
                    res[runs] = [r for r in res[runs] if r["split_seed"] in keep]
    datasets: dict = {}
    for name in parts[0]["datasets"]:
        res = json.loads(json.dumps(parts[0]["datasets"][name]))
        for part in parts[1:]:
            other = part["datasets"].get(name)
            if other is not None and args.split_seeds:
                # Parts run on different splits: each split's baselines from the first file
                # that has them.
                have = {r["split_seed"] for r in res["baseline_runs"]}
                res["baseline_runs"] += [r for r in other["baseline_runs"]
                                         if r["split_seed"] not in have]
                res["split_seeds"] = sorted({r["split_seed"] for r in res["baseline_runs"]})
            elif other is None or other["split_seeds"] != res["split_seeds"]:
                raise SystemExit(f"--combine: {name} is not on split seeds {res['split_seeds']} "
                                 "in every file")
            res["mind_runs"] += other["mind_runs"]
        seen = [(extractor_of(r), r["k"], r["split_seed"], r["train_seed"])
                for r in res["mind_runs"]]
        if len(set(seen)) != len(seen):
            raise SystemExit(f"--combine: {name} has the same run (extractor, K, split, seed) "
                             "twice")
        res["train_seeds"] = sorted({r["train_seed"] for r in res["mind_runs"]})
        for split in ("valid", "test"):
            if split in res:
                res[split] = summarise(res, split)
        datasets[name] = res
    args.split_seeds = parts[0]["split_seeds"]
    args.train_seeds = sorted({s for res in datasets.values() for s in res["train_seeds"]})
    results = {"argv": args.argv, "parts": [{"file": str(path), "argv": part["argv"]}
                                             for path, part in zip(args.combine, parts)],
               "top_n": TOP_N, "split_seeds": args.split_seeds, "train_seeds": args.train_seeds,
               "datasets": datasets}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.tag}.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.out / f"{args.tag}.md").write_text(markdown(results, args))
    print((args.out / f"{args.tag}.md").read_text())
    return 0


def compare(base_path: Path, new_path: Path) -> str:
    """NEW - BASE for each MIND method both files have, paired over the runs of the same split and
    training seed: how a variant (one -o switch) moved Recall@50; per run in (split, seed) order."""
    base, new = (json.loads(p.read_text())["datasets"] for p in (base_path, new_path))
    lines = [f"# Recall@50, {new_path.name} − {base_path.name} (paired by split and seed)", "",
             "| dataset | users | protocol | method | runs | base | new | difference | per run |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name in new.keys() & base.keys():
        for split in ("valid", "test"):
            for p, table in new[name].get(split, {}).items():
                for method, e in table.items():
                    old = base[name].get(split, {}).get(p, {}).get(method)
                    if not method.startswith("MIND") or old is None:
                        continue
                    key = lambda r: (r["split_seed"], r["train_seed"])  # noqa: E731
                    was = {key(r): r["recall"] for r in old["runs"]}
                    pairs = [(was[key(r)], r["recall"])
                             for r in sorted(e["runs"], key=key) if key(r) in was]
                    if not pairs:
                        continue
                    mean, (lo, hi) = t_interval([b - a for a, b in pairs])
                    lines.append(
                        f"| {name} | {split} | {p} | {method} | {len(pairs)} | "
                        f"{np.mean([a for a, _ in pairs]):.4f} | {np.mean([b for _, b in pairs]):.4f} | "
                        f"{mean:+.4f} [{lo:+.4f}, {hi:+.4f}] | "
                        + " ".join(f"{b - a:+.3f}" for a, b in pairs) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", choices=sorted(CONFIGS), default=["movielens"])
    p.add_argument("--extractors", nargs="+", choices=EXTRACTORS, default=list(EXTRACTORS),
                   help="extractors to train, each from its dataset's config (default: both)")
    p.add_argument("--splits", type=int, default=5, help="split seeds 0..N-1 (data.sh --seed)")
    p.add_argument("--split-seeds", nargs="+", type=int, default=None,
                   help="explicit split seeds (instead of --splits); with --combine: keep only "
                        "these splits of every file (the files may then cover different splits)")
    p.add_argument("--seeds", type=int, default=2, help="training seeds --first-seed..+N-1")
    p.add_argument("--first-seed", type=int, default=FIRST_TRAIN_SEED,
                   help="the first training seed (default %(default)s)")
    p.add_argument("--epochs", type=int, default=None,
                   help="epoch cap (default: the config's; early stopping usually ends first)")
    p.add_argument("--ks", nargs="+", type=int, default=None,
                   help="interest counts to train (default: the config's K, then 1)")
    p.add_argument("--quick", action="store_true", help="= --splits 1 --seeds 1 --epochs 3")
    p.add_argument("--valid-only", action="store_true", help="never touch the test users (tuning)")
    p.add_argument("--merges", nargs="+", choices=LIST_MERGES, default=list(LIST_MERGES),
                   help="merges to evaluate for K > 1 (no retraining); the first is K=1's")
    p.add_argument("--lambdas", nargs="*", type=float, default=list(LAMBDAS),
                   help="lambdas of ComiRec's controllable aggregation to score beside the score "
                        "merge, where the data has item categories (none: skip it)")
    p.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                   help="config override applied to every run (e.g. a variant)")
    p.add_argument("--data-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for data.sh (e.g. --data-arg=--users=300)")
    p.add_argument("--work-dir", type=Path, default=Path("/tmp/mind_quality"),
                   help="split data and checkpoints (checkpoints are deleted after each run)")
    p.add_argument("--out", type=Path, default=RESULTS, help="folder for {tag}.json / {tag}.md")
    p.add_argument("--tag", default="quality", help="output file stem")
    p.add_argument("--resume", action="store_true",
                   help="reuse the MIND runs of {out}/{tag}.json whose code, config, options and "
                        "split data are unchanged (a cut-short grid goes on where it stopped)")
    p.add_argument("--combine", nargs="+", type=Path, default=None, metavar="JSON",
                   help="no training: one table from the runs of earlier result files (e.g. one "
                        "per training seed), written as {out}/{tag}.json/.md")
    p.add_argument("--compare", nargs=2, type=Path, default=None, metavar=("BASE", "NEW"),
                   help="no training: NEW - BASE Recall@50 of each MIND method, paired by run")
    args = p.parse_args(argv)
    args.argv = argv
    if args.compare:
        print(compare(*args.compare), end="")
        return 0
    if args.combine:
        return combine(args)
    if args.quick:
        args.splits, args.seeds, args.epochs = 1, 1, min(args.epochs or 3, 3)
    args.split_seeds = args.split_seeds or list(range(args.splits))
    args.train_seeds = [args.first_seed + i for i in range(args.seeds)]
    args.reusable = reusable_runs(args.out / f"{args.tag}.json") if args.resume else {}
    args.argv = argv = [a for a in argv if a != "--resume"]  # the command that reproduces it
    quiet = lambda msg: print(msg, flush=True) if msg.startswith("[quality]") else None  # noqa: E731
    results = {"argv": argv, "top_n": TOP_N, "split_seeds": args.split_seeds,
               "train_seeds": args.train_seeds, "datasets": {}}
    args.out.mkdir(parents=True, exist_ok=True)

    def save(name: str, res: dict) -> None:
        results["datasets"][name] = res
        (args.out / f"{args.tag}.json").write_text(json.dumps(results, indent=1) + "\n")
        (args.out / f"{args.tag}.md").write_text(markdown(results, args))

    for name in args.datasets:
        run_dataset(name, args, quiet, lambda res, name=name: save(name, res))
    print((args.out / f"{args.tag}.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
