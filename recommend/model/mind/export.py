"""The user tower of a saved epoch as a static inference model, for Paddle Inference.

    cd recommend/model
    python -u infer.py -m mind/config.yaml --export /srv/mind_tower             # latest epoch
    python -u infer.py -m mind/config.yaml --export /srv/mind_tower --epoch 3
    python -u infer.py -m mind/config.yaml --export DIR -o runner.infer_load_path=/runs/a

DIR gets the program and weights paddle.jit.save writes (tower.json + tower.pdiparams on
Paddle 3's PIR) and tower_meta.json: the model identity (UserTower.identity(), the dict a
collection records), what serving needs without the trainer (maxlen, item_count,
num_interests, dim, the input and output signature) and the sha256 of both files.
mind.inference_tower runs it. PaddleRec's MIND has no export of its user tower (its issues
#552 and #737); here the export is `MIND.interests` as it is, whatever extractor computes it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import paddle
from paddle.static import InputSpec

from mind.checkpoint import CheckpointError, checkpoint_root, list_epochs
from mind.config import Config
from mind.inference_tower import FORMAT_VERSION, META_FILE
from mind.user_tower import UserTower
from recdata.itemmap import file_sha256

PREFIX = "tower"  # paddle.jit.save appends .json / .pdmodel and .pdiparams
INPUT_NAME = "hist"
# Where the service keeps its own export of a served epoch: beside the checkpoints, outside the
# numbered folders (clear_run refuses folders holding files the trainer did not write).
CACHE_DIR = "inference"
# Exports the cache keeps (~the weights' size each): the current one and the newest others, for
# replicas still on the previous model during a roll-out. Older ones go when a new one is made.
KEEP_EXPORTS = 3
STALE_TEMP_SECONDS = 3600  # a temporary folder this old belongs to an export that crashed


class ExportError(RuntimeError):
    """The export folder cannot be written, or holds something that is not an export."""


class _Interests(paddle.nn.Layer):
    """The tower's forward as a Layer of its own, so jit.save exports `MIND.interests` (the
    serving path) rather than `MIND.forward` (the training loss)."""

    def __init__(self, model: paddle.nn.Layer):
        super().__init__()
        self.model = model

    def forward(self, hist: paddle.Tensor) -> paddle.Tensor:
        return self.model.interests(hist)


def export_key(tower: UserTower) -> dict[str, Any]:
    """What makes two exports the same program and weights: the model identity (but the
    config's path, which only names it), the hyper-parameters (dynamic_k, the extractor, ...
    change the program, not the weights), this format and Paddle's version."""
    identity = {k: v for k, v in tower.identity().items() if k != "config"}
    return {"format_version": FORMAT_VERSION, "paddle": paddle.__version__, "identity": identity,
            "hyper_parameters": tower.config.hyper_parameters.model_dump(mode="json",
                                                                         by_alias=True)}


def _write(tower: UserTower, out: Path) -> None:
    """jit.save the tower into the empty folder ``out`` and write its meta last."""
    spec = [InputSpec([None, tower.maxlen], "int64", name=INPUT_NAME)]
    layer = _Interests(tower.model)
    layer.eval()
    # full_graph: the whole method as one static program (AST conversion), never a partial
    # capture that would leave Python in the serving path.
    static = paddle.jit.to_static(layer, input_spec=spec, full_graph=True)
    paddle.jit.save(static, str(out / PREFIX), input_spec=spec)
    params = out / f"{PREFIX}.pdiparams"
    program = next((out / f"{PREFIX}{ext}" for ext in (".json", ".pdmodel")
                    if (out / f"{PREFIX}{ext}").is_file()), None)
    if program is None or not params.is_file():
        raise ExportError(f"paddle.jit.save wrote {sorted(p.name for p in out.iterdir())} "
                          f"into {out}, not a program and {params.name}")
    meta = {
        **export_key(tower),
        "identity": tower.identity(),
        "exported": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "maxlen": tower.maxlen, "item_count": tower.item_count,
        "num_interests": tower.num_interests, "dim": tower.dim,
        "input": {"name": INPUT_NAME, "dtype": "int64", "shape": [-1, tower.maxlen]},
        "output": {"dtype": "float32", "shape": [-1, tower.num_interests, tower.dim]},
        "model_file": program.name, "params_file": params.name,
        "files": {p.name: file_sha256(p) for p in (program, params)},
    }
    (out / META_FILE).write_text(json.dumps(meta, indent=1) + "\n")


