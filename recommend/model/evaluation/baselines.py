"""Baselines to judge MIND against, evaluated on the same users and metrics.

- MostPopular: the N items clicked most often by training users, the same list
  for everyone. A model that cannot beat it has learned nothing personal.
- Cosine item co-occurrence (item-based CF): sim(i, j) = |U_i ∩ U_j| /
  sqrt(|U_i| |U_j|) over the *sets* of training users who clicked each item; a
  user's candidates are scored by their summed similarity to the user's history
  items. A strong, training-free baseline on small catalogues.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def click_counts(sequences: dict[int, np.ndarray], item_count: int) -> np.ndarray:
    """int64 [item_count]: how many times each item was clicked in training."""
    all_items = np.concatenate(list(sequences.values())) if sequences else np.empty(0, np.int64)
    return np.bincount(all_items, minlength=item_count).astype(np.int64)


def top_items(scores: np.ndarray, n: int, exclude: np.ndarray | None = None) -> np.ndarray:
    """Ids of the n highest scores (ties: smaller id first), never id 0 nor an excluded id."""
    scores = scores.astype(np.float64, copy=True)
    scores[0] = -np.inf
    if exclude is not None and len(exclude):
        scores[exclude] = -np.inf
    n = min(n, int(np.isfinite(scores).sum()))
    if n <= 0:
        return np.empty(0, np.int64)
    part = np.argpartition(-scores, n - 1)[:n] if n < len(scores) else np.arange(len(scores))
    # argpartition leaves ties at the boundary arbitrary; resort the whole
    # boundary group so results do not depend on numpy's partition internals.
    cutoff = scores[part].min()
    candidates = np.flatnonzero(scores >= cutoff)
    order = np.lexsort((candidates, -scores[candidates]))
    return candidates[order][:n].astype(np.int64)


class MostPopular:
    """Recommend the globally most clicked training items."""

    name = "MostPopular"

    def __init__(self, sequences: dict[int, np.ndarray], item_count: int):
        self.item_count = item_count
        self.counts = click_counts(sequences, item_count).astype(np.float64)

    def scores(self, history: np.ndarray) -> np.ndarray:
        return self.counts

    def recommend(self, history: np.ndarray, n: int, exclude_history: bool = False) -> np.ndarray:
        return top_items(self.counts, n, history if exclude_history else None)


class CosineCooccurrence:
    """Item-based CF with cosine similarity of the items' training-user sets."""

    name = "CosineCooccurrence"

    def __init__(self, sequences: dict[int, np.ndarray], item_count: int):
        self.item_count = item_count
        # user -> unique items (CSR) and item -> users (CSR); binary click sets.
        user_items = [np.unique(s) for s in sequences.values()]
        lengths = np.array([len(u) for u in user_items], dtype=np.int64)
        self.u_ptr = np.concatenate([[0], np.cumsum(lengths)])
        self.u_items = np.concatenate(user_items) if user_items else np.empty(0, np.int64)
        owners = np.repeat(np.arange(len(user_items), dtype=np.int64), lengths)
        order = np.argsort(self.u_items, kind="stable")
        self.i_users = owners[order]
        self.item_users = np.bincount(self.u_items, minlength=item_count)
        self.i_ptr = np.concatenate([[0], np.cumsum(self.item_users)])
        self.n_users = len(user_items)
        with np.errstate(divide="ignore"):
            self.inv_sqrt = np.where(self.item_users > 0, 1.0 / np.sqrt(self.item_users), 0.0)

    def scores(self, history: np.ndarray) -> np.ndarray:
        """Summed cosine similarity of every item to the (unique) history items.

        sum_{i in H} |U_i ∩ U_j| / sqrt(n_i n_j)
          = (1 / sqrt(n_j)) * sum_u w_u [j in u],  with w_u = sum_{i in H ∩ u} 1 / sqrt(n_i)
        so one pass over the users who clicked a history item is enough.
        """
        hist = np.unique(history[(history > 0) & (history < self.item_count)])
        weights = np.zeros(self.n_users, dtype=np.float64)
        for i in hist:
            users = self.i_users[self.i_ptr[i] : self.i_ptr[i + 1]]
            weights[users] += self.inv_sqrt[i]
        active = np.flatnonzero(weights)
        starts, ends = self.u_ptr[active], self.u_ptr[active + 1]
        lens = ends - starts
        idx = np.repeat(starts - np.cumsum(np.concatenate([[0], lens[:-1]])), lens) + np.arange(
            lens.sum()
        )
        scores = np.bincount(
            self.u_items[idx], weights=np.repeat(weights[active], lens), minlength=self.item_count
        )
        return scores * self.inv_sqrt

    def recommend(self, history: np.ndarray, n: int, exclude_history: bool = False) -> np.ndarray:
        return top_items(self.scores(history), n, history if exclude_history else None)


def recommend_all(
    model: MostPopular | CosineCooccurrence,
    histories: Sequence[np.ndarray],
    n: int,
    exclude_history: bool = False,
    window: int | None = None,
) -> list[np.ndarray]:
    """One top-n list per history. window: score from the last `window` known clicks only (what
    MIND sees, maxlen); the history filter still leaves out the whole history."""
    out = []
    for h in histories:
        h = np.asarray(h, np.int64)
        if window is None:
            out.append(model.recommend(h, n, exclude_history))
            continue
        known = h[(h > 0) & (h < model.item_count)]
        out.append(top_items(model.scores(known[-window:]), n, h if exclude_history else None))
    return out
