"""Train MIND from a config.yaml; one verified, atomically written checkpoint per epoch.

    cd recommend/model
    python -u trainer.py -m mind/config_synthetic.yaml                  # ~1 min on 2 cores
    python -u trainer.py -m mind/config_movielens.yaml
    python -u trainer.py -m mind/config.yaml                            # AmazonBook
    python -u trainer.py -m mind/config.yaml -o runner.epochs=2 -o hyper_parameters.capsual.max_k=1
    python -u trainer.py -m mind/config.yaml --resume                   # continue from the last epoch
    python -u trainer.py -m mind/config.yaml --overwrite                # delete the old run, start over
    python -m paddle.distributed.launch --nproc_per_node 2 trainer.py -m mind/config.yaml  # 2 ranks
    ../../scripts/train.sh amazonbook --nproc 2           # the same, failing if any rank did not finish

Writes {model_save_path}/{epoch}/ (rec.pdparams, rec.pdopt, item_counts.npy, state.pkl, meta.json,
and the data's item_map.tsv when it has one),
{model_save_path}/run.json (run_id, started, config), {model_save_path}/train_log.jsonl and, if
matplotlib is installed, {model_save_path}/loss.png. A folder that already holds another run's
epochs is refused unless --resume or --overwrite says what to do with them.

The item table is updated sparsely with lazy Adam by default (`sparse_embedding: true`): about
8x faster than a dense update at 367,983 items (bench/README.md, "Training").
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import pickle
import random
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import mind  # noqa: F401  (first: its __init__ silences paddle's "No ccache found" warning)
import paddle

from mind import cli
from evaluation.baselines import click_counts
from mind.checkpoint import (
    LOG_FILE,
    PLOT_FILE,
    ITEM_MAP_FILE,
    CheckpointError,
    clear_run,
    list_epochs,
    read_meta,
    read_run,
    restore,
    save_checkpoint,
    start_run,
)
from mind.config import Config, ConfigError, HyperConfig, load_config
from recdata.itemmap import file_sha256 as _file_sha256
from mind import distributed
from mind.distributed import World
from mind.network import MIND

# (model, epoch) -> validation score, higher is better (Recall@N); see make_valid_evaluator.
Evaluator = Callable[[MIND, int], float]


def init_seed(seed: int) -> None:
    """The one place the run is seeded: python, numpy and paddle."""
    random.seed(seed)
    np.random.seed(seed)
    paddle.seed(seed)


def rng_state() -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "paddle": pickle.dumps(paddle.get_rng_state()),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    paddle.set_rng_state(pickle.loads(state["paddle"]))


def select_device(use_gpu: bool, cpu_threads: int = 0, gpu_id: int | None = None) -> str:
    """'gpu' when asked for and usable, else 'cpu' (with one warning if a GPU was asked for).

    gpu_id: the local rank's GPU in a launched run (untested here: no GPU). On CPU, paddle's math runs on ``cpu_threads`` threads (0 = every core): paddle's own
    default is one thread, which left half of a 2-core machine idle (3,856 -> 4,523
    samples/s on the full catalogue, bench/train_bench.py).
    """
    if use_gpu:
        if paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0:
            paddle.set_device("gpu" if gpu_id is None else f"gpu:{gpu_id}")
            return "gpu"
        warnings.warn("runner.use_gpu is true but no CUDA device is available: training on CPU")
    paddle.set_device("cpu")
    paddle.base.core.set_num_threads(cpu_threads or os.cpu_count() or 1)
    return "cpu"


def epoch_learning_rate(hp: HyperConfig, epoch: int) -> float:
    """The step size of an epoch: learning_rate * lr_decay^epoch (a resumed run gets the same)."""
    return hp.optimizer.learning_rate * hp.optimizer.lr_decay ** epoch


def build_optimizer(hp: HyperConfig, model: MIND) -> paddle.optimizer.Optimizer:
    lr, name = hp.optimizer.learning_rate, hp.optimizer.class_name
    params = model.parameters()
    if name == "Adam":
        # lazy_mode: only the rows looked up this step get a moment update (see module docstring).
        return paddle.optimizer.Adam(lr, parameters=params, lazy_mode=hp.sparse_embedding)
    if name == "Adagrad":
        return paddle.optimizer.Adagrad(lr, parameters=params)
    return paddle.optimizer.SGD(lr, parameters=params)


def make_valid_evaluator(config: Config) -> Evaluator:
    """Valid Recall@N by exact inner-product search, using the evaluation code infer.py uses.

    Reads the checkpoint the trainer has just written (UserTower is the serving wrapper), so the
    number is the one infer.py would report for that epoch on the valid users.
    """
    from evaluation.evaluate import evaluate_tower
    from evaluation.exact_search import ExactSearch
    from mind.user_tower import UserTower

    r = config.runner
    reader = importlib.import_module(r.infer_reader_path)
    valid = reader.read_eval_dir(r.valid_data_dir, item_count=config.hyper_parameters.item_count)
    at_save = config.model_copy(update={"runner": r.model_copy(update={"infer_load_path": r.model_save_path})})
    n = r.early_stopping_top_n

    def evaluate(model: MIND, epoch: int) -> float:
        tower = UserTower(at_save, epoch)
        ids, vectors = tower.item_embeddings()
        result = evaluate_tower(tower, ExactSearch(ids, vectors).search, valid, [n], r.infer_batch_size)
        return result.metrics[n]["recall"]

    return evaluate


class RunRefused(RuntimeError):
    """model_save_path holds another run's epochs and neither --resume nor --overwrite was given."""