def _publish(tower: UserTower, out: Path, replace: bool) -> Path:
    """Write the export into a folder beside ``out``, then rename it into place, so a reader
    sees a whole export or none. Not ``replace``: a complete export already there wins (replicas
    starting at once make the same one)."""
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp, old = out.with_name(f".{out.name}.tmp-{tag}"), out.with_name(f".{out.name}.old-{tag}")
    try:
        tmp.mkdir(parents=True)
    except OSError as e:
        raise ExportError(f"cannot write the export {out} ({e.strerror or e})") from None
    try:
        _write(tower, tmp)
        if replace and out.exists():
            out.rename(old)
        try:
            tmp.rename(out)
        except OSError:
            if replace or not (out / META_FILE).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not out.exists():  # the new one failed to land: keep the old
            old.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    return out


def export_tower(tower: UserTower, out_dir: str | Path) -> Path:
    """Write the export of ``tower`` to ``out_dir`` (replacing an earlier export there)."""
    out = Path(out_dir).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise ExportError(f"--export {out}: is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / META_FILE).is_file():
        raise ExportError(f"--export {out}: the folder holds files that are not an export "
                          f"(no {META_FILE}); name an empty or new folder")
    return _publish(tower, out, replace=True)


def export_epoch(config: Config, out_dir: str | Path, epoch: int | None = None) -> Path:
    """Export a saved epoch of ``config`` (default: the last one in [infer_start_epoch,
    infer_end_epoch], the range infer.py evaluates)."""
    root, runner = checkpoint_root(config), config.runner
    saved = list_epochs(root)
    if epoch is None:
        chosen = [e for e in saved if runner.infer_start_epoch <= e <= runner.infer_end_epoch]
        if not chosen:
            raise CheckpointError(
                f"no saved epoch in [{runner.infer_start_epoch}, {runner.infer_end_epoch}] under "
                f"{root} (found {saved or 'none'}); train first, or pick one with --epoch")
        epoch = chosen[-1]
    elif epoch not in saved:
        raise CheckpointError(f"--epoch {epoch}: no saved epoch {epoch} under {root} "
                              f"(found {saved or 'none'})")
    return export_tower(UserTower(config, epoch), out_dir)


def cached_export(tower: UserTower) -> Path:
    """The export of ``tower`` the service runs, made on first use under
    {checkpoint root}/inference/: one folder per export key, so a folder that exists is never
    stale, and replicas starting at once each rename a complete export into place (first wins)."""
    key = export_key(tower)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    out = checkpoint_root(tower.config) / CACHE_DIR / f"{tower.epoch}-{digest}"
    if (out / META_FILE).is_file():
        return out
    _publish(tower, out, replace=False)
    prune_exports(out.parent, keep=out)
    return out


def prune_exports(cache: Path, keep: Path, count: int = KEEP_EXPORTS) -> list[Path]:
    """Delete all but the ``count`` newest exports under ``cache`` (``keep`` always stays) and
    temporary folders of crashed exports; the removed paths. A process already serving a
    removed export is unaffected: its predictor holds the program and weights."""
    def made(p: Path) -> float:
        try:
            return (p / META_FILE).stat().st_mtime
        except OSError:
            return 0.0

    exports = sorted((p for p in cache.iterdir() if p.is_dir() and not p.name.startswith(".")
                      and p != keep and (p / META_FILE).is_file()), key=made, reverse=True)
    now = time.time()
    stale = [p for p in cache.iterdir() if p.name.startswith(".") and p.is_dir()
             and now - p.stat().st_mtime > STALE_TEMP_SECONDS]
    removed = exports[count - 1:] + stale
    for p in removed:
        shutil.rmtree(p, ignore_errors=True)
    return removed
