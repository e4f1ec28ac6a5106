"""An exported user tower (mind.export) run by Paddle Inference: histories in, interests out.

    from mind.inference_tower import InferenceTower
    tower = InferenceTower("/srv/mind_tower")          # a folder `infer.py --export` wrote
    vectors = tower.interests([[43, 23, 65], [675]])   # float32 [2, K, dim]

Needs paddle and numpy only: neither the trainer nor the network code (mind.network) is
imported, so the tower serves outside the training code. Raw histories become model input
by the same rules as UserTower.interests (mind.reader.known_items, pad_histories).
The service runs it with TOWER_RUNTIME=inference (`served_by_inference`).
"""

from __future__ import annotations

import json
import logging
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from paddle import inference

from mind.reader import known_items, pad_histories
from recdata.itemmap import file_sha256

if TYPE_CHECKING:
    from mind.user_tower import UserTower

# The export's layout, defined here (mind.export, its writer, imports the network).
META_FILE = "tower_meta.json"
FORMAT_VERSION = 1

log = logging.getLogger(__name__)


class InferenceTower:
    """The exported tower of one epoch on a Paddle Inference predictor (CPU)."""

    def __init__(self, export_dir: str | Path, *, onednn: bool = False, ir_optim: bool = True,
                 threads: int = 1):
        """onednn / ir_optim / threads: Paddle Inference's CPU options (the defaults measured
        fastest for passes of 1-16 users: bench/tower_bench.py)."""
        self.export_dir = Path(export_dir)
        meta_path = self.export_dir / META_FILE
        if not meta_path.is_file():
            raise FileNotFoundError(f"{self.export_dir}: no exported tower ({META_FILE} missing;"
                                    " write one with infer.py --export)")
        meta = json.loads(meta_path.read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{meta_path}: format_version {meta.get('format_version')!r}, "
                             f"this code reads {FORMAT_VERSION}")
        for name, digest in meta["files"].items():
            if file_sha256(self.export_dir / name) != digest:
                raise ValueError(f"{self.export_dir / name} does not match its checksum (corrupt)")
        self.meta = meta
        self.maxlen = int(meta["maxlen"])
        self.item_count = int(meta["item_count"])
        self.num_interests = int(meta["num_interests"])
        self.dim = int(meta["dim"])
        self.epoch = meta["identity"].get("epoch")
        config = inference.Config(str(self.export_dir / meta["model_file"]),
                                  str(self.export_dir / meta["params_file"]))
        config.disable_gpu()
        config.switch_ir_optim(ir_optim)
        if onednn:
            config.enable_mkldnn()
        else:
            config.disable_mkldnn()
        config.set_cpu_math_library_num_threads(threads)
        config.disable_glog_info()
        self._predictor = inference.create_predictor(config)
        self._input = self._predictor.get_input_handle(self._predictor.get_input_names()[0])
        self._output = self._predictor.get_output_handle(self._predictor.get_output_names()[0])
        # A predictor holds its tensors: one run at a time (the service's model lock does the
        # same for the dygraph tower).
        self._lock = threading.Lock()

    def known_items(self, history: Sequence[int]) -> np.ndarray:
        """The ids of ``history`` the model has an embedding for, in click order."""
        return known_items(history, self.item_count)

    def interests(self, histories: Sequence[Sequence[int]]) -> np.ndarray:
        """float32 [B, K, dim] interest vectors for a batch of raw click histories."""
        hist = pad_histories([self.known_items(h) for h in histories], self.maxlen)
        if not len(hist):  # the program's batch axis is dynamic, but not empty
            return np.zeros((0, self.num_interests, self.dim), dtype=np.float32)
        with self._lock:
            self._input.reshape(list(hist.shape))
            self._input.copy_from_cpu(hist)
            self._predictor.run()
            return np.asarray(self._output.copy_to_cpu(), dtype=np.float32)

    def identity(self) -> dict[str, Any]:
        """The model identity recorded at export: the dict UserTower.identity() gave."""
        return dict(self.meta["identity"])


class InferenceServedTower:
    """A loaded UserTower whose forward pass runs on Paddle Inference. Items, popularity, the
    catalogue and the identity stay the UserTower's own, so a collection's identity check is
    the dygraph tower's exactly."""

    def __init__(self, tower: UserTower, runtime: InferenceTower):
        self.tower, self.runtime = tower, runtime

    def interests(self, histories: Sequence[Sequence[int]]) -> np.ndarray:
        return self.runtime.interests(histories)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.tower, name)


def served_by_inference(tower: UserTower, **options: Any) -> InferenceServedTower:
    """``tower`` with its forward on Paddle Inference, from the export the service keeps beside
    the checkpoint (mind.export.cached_export: made on first start, remade when the model or
    its hyper-parameters change); from a temporary one when the model's folder is read-only."""
    from mind.export import ExportError, cached_export, export_tower  # imports the network

    try:
        runtime = InferenceTower(cached_export(tower), **options)
    except ExportError as exc:
        log.warning("%s; exporting the user tower for this process only", exc)
        # The predictor holds the program and weights once created: the files may go.
        with tempfile.TemporaryDirectory(prefix="mind_tower_") as tmp:
            runtime = InferenceTower(export_tower(tower, Path(tmp) / "tower"), **options)
    if runtime.identity() != {**tower.identity(), "config": runtime.identity().get("config")}:
        raise ValueError(f"{runtime.export_dir} holds another model than {tower.identity()}")
    return InferenceServedTower(tower, runtime)
