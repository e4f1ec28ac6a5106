"""Epoch checkpoints: `{root}/{epoch}/` = rec.pdparams, rec.pdopt, item_counts.npy, state.pkl, meta.json.

A checkpoint is written into a temp folder beside its final place, every file fsynced, then renamed
into place, so a kill at any moment leaves either the whole checkpoint or none of it. meta.json
records the sha256 of every other file; loading verifies them and raises CheckpointError on a
missing, partial or corrupt checkpoint.

A training run owns its `{root}`: `{root}/run.json` names it (run_id, start time, config path) and
every epoch's meta.json carries the same run_id, so "latest" and "best" always come from one run.
`read_run` reads the manifest; `clear_run` removes what the trainer wrote, and nothing else.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import paddle

from mind.config import Config
from mind.network import MIND

FORMAT_VERSION = 1
MODEL_FILE = "rec.pdparams"
OPT_FILE = "rec.pdopt"
COUNTS_FILE = "item_counts.npy"
STATE_FILE = "state.pkl"  # RNG states etc. needed for an exact --resume
META_FILE = "meta.json"
# The data's item map (recdata.itemmap), copied into every epoch: the keys and metadata the
# model's item ids stand for travel with it, checksummed like the weights.
ITEM_MAP_FILE = "item_map.tsv"
CHECKPOINT_FILES = frozenset({MODEL_FILE, OPT_FILE, COUNTS_FILE, STATE_FILE, META_FILE,
                              ITEM_MAP_FILE})
RUN_FILE = "run.json"  # the run manifest: run_id, started, config
LOG_FILE = "train_log.jsonl"
PLOT_FILE = "loss.png"
# Temp and trash folders save_checkpoint makes beside an epoch (left behind by a kill).
_TEMP_DIR = re.compile(r"\.\d+\.(tmp|old)-.+")


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, incomplete, corrupt or does not fit the config."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(
    root: str | Path,
    epoch: int,
    model: MIND,
    optimizer: paddle.optimizer.Optimizer,
    config: Config,
    extra: dict[str, Any],
    *,
    item_counts: np.ndarray | None = None,
    state: dict[str, Any] | None = None,
    item_map: Path | None = None,
) -> Path:
    """Write `{root}/{epoch}/` atomically and return it (an existing one is replaced).

    extra: JSON-able facts for meta.json (e.g. seed, train_loss). item_counts: click counts per
    item id (int64 [item_count]). state: picklable trainer state (RNG states, ...) for --resume.
    item_map: the data's item_map.tsv, copied in (its sha256 is in meta's files).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / str(epoch)
    tmp = Path(tempfile.mkdtemp(prefix=f".{epoch}.tmp-", dir=root))
    try:
        paddle.save(model.state_dict(), str(tmp / MODEL_FILE))
        paddle.save(_rename_opt_state(model, optimizer.state_dict(), to_portable=True),
                    str(tmp / OPT_FILE))
        if item_counts is not None:
            np.save(tmp / COUNTS_FILE, np.asarray(item_counts, dtype=np.int64))
        if state is not None:
            with open(tmp / STATE_FILE, "wb") as f:
                pickle.dump(state, f)
        if item_map is not None:
            shutil.copyfile(item_map, tmp / ITEM_MAP_FILE)
        files = sorted(p.name for p in tmp.iterdir())
        meta = {
            "format_version": FORMAT_VERSION,
            "epoch": epoch,
            **extra,
            "config": config.to_dict(),
            "files": {name: _sha256(tmp / name) for name in files},
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=1, sort_keys=True))
        for p in tmp.iterdir():
            _fsync(p)
        _fsync(tmp)
        if final.exists():
            # Replace: move the old one aside first (rename cannot overwrite a non-empty folder).
            trash = Path(tempfile.mkdtemp(prefix=f".{epoch}.old-", dir=root))
            os.rename(final, trash / "old")
            os.rename(tmp, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.rename(tmp, final)
        _fsync(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _rename_opt_state(model: MIND, state: dict[str, Any], to_portable: bool) -> dict[str, Any]:
    """Optimizer state keys start with the parameter's auto-generated name ("mind_3.w_0_moment1_0"),
    which depends on how many layers the process built before; store them under the structured
    name ("bilinear_moment1_0") instead, and map back to this model's names on load."""
    pairs = [(p.name, name) for name, p in model.named_parameters()]
    if not to_portable:
        pairs = [(b, a) for a, b in pairs]
    pairs.sort(key=lambda ab: -len(ab[0]))  # longest prefix first
    out: dict[str, Any] = {}
    for key, value in state.items():
        for old, new in pairs:
            if key.startswith(old + "_"):
                key = new + key[len(old):]
                break
        out[key] = value
    return out


def list_epochs(root: str | Path) -> list[int]:
    """Epochs with a complete checkpoint under root, ascending (temp folders never count)."""
    root = Path(root)
    if not root.is_dir():
        return []
    out = []
    for p in root.iterdir():
        if p.is_dir() and p.name.isdigit() and (p / META_FILE).is_file():
            try:
                files = json.loads((p / META_FILE).read_text())["files"]
            except (ValueError, KeyError, OSError):
                continue
            if all((p / name).is_file() for name in files):
                out.append(int(p.name))
    return sorted(out)


def read_meta(root: str | Path, epoch: int) -> dict[str, Any]:
    """meta.json of `{root}/{epoch}` after verifying every file's checksum."""
    d = Path(root) / str(epoch)
    try:
        meta = json.loads((d / META_FILE).read_text())
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {d} ({META_FILE} missing)") from None
    except (ValueError, OSError) as e:
        raise CheckpointError(f"checkpoint {d}: unreadable {META_FILE}: {e}") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {d}: format_version {meta.get('format_version')!r}, "
            f"this code reads {FORMAT_VERSION}"
        )
    for name, digest in meta.get("files", {}).items():
        if not (d / name).is_file():
            raise CheckpointError(f"checkpoint {d}: {name} is missing (partial checkpoint)")
        if _sha256(d / name) != digest:
            raise CheckpointError(f"checkpoint {d}: {name} does not match its checksum (corrupt)")
    return meta


def _load_file(d: Path, name: str) -> Any:
    try:
        return paddle.load(str(d / name))
    except Exception as e:  # checksum passed, so this is a version/format problem
        raise CheckpointError(f"checkpoint {d}: cannot load {name}: {e}") from e


def _set_model_state(model: MIND, state: dict[str, Any], d: Path) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    if missing:
        raise CheckpointError(f"checkpoint {d}: no values for {', '.join(missing)}")
    for key, value in own.items():
        if list(state[key].shape) != list(value.shape):
            raise CheckpointError(
                f"checkpoint {d}: {key} has shape {list(state[key].shape)}, the config expects "
                f"{list(value.shape)} (was it trained with another item_count/embedding_dim?)"
            )
    model.set_state_dict(state)


def restore(
    root: str | Path, epoch: int, model: MIND, optimizer: paddle.optimizer.Optimizer | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Load weights (and optimizer state) of `{root}/{epoch}` in place; returns (meta, state)."""
    d = Path(root) / str(epoch)
    meta = read_meta(root, epoch)
    _set_model_state(model, _load_file(d, MODEL_FILE), d)
    if optimizer is not None:
        optimizer.set_state_dict(_rename_opt_state(model, _load_file(d, OPT_FILE), to_portable=False))
    state: dict[str, Any] = {}
    if (d / STATE_FILE).is_file():
        with open(d / STATE_FILE, "rb") as f:
            state = pickle.load(f)
    return meta, state


# ------------------------------------------------------------------------------------ runs
def read_run(root: str | Path) -> dict[str, Any] | None:
    """The run manifest of `root` ({"run_id", "started", "config"}), None if there is none.

    Checkpoints written before run ids existed have no manifest; they still load.
    """
    try:
        run = json.loads((Path(root) / RUN_FILE).read_text())
    except FileNotFoundError:
        return None
    except (ValueError, OSError) as e:
        raise CheckpointError(f"{Path(root) / RUN_FILE}: unreadable run manifest: {e}") from None
    if not isinstance(run, dict) or not isinstance(run.get("run_id"), str):
        raise CheckpointError(f"{Path(root) / RUN_FILE}: no run_id")
    return run


def start_run(root: str | Path, config_path: str | Path | None,
              run_id: str | None = None) -> dict[str, Any]:
    """Write `{root}/run.json` for a new run (or keep `run_id`, when resuming); returns it."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    run = {
        "run_id": run_id or uuid.uuid4().hex,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": None if config_path is None else str(config_path),
    }
    tmp = root / f".{RUN_FILE}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(run, indent=1) + "\n")
    os.replace(tmp, root / RUN_FILE)
    return run


def _is_checkpoint_dir(p: Path) -> bool:
    """An epoch folder the trainer wrote: a number holding only checkpoint files."""
    return p.is_dir() and p.name.isdigit() and all(c.name in CHECKPOINT_FILES for c in p.iterdir())


def clear_run(root: str | Path) -> list[Path]:
    """Remove what the trainer writes under `root` (epoch folders, temp folders of a killed save,
    log, plot, manifest) and return what was removed. Raises CheckpointError, before removing
    anything, if a numbered folder holds other files: we never delete what we did not write."""
    root = Path(root)
    if not root.is_dir():
        return []
    numbered = [p for p in root.iterdir() if p.is_dir() and p.name.isdigit()]
    foreign = [p for p in numbered if not _is_checkpoint_dir(p)]
    if foreign:
        raise CheckpointError(f"{foreign[0]} holds files the trainer does not write; "
                              "move it away first")
    removed = numbered + [p for p in root.iterdir() if p.is_dir() and _TEMP_DIR.fullmatch(p.name)]
    for p in removed:
        shutil.rmtree(p)
    for name in (LOG_FILE, PLOT_FILE, RUN_FILE):
        if (root / name).is_file():
            (root / name).unlink()
            removed.append(root / name)
    return sorted(removed)


def checkpoint_root(config: Config) -> Path:
    """Where infer.py and the service read checkpoints: infer_load_path, else model_save_path."""
    return config.runner.infer_load_path or config.runner.model_save_path


def load_model(config: Config, epoch: int) -> MIND:
    """The MIND of a saved epoch, weights verified, in eval mode."""
    model = MIND(config.hyper_parameters)
    restore(checkpoint_root(config), epoch, model, None)
    model.eval()
    return model


def load_item_counts(config: Config, epoch: int) -> np.ndarray:
    """int64 [item_count]: training click counts per item id saved with the epoch."""
    root = checkpoint_root(config)
    read_meta(root, epoch)
    path = Path(root) / str(epoch) / COUNTS_FILE
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path.parent} has no {COUNTS_FILE}")
    counts = np.load(path)
    if counts.shape != (config.hyper_parameters.item_count,):
        raise CheckpointError(
            f"{path}: shape {counts.shape}, expected ({config.hyper_parameters.item_count},)"
        )
    return counts.astype(np.int64, copy=False)


def item_map_path(config: Config, epoch: int) -> Path | None:
    """The epoch's copy of the data's item_map.tsv (checksum verified); None if it has none."""
    root = checkpoint_root(config)
    if ITEM_MAP_FILE not in read_meta(root, epoch).get("files", {}):
        return None
    return Path(root) / str(epoch) / ITEM_MAP_FILE
