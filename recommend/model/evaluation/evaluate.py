"""Evaluate a user tower on held-out users: MIND and the baselines, same users, same metrics."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from evaluation.baselines import CosineCooccurrence, MostPopular, recommend_all
from evaluation.metrics import hit_matrix, per_user_metrics
from mind.reader import EvalSet
from mind.retrieval import DEFAULT_MERGE, SearchFn, Tower, recall


@dataclass
class EvalResult:
    """Mean metrics at each cut-off N, plus how long each stage took."""

    name: str
    users: int
    metrics: dict[int, dict[str, float]]
    seconds: dict[str, float] = field(default_factory=dict)

    def line(self, n: int) -> str:
        m = self.metrics[n]
        return (
            f"{self.name}: Recall@{n}={m['recall']:.4f} NDCG@{n}={m['ndcg']:.4f} "
            f"HitRate@{n}={m['hitrate']:.4f} (users={self.users})"
        )


def metrics_at(lists: Sequence[np.ndarray], eval_items: Sequence[np.ndarray], cutoffs: Sequence[int]):
    """Mean metrics at every cut-off from one ranked list per user (lists at least max(cutoffs) long).

    Cutting a merged top-N list at n < N gives the merged top-n: an item ranked
    below n in its own interest's list has n distinct better items above it.
    """
    top = max(cutoffs)
    hits, sizes = hit_matrix(lists, eval_items, top)
    out = {}
    for n in sorted(cutoffs):
        per_user = per_user_metrics(hits[:, :n], sizes)
        out[n] = {name: float(v.mean()) for name, v in per_user.items()}
    return out


def evaluate_tower(
    tower: Tower,
    search: SearchFn,
    data: EvalSet,
    cutoffs: Sequence[int],
    batch_size: int,
    exclude_history: bool = False,
    name: str = "MIND",
    merge: str = DEFAULT_MERGE,
) -> EvalResult:
    """Recall for every held-out user in batches (one search per batch), then score."""
    top = max(cutoffs)
    timings: dict[str, float] = {}
    lists: list[np.ndarray] = []
    start = time.perf_counter()
    for lo in range(0, len(data.user_ids), batch_size):
        batch = data.histories[lo : lo + batch_size]
        lists.extend(np.asarray(r, np.int64) for r in recall(tower, search, batch, top, exclude_history, timings, merge))
    t_metrics = time.perf_counter()
    metrics = metrics_at(lists, data.eval_items, cutoffs)
    end = time.perf_counter()
    timings["metrics"] = end - t_metrics
    timings["total"] = end - start
    return EvalResult(name, len(data.user_ids), metrics, timings)


def evaluate_baselines(
    sequences: dict[int, np.ndarray],
    item_count: int,
    data: EvalSet,
    cutoffs: Sequence[int],
    exclude_history: bool = False,
) -> list[EvalResult]:
    """MostPopular and cosine co-occurrence on the same users as the model."""
    results = []
    for cls in (MostPopular, CosineCooccurrence):
        start = time.perf_counter()
        model = cls(sequences, item_count)
        lists = recommend_all(model, data.histories, max(cutoffs), exclude_history)
        metrics = metrics_at(lists, data.eval_items, cutoffs)
        results.append(
            EvalResult(cls.name, len(data.user_ids), metrics, {"total": time.perf_counter() - start})
        )
    return results