def _epoch_span(epochs: list[int]) -> str:
    if len(epochs) == 1:
        return f"epoch {epochs[0]}"
    if epochs == list(range(epochs[0], epochs[-1] + 1)):
        return f"epochs {epochs[0]}-{epochs[-1]}"
    return "epochs " + ", ".join(map(str, epochs))


def _show_path(path: Path) -> str:
    rel = os.path.relpath(path)
    return rel if len(rel) < len(str(path)) else str(path)


def prepare_run(config: Config, resume: bool, overwrite: bool) -> dict[str, Any]:
    """Decide what happens to what model_save_path already holds; returns this run's manifest.

    resume: keep the epochs and the run_id; overwrite: remove the old run's outputs first;
    neither: refuse a folder with saved epochs (RunRefused), so one folder never mixes two runs.
    """
    root = config.runner.model_save_path
    done = list_epochs(root)
    old = read_run(root)
    if resume and done:
        # Epochs written before run ids existed get one now; their meta.json stays as it was.
        return old or start_run(root, config.path, read_meta(root, done[-1]).get("run_id"))
    if done and not overwrite:
        who = (f"run {old['run_id'][:8]}…, started {old['started']}" if old
               else "no run id: written before run ids")
        raise RunRefused(
            f"{_show_path(root)} holds {_epoch_span(done)} of another run ({who}); use --resume "
            "to continue it, --overwrite to delete them and start over, or set another "
            "runner.model_save_path")
    clear_run(root)
    return start_run(root, config.path)


def _write_log(path: Path, records: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(rec) + "\n" for rec in records))


