"""Readers and the training sampler for MIND (the formats: README, step 1 "Data").

File parsing lives in `recdata.formats` (shared with data preparation, which validates archives
with the same code); this module re-exports it and adds what the model needs on top:
`known_items` and `pad_histories` for evaluation/serving and `TrainSampler` for training batches.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from recdata.formats import DataFormatError, EvalSet, read_eval_dir, read_train_dir

__all__ = [
    "DataFormatError",
    "EvalSet",
    "TrainSampler",
    "known_items",
    "pad_histories",
    "read_eval_dir",
    "read_train_dir",
]

MIN_TARGET_POS = 4  # ComiRec/PaddleRec: the target is never among a user's first 4 clicks


def _last_items(flat: np.ndarray, end: np.ndarray, n: np.ndarray, maxlen: int) -> np.ndarray:
    """[B, maxlen]: row i = flat[end[i]-n[i] : end[i]] left-aligned, right-padded with 0."""
    col = np.arange(maxlen)
    take = col < n[:, None]
    idx = np.where(take, end[:, None] - n[:, None] + col, 0)
    out = flat[idx] if flat.size else np.zeros(idx.shape, dtype=np.int64)
    out[~take] = 0
    return out


def known_items(history: Sequence[int] | np.ndarray, item_count: int) -> np.ndarray:
    """The ids of ``history`` a model of ``item_count`` rows has an embedding for, in click order
    (here, not in user_tower, so a runtime without the network code applies the same rule)."""
    h = np.asarray(history, dtype=np.int64).reshape(-1)
    return h[(h > 0) & (h < item_count)]


def pad_histories(histories: Sequence[Sequence[int] | np.ndarray], maxlen: int) -> np.ndarray:
    """int64 [B, maxlen]: the last `maxlen` items of each history, left-aligned, 0-padded right."""
    if maxlen < 1:
        raise ValueError("maxlen must be >= 1")
    arrays = [np.asarray(h, dtype=np.int64).ravel() for h in histories]
    lens = np.array([len(a) for a in arrays], dtype=np.int64)
    flat = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int64)
    return _last_items(flat, np.cumsum(lens), np.minimum(lens, maxlen), maxlen)


class TrainSampler:
    """Training batches as in ComiRec: uniform user, uniform target position k in [4, len).

    The history of a sample is the up-to-`maxlen` items right before position k. One numpy
    Generator is seeded per epoch with (seed, epoch) and drives the whole epoch: reseeding per
    batch or sample would repeat the same few samples (README, "Where we differ from PaddleRec").
    """

    CHUNK_SAMPLES = 1 << 16  # samples drawn per vectorised step; fixed so resume is exact

    def __init__(
        self,
        sequences: dict[int, np.ndarray],
        batch_size: int,
        maxlen: int = 20,
        seed: int = 0,
        samples_per_epoch: int | None = None,
        min_len: int = 5,
    ) -> None:
        if min_len < MIN_TARGET_POS + 1:
            raise ValueError(
                f"min_len must be >= {MIN_TARGET_POS + 1} (targets start at position 4)"
            )
        if batch_size < 1 or maxlen < 1:
            raise ValueError("batch_size and maxlen must be >= 1")
        seqs = [np.asarray(sequences[u], dtype=np.int64) for u in sorted(sequences)]
        seqs = [s for s in seqs if len(s) >= min_len]
        if not seqs:
            raise ValueError(f"no user has >= {min_len} clicks")
        self._lens = np.array([len(s) for s in seqs], dtype=np.int64)
        self._starts = np.r_[0, np.cumsum(self._lens)[:-1]].astype(np.int64)
        self._flat = np.concatenate(seqs)
        self.batch_size = batch_size
        self.maxlen = maxlen
        self.seed = seed
        self.num_users = len(seqs)
        self.num_positions = int((self._lens - MIN_TARGET_POS).sum())
        self.samples_per_epoch = (
            self.num_positions if samples_per_epoch is None else samples_per_epoch
        )
        self._num_batches = self.samples_per_epoch // batch_size
        if self._num_batches < 1:
            raise ValueError(
                f"samples_per_epoch={self.samples_per_epoch} gives no full batch of {batch_size}"
            )

    def __len__(self) -> int:
        """Batches per epoch; all full (the remainder of samples_per_epoch is dropped)."""
        return self._num_batches

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield (hist int64 [B, maxlen], target int64 [B]) batches of one epoch.

        Batches from `start_batch` on are exactly those of an uninterrupted epoch: earlier
        chunks are still drawn (cheap) so the generator reaches the same state.
        """
        if not 0 <= start_batch <= self._num_batches:
            raise ValueError(f"start_batch must lie in [0, {self._num_batches}]")
        rng = np.random.default_rng([self.seed, epoch])
        bs = self.batch_size
        chunk = max(1, self.CHUNK_SAMPLES // bs)
        for first in range(0, self._num_batches, chunk):
            nb = min(chunk, self._num_batches - first)
            user = rng.integers(0, self.num_users, size=nb * bs)
            k = rng.integers(MIN_TARGET_POS, self._lens[user])
            if first + nb <= start_batch:
                continue
            pos = self._starts[user] + k
            hist = _last_items(self._flat, pos, np.minimum(k, self.maxlen), self.maxlen)
            target = self._flat[pos]
            for b in range(max(0, start_batch - first), nb):
                yield hist[b * bs : (b + 1) * bs], target[b * bs : (b + 1) * bs]
