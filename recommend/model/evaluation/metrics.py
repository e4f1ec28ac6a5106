"""Top-N recall metrics: small vectorised pure functions with their formulas.

For a user u with recommended list R_u (unique ids, best first, |R_u| <= N) and
held-out eval items E_u (as a set):

    Recall@N(u)  = |R_u ∩ E_u| / |E_u|
    HitRate@N(u) = 1 if |R_u ∩ E_u| > 0 else 0
    NDCG@N(u)    = DCG / IDCG,  DCG  = sum_{i : R_u[i] in E_u} 1 / log2(i + 2)
                               IDCG = sum_{i < min(|E_u|, N)} 1 / log2(i + 2)

Each is averaged over users; every user counts once, whatever the length of
their lists (no off-by-one denominators). Users with no eval item cannot be
scored and are rejected.

Where we differ from ComiRec / PaddleRec, and why:
- E_u is a *set*. ComiRec divides by the length of the eval list, duplicates
  included, so a user who clicked an item twice can never reach Recall 1.
- PaddleRec truncates eval items to 20, which shrinks the denominator; we keep
  them all (the data preparation never truncates).
- ComiRec's NDCG divides by the IDCG of the number of *hits*, not of
  min(|E_u|, N): it rewards few, early hits. It is reported separately as
  ``ndcg_comirec`` so numbers can be compared with the paper, clearly labelled.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

METRIC_NAMES = ("recall", "ndcg", "hitrate", "ndcg_comirec")


def _discounts(n: int) -> np.ndarray:
    """1 / log2(i + 2) for ranks i = 0..n-1."""
    return 1.0 / np.log2(np.arange(n, dtype=np.float64) + 2.0)


def _as_matrix(recommended: Sequence[Sequence[int] | np.ndarray], n: int) -> np.ndarray:
    """Stack ragged lists into an int64 [U, n] matrix padded with -1 (never an item id)."""
    out = np.full((len(recommended), n), -1, dtype=np.int64)
    for row, items in enumerate(recommended):
        items = np.asarray(items, dtype=np.int64)[:n]
        out[row, : len(items)] = items
    return out


def hit_matrix(
    recommended: Sequence[Sequence[int] | np.ndarray],
    eval_items: Sequence[Sequence[int] | np.ndarray],
    n: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Hits of each user's top-n list against their eval set.

    Returns (hits bool [U, n], eval_set_sizes int64 [U]). A position holds True
    when the id there is one of the user's eval items. Duplicate ids inside a
    recommended list are an error: they would count one eval item twice.
    """
    if len(recommended) != len(eval_items):
        raise ValueError(
            f"{len(recommended)} recommendation lists for {len(eval_items)} eval users"
        )
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    rec = _as_matrix(recommended, n)
    users = len(rec)
    sets = [np.unique(np.asarray(e, dtype=np.int64)) for e in eval_items]
    sizes = np.array([len(s) for s in sets], dtype=np.int64)
    if users and sizes.min() == 0:
        raise ValueError(f"user at position {int(np.argmin(sizes))} has no eval items")
    if users == 0:
        return np.zeros((0, n), dtype=bool), sizes
    # Check for duplicates within a row: sort each row and compare neighbours (ignoring -1 padding).
    srt = np.sort(rec, axis=1)
    if np.any((srt[:, 1:] == srt[:, :-1]) & (srt[:, 1:] >= 0)):
        raise ValueError("a recommendation list contains the same id twice")
    # Encode (user, item) pairs as one int so membership is a single vectorised isin.
    width = int(max(rec.max(initial=0), max((int(s.max()) for s in sets), default=0))) + 1
    eval_keys = np.concatenate([u * width + s for u, s in enumerate(sets)])
    rec_keys = np.arange(users, dtype=np.int64)[:, None] * width + rec
    hits = np.isin(rec_keys, eval_keys) & (rec >= 0)
    return hits, sizes


def per_user_metrics(hits: np.ndarray, eval_sizes: np.ndarray) -> dict[str, np.ndarray]:
    """Per-user Recall, NDCG, HitRate and ComiRec's NDCG from a hit matrix [U, N]."""
    n = hits.shape[1]
    disc = _discounts(n)
    n_hits = hits.sum(axis=1)
    dcg = (hits * disc).sum(axis=1)
    # IDCG over min(|E_u|, N) positions: the best any list of length N could do.
    ideal_cum = np.concatenate([[0.0], np.cumsum(disc)])
    idcg = ideal_cum[np.minimum(eval_sizes, n)]
    idcg_hits = ideal_cum[n_hits]
    with np.errstate(invalid="ignore", divide="ignore"):
        ndcg_comirec = np.where(n_hits > 0, dcg / np.where(idcg_hits > 0, idcg_hits, 1.0), 0.0)
    return {
        "recall": n_hits / eval_sizes,
        "ndcg": dcg / idcg,
        "hitrate": (n_hits > 0).astype(np.float64),
        "ndcg_comirec": ndcg_comirec,
    }


def topn_metrics(
    recommended: Sequence[Sequence[int] | np.ndarray],
    eval_items: Sequence[Sequence[int] | np.ndarray],
    n: int,
) -> dict[str, float]:
    """Mean Recall@n, NDCG@n, HitRate@n (and ndcg_comirec) over users."""
    hits, sizes = hit_matrix(recommended, eval_items, n)
    per_user = per_user_metrics(hits, sizes)
    if len(sizes) == 0:
        raise ValueError("no users to evaluate")
    return {name: float(values.mean()) for name, values in per_user.items()}