def _plot_loss(path: Path, records: list[dict[str, Any]]) -> bool:
    """The losses the trainer printed (every print_interval batches) against the epoch, and each
    epoch's mean as a dot at its end; False when matplotlib is missing (nothing drawn)."""
    plt = cli.pyplot()
    if plt is None:
        return False
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7, 4))
    # One line per epoch: the printed loss is the epoch's running mean, which restarts each epoch.
    for i, r in enumerate(records):
        points = [(r["epoch"] + b / r["batches"], loss) for b, loss in r.get(INTERVALS, [])]
        points.append((r["epoch"] + 1, r["train_loss"]))
        ax.plot(*zip(*points), color="tab:blue", lw=1.2,
                label="running mean of the epoch, as printed" if i == 0 else None)
    ax.plot([r["epoch"] + 1 for r in records], [r["train_loss"] for r in records], "o",
            color="tab:orange", label="epoch mean (at its end)")
    # The last epoch's dot sits at the right end: a margin there keeps the whole dot inside.
    first, end = records[0]["epoch"], records[-1]["epoch"] + 1
    ax.set_xlim(first, end + 0.03 * (end - first))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epochs trained")
    ax.set_ylabel("train loss (sampled softmax)")
    ax.set_title(f"MIND training loss, epochs 0-{records[-1]['epoch']}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


# The per-print_interval losses of an epoch record: [[batch, running mean loss], ...].
INTERVALS = "interval_losses"


def _format_record(record: dict[str, Any]) -> str:
    """An epoch record as one log line: losses to 4 decimals, seconds to 2, rates as 2,100."""
    shown = {k: v for k, v in record.items() if k != INTERVALS}
    return " ".join(f"{k} {_figure(k, v)}" for k, v in shown.items())


def _figure(key: str, value: Any) -> str:
    if not isinstance(value, float):
        return str(value)
    if key == "seconds":
        return f"{value:.2f}"
    if key == "learning_rate":
        return f"{value:.3g}"
    if key.endswith("_per_s"):
        return f"{value:,.0f}"
    return f"{value:.4f}"


def _start(config: Config, resume: bool, overwrite: bool, world: World) -> dict[str, Any] | None:
    """prepare_run on rank 0 only; its verdict is broadcast, so a refusal stops every rank.

    Returns the run manifest on rank 0, None on the other ranks (they never write).
    """
    run, failure = None, None
    if world.main:
        try:
            run = prepare_run(config, resume, overwrite)
        except (RunRefused, CheckpointError) as e:
            failure = e
    if distributed.broadcast(int(failure is not None), world):
        raise failure or RunRefused(f"rank {world.rank}: rank 0 refused to start (see its log)")
    return run


def train(
    config: Config,
    resume: bool = False,
    evaluate: Evaluator | None = None,
    log: Callable[[str], None] = print,
    overwrite: bool = False,
    world: World | None = None,
) -> list[dict[str, Any]]:
    """Train for runner.epochs (from the last checkpoint when resume); returns the epoch records.

    Raises RunRefused when model_save_path holds another run's epochs (see prepare_run).
    world: this process's place in a launched data-parallel run (default: from the launcher's
    environment; World() when not launched). runner.train_batch_size is the GLOBAL batch: each
    rank trains on its 1/N of it, and rank 0 alone logs, evaluates and saves.
    """
    r, hp = config.runner, config.hyper_parameters
    world = world or distributed.detect()
    try:
        rows = world.shard(r.train_batch_size)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    # Ranks on one machine share its cores (0 = every core, split between them).
    device = select_device(r.use_gpu, r.cpu_threads or max(1, (os.cpu_count() or 1) // world.local_size),
                           gpu_id=world.local_rank if world.launched else None)
    distributed.init(world)
    if not world.main:
        log = _quiet
    reader = importlib.import_module(r.train_reader_path)
    sequences = reader.read_train_dir(r.train_data_dir, item_count=hp.item_count)
    item_map = data_item_map(config)
    counts = click_counts(sequences, hp.item_count)
    sampler = reader.TrainSampler(
        sequences, r.train_batch_size, maxlen=hp.maxlen, seed=r.seed,
        samples_per_epoch=r.samples_per_epoch, min_len=r.min_len,
    )
    init_seed(r.seed)
    model = MIND(hp)
    model.data_shard = (world.rank, world.size)
    optimizer = build_optimizer(hp, model)
    root = r.model_save_path
    run = _start(config, resume, overwrite, world)
    log_path = root / LOG_FILE

    records: list[dict[str, Any]] = []
    best, bad_epochs, start = -math.inf, 0, 0
    done = list_epochs(root) if resume else []
    if done:
        meta, state = restore(root, done[-1], model, optimizer)
        set_rng_state(state["rng"])
        best, bad_epochs = state["best"], state["bad_epochs"]
        start = done[-1] + 1
        # Keep the log lines of the epochs we resume from (a kill may have come after the
        # checkpoint but before its log line: meta.json holds that line too).
        if log_path.exists():
            records = [json.loads(x) for x in log_path.read_text().splitlines() if x.strip()]
        records = [x for x in records if x["epoch"] < done[-1]] + [meta["record"]]
        log(f"resumed from {root / str(done[-1])}")
        _same_item_map(meta, item_map, root / str(done[-1]))
    elif resume:
        log(f"--resume: no checkpoint under {root}, starting from scratch")
    if distributed.all_mean([float(start != distributed.broadcast(start, world))], world)[0]:
        raise CheckpointError(f"the ranks resume from different epochs: {root} must be one "
                              "folder every rank sees (a shared filesystem across nodes)")
    if done and state.get("stopped"):
        log("that run had stopped early; nothing to do")
        return records
    if done and start >= r.epochs:
        log(f"nothing to do: {_epoch_span(done)} already trained (runner.epochs={r.epochs}); "
            "raise runner.epochs to train more")
        return records
    # Built after restore, so DataParallel's start-up broadcast of rank 0's weights is a no-op.
    net = distributed.wrap(model, world)

    log(f"device {device}; {len(sequences)} users, {sampler.num_users} trainable, "
        f"{len(sampler)} batches x {r.train_batch_size} per epoch, item_count {hp.item_count}"
        + (f"; {world.size} ranks x {rows.stop - rows.start} rows" if world.size > 1 else ""))
    steps, plotted = 0, False
    for epoch in range(start, r.epochs):
        model.train()
        optimizer.set_lr(epoch_learning_rate(hp, epoch))
        t_epoch = t_print = time.perf_counter()
        total, seen, intervals = 0.0, 0, []
        for i, (hist, target) in enumerate(sampler.epoch(epoch)):
            loss = net(paddle.to_tensor(hist[rows]), paddle.to_tensor(target[rows]))
            # The mean of the ranks' shard losses is the loss of the global batch. Reduced
            # before backward() on purpose: a dead peer then fails here, as a Python error,
            # not in the gradient all-reduce inside backward(), where gloo aborts the process.
            total += distributed.all_mean([float(loss)], world)[0]
            loss.backward()
            optimizer.step()
            optimizer.clear_grad()
            seen += 1
            steps += 1
            distributed.crash_hook(world, steps)
            if seen % r.print_interval == 0:
                now = time.perf_counter()
                sps = r.print_interval * r.train_batch_size / (now - t_print)
                t_print = now
                intervals.append([seen, round(total / seen, 6)])
                log(f"epoch {epoch} batch {seen}/{len(sampler)} loss {total / seen:.4f} "
                    f"{sps:,.0f} samples/s")
        seconds = time.perf_counter() - t_epoch
        record: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": total / max(seen, 1),
            "batches": seen,
            "seconds": round(seconds, 3),
            "samples_per_s": round(seen * r.train_batch_size / seconds, 1),
            "learning_rate": epoch_learning_rate(hp, epoch),
            INTERVALS: intervals,
        }
        stop = False
        if world.main:
            stop, best, bad_epochs = _save_epoch(config, run, epoch, model, optimizer, record,
                                                 counts, best, bad_epochs, evaluate, item_map)
            records.append(record)
            _write_log(log_path, records)
            plotted = _plot_loss(root / PLOT_FILE, records)
            log(_format_record(record))
        # Rank 0's decision, and the point where the other ranks wait for its checkpoint.
        if distributed.broadcast(int(stop), world):
            log(f"early stopping: no better valid Recall@{r.early_stopping_top_n} for "
                f"{bad_epochs} epochs (best {best:.4f})")
            break
    if records and world.main:
        log(f"checkpoints: {_show_path(root)}/<epoch>/ ({_epoch_span(list_epochs(root))}); "
            f"log: {_show_path(log_path)}; loss plot: "
            + (_show_path(root / PLOT_FILE) if plotted else "skipped, matplotlib is not installed"))
    return records


def data_item_map(config: Config) -> Path | None:
    """The data's item_map.tsv (beside train/, as data.sh writes it), checked against item_count;
    None when the data has none (its ids are then the only names of its items)."""
    path = Path(config.runner.train_data_dir).parent / ITEM_MAP_FILE
    if not path.is_file():
        return None
    with open(path, "rb") as f:
        rows = sum(1 for _ in f) - 1
    if rows != config.hyper_parameters.item_count - 1:
        raise ConfigError(f"{path} has {rows} items but hyper_parameters.item_count is "
                          f"{config.hyper_parameters.item_count} (ids 1..{rows} + padding 0 "
                          f"expected): the map belongs to other data, or item_count is wrong")
    return path


def _same_item_map(meta: dict[str, Any], item_map: Path | None, epoch_dir: Path) -> None:
    """--resume must train on the catalogue the run started with."""
    had = meta.get("files", {}).get(ITEM_MAP_FILE)
    now = None if item_map is None else _file_sha256(item_map)
    if had != now:
        raise CheckpointError(f"{epoch_dir} was trained with "
                              + ("another item_map.tsv" if had and now else
                                 "an item_map.tsv" if had else "no item_map.tsv")
                              + f" than the data has now ({item_map or 'none'}): resume on the "
                              "data the run started with, or start over with --overwrite")


def _quiet(line: str) -> None:
    """The log of ranks other than 0: rank 0 speaks for the run."""


def _save_epoch(
    config: Config, run: dict[str, Any], epoch: int, model: MIND,
    optimizer: paddle.optimizer.Optimizer, record: dict[str, Any], counts: np.ndarray,
    best: float, bad_epochs: int, evaluate: Evaluator | None, item_map: Path | None = None,
) -> tuple[bool, float, int]:
    """Checkpoint the epoch (rank 0), evaluate it if asked; returns (stop, best, bad_epochs)."""
    r = config.runner
    state = {"rng": rng_state(), "best": best, "bad_epochs": bad_epochs, "stopped": False}
    extra = {"run_id": run["run_id"], "seed": r.seed, "train_loss": record["train_loss"],
             "record": record}
    save_checkpoint(r.model_save_path, epoch, model, optimizer, config, extra,
                    item_counts=counts, state=state, item_map=item_map)
    if evaluate is None:
        return False, best, bad_epochs
    score = evaluate(model, epoch)
    # Evaluating builds a model, which draws from the RNGs: put them back, so training goes on
    # as a --resume from this checkpoint would (and as the ranks that did not evaluate do).
    set_rng_state(state["rng"])
    record[f"valid_recall@{r.early_stopping_top_n}"] = score
    best, bad_epochs = (score, 0) if score > best else (best, bad_epochs + 1)
    stop = r.early_stopping_patience > 0 and bad_epochs >= r.early_stopping_patience
    # Re-save with the updated early-stopping state so --resume continues the count.
    state.update(best=best, bad_epochs=bad_epochs, stopped=stop)
    save_checkpoint(r.model_save_path, epoch, model, optimizer, config, {**extra, "record": record},
                    item_counts=counts, state=state, item_map=item_map)
    return stop, best, bad_epochs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-m", "--config", required=True, metavar="CONFIG.yaml",
                    help="config YAML, e.g. mind/config.yaml (relative paths in it resolve "
                         "against its folder)")
    ap.add_argument("-o", "--override", "--opt", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config key, e.g. -o runner.epochs=2 (repeatable)")
    ap.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    ap.add_argument("--overwrite", action="store_true",
                    help="delete the previous run's epochs, log and plot in model_save_path first")
    cli.add_debug_option(ap)
    args = ap.parse_args(argv)
    world = distributed.detect()
    code, error = 0, None
    try:
        if args.resume and args.overwrite:
            raise ConfigError("--resume and --overwrite exclude each other: continue the run or "
                              "start over, not both")
        config = load_config(args.config, args.override)
        evaluate = None
        if config.runner.valid_data_dir is not None and config.runner.early_stopping_patience > 0:
            evaluate = make_valid_evaluator(config)
        train(config, resume=args.resume, evaluate=evaluate, overwrite=args.overwrite,
              world=world)
    except (*cli.KNOWN_ERRORS, RunRefused) as e:
        # Known mistakes: one line, no traceback (unless --debug / MIND_DEBUG=1).
        code, error = cli.EXIT_KNOWN, cli.explain(e, cli.debug_wanted(argv))
    except distributed.PeerLost as e:
        code, error = 1, str(e)
    except KeyboardInterrupt:  # a requested stop: every finished epoch is saved
        code, error = 130, "stopped (Ctrl-C); --resume continues from the last saved epoch"
    except Exception as e:
        if not world.launched:
            raise
        # A launched rank: the traceback for its log, then one line naming the rank, last, so
        # that `python -m mind.distributed check` shows it.
        traceback.print_exc()
        code, error = 1, distributed.describe(e, world)
    if error:
        print(f"trainer.py: {error}", file=sys.stderr, flush=True)
    distributed.write_status(world, code, error)
    return code


if __name__ == "__main__":
    sys.exit(main())
