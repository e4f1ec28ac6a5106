"""The trained model as serving and evaluation need it: histories in, interest vectors out.

Wraps a MIND checkpoint behind numpy in/out, so callers (infer.py, the recall
service) never touch paddle tensors, and so the rules for turning a raw click
history into model input live in one place: ids the model does not know are
ignored, the last ``maxlen`` known clicks are used, the batch runs at once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import paddle

from mind.checkpoint import (
    ITEM_MAP_FILE,
    checkpoint_root,
    item_map_path,
    list_epochs,
    load_item_counts,
    load_model,
    read_meta,
)
from mind.config import Config, load_config
from mind.reader import known_items, pad_histories
from recdata.itemmap import ItemMap, read_item_map


class UserTower:
    """A loaded MIND model in eval mode plus its training click counts."""

    def __init__(self, config: Config, epoch: int):
        self.config = config
        self.epoch = epoch
        self.model = load_model(config, epoch)
        self.model.eval()
        hp = config.hyper_parameters
        self.item_count = int(hp.item_count)
        self.maxlen = int(hp.maxlen)
        self.dim = int(hp.embedding_dim)
        self.num_interests = int(hp.interest_num)
        self._identity: dict[str, Any] | None = None
        # Keys and metadata of the items, when the data had an item_map.tsv (None: ids only).
        path = item_map_path(config, epoch)
        self.catalogue: ItemMap | None = None if path is None else read_item_map(path)
        if self.catalogue is not None and len(self.catalogue) != self.item_count - 1:
            raise ValueError(f"{path}: {len(self.catalogue)} items for item_count "
                             f"{self.item_count}")
        counts = np.asarray(load_item_counts(config, epoch), dtype=np.int64)
        counts[0] = -1  # padding is never popular
        # Stable sort: among equally popular items the smaller id (more frequent in
        # the ComiRec remapping) comes first.
        self._popular = np.argsort(-counts, kind="stable")
        self._popular = self._popular[counts[self._popular] >= 0]

    @classmethod
    def load(cls, config_path: str | Path, epoch: int | None = None) -> "UserTower":
        """Load the checkpoint of ``epoch`` (default: the latest complete one)."""
        config = load_config(config_path)
        if epoch is None:
            epochs = list_epochs(config.runner.model_save_path)
            if not epochs:
                raise FileNotFoundError(
                    f"no saved model under {config.runner.model_save_path}: train first "
                    f"(cd recommend/model && python -u trainer.py -m {config_path})"
                )
            epoch = epochs[-1]
        return cls(config, epoch)

    def known_items(self, history: Sequence[int]) -> np.ndarray:
        """The ids of ``history`` the model has an embedding for, in click order."""
        return known_items(history, self.item_count)

    def interests(self, histories: Sequence[Sequence[int]]) -> np.ndarray:
        """float32 [B, K, dim] interest vectors for a batch of raw click histories."""
        hist = pad_histories([self.known_items(h) for h in histories], self.maxlen)
        with paddle.no_grad():
            out = self.model.interests(paddle.to_tensor(hist, dtype="int64"))
        return np.asarray(out.numpy(), dtype=np.float32)

    def item_embeddings(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids 1..item_count-1, their float32 vectors); row 0 is padding and is never served."""
        table = np.asarray(self.model.item_embeddings(), dtype=np.float32)
        ids = np.arange(1, self.item_count, dtype=np.int64)
        return ids, np.ascontiguousarray(table[1:])

    def identity(self) -> dict[str, Any]:
        """Which model this is, as the item store records it beside the items it serves:
        checksums decide (of the item table and of the saved weights), the rest is for
        messages."""
        if self._identity is None:
            _, vectors = self.item_embeddings()
            meta = read_meta(checkpoint_root(self.config), self.epoch)
            self._identity = {
                "config": str(self.config.path) if self.config.path else None,
                "epoch": self.epoch,
                "run_id": meta.get("run_id"),
                "items_sha256": hashlib.sha256(vectors.tobytes()).hexdigest(),
                "model_sha256": meta.get("files", {}).get("rec.pdparams"),
                # Which keys the ids stand for: another catalogue's keys are another model.
                "item_map_sha256": meta.get("files", {}).get(ITEM_MAP_FILE),
                "item_count": self.item_count,
                "dim": self.dim,
            }
        return self._identity

    def popular_items(self, n: int, allowed: np.ndarray | None = None) -> np.ndarray:
        """The n items most clicked in training, most clicked first; only those where the
        bool mask ``allowed`` [item_count] is True, when given."""
        if allowed is None:
            return self._popular[:n].copy()
        return self._popular[allowed[self._popular]][:n]
