"""Checks on the vectors going in and out, and the stored (augmented) layout."""

from __future__ import annotations

import numpy as np


def augment(vectors: np.ndarray, max_sq: float | None = None) -> np.ndarray:
    """Items as stored: [x, sqrt(M^2 - |x|^2)] with M the largest norm, so every stored
    vector has norm M (the MIPS-to-nearest-neighbour transform: Bachrach et al., RecSys 2014).
    Queries get a 0 appended, so q'.x' = q.x: scores and the exact order are unchanged, but
    inner product on equal-norm vectors is a cosine, which IVF and HNSW search well; on raw
    trained MIND embeddings IVF_FLAT recall@50 was 0.59 (milvus/DEPLOY.md, "Index choice").
    ``max_sq``: M^2 of the whole table, when augmenting it chunk by chunk."""
    v = vectors.astype(np.float32, copy=False)
    sq = np.einsum("ij,ij->i", v, v, dtype=np.float64)
    top = sq.max(initial=0.0) if max_sq is None else max_sq
    extra = np.sqrt(np.maximum(top - sq, 0.0)).astype(np.float32)
    return np.ascontiguousarray(np.hstack([v, extra[:, None]]))


def fit_queries(queries: np.ndarray, stored_dim: int) -> np.ndarray:
    """Queries as a collection stores vectors: as they are, or with the 0 of ``augment``."""
    if stored_dim == queries.shape[1] + 1:
        out = np.zeros((queries.shape[0], stored_dim), dtype=np.float32)
        out[:, :-1] = queries
        return out
    return queries


def check_items(ids: np.ndarray, vectors: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    ids = np.asarray(ids)
    vectors = np.asarray(vectors)
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"ids must be a 1-D integer array, got shape {ids.shape} {ids.dtype}")
    if ids.size == 0:
        raise ValueError("no items to load: ids is empty")
    if vectors.ndim != 2 or vectors.shape != (ids.shape[0], dim):
        raise ValueError(f"vectors must have shape ({ids.shape[0]}, {dim}) to match ids, "
                         f"got {vectors.shape}")
    if vectors.dtype != np.float32:
        raise ValueError(f"vectors must be float32, got {vectors.dtype}")
    if ids.min() < 0 or (ids.dtype == np.uint64 and ids.max() > np.iinfo(np.int64).max):
        raise ValueError("ids must be >= 0 and fit in int64")
    if np.unique(ids).size != ids.size:
        raise ValueError("ids must be unique")
    if not np.isfinite(vectors).all():
        raise ValueError("vectors contain NaN or infinity")
    return ids.astype(np.int64, copy=False), np.ascontiguousarray(vectors)


def check_queries(vectors: np.ndarray, dim: int) -> np.ndarray:
    q = np.asarray(vectors)
    if q.ndim != 2 or q.shape[1] != dim or q.shape[0] == 0:
        raise ValueError(f"query vectors must have shape (nq >= 1, {dim}), got {q.shape}")
    if not np.issubdtype(q.dtype, np.floating):
        raise ValueError(f"query vectors must be floating point, got {q.dtype}")
    q = q.astype(np.float32, copy=False)
    if not np.isfinite(q).all():
        raise ValueError("query vectors contain NaN or infinity")
    return q


def pad_hits(topks: np.ndarray, flat_ids: np.ndarray, flat_scores: np.ndarray, top_k: int
             ) -> tuple[np.ndarray, np.ndarray]:
    """Flat per-query hits as [nq, top_k] arrays, padded with -1 / -inf."""
    nq = topks.shape[0]
    if flat_ids.size == nq * top_k and (topks == top_k).all():
        return flat_ids.reshape(nq, top_k), flat_scores.reshape(nq, top_k)
    out_ids = np.full((nq, top_k), -1, dtype=np.int64)
    out_scores = np.full((nq, top_k), -np.inf, dtype=np.float32)
    # Row i holds topks[i] hits, consecutive in the flat arrays (row-major = mask order).
    mask = np.arange(top_k)[None, :] < np.minimum(topks, top_k)[:, None]
    keep = np.concatenate([np.arange(int(t)) < top_k for t in topks]) \
        if (topks > top_k).any() else slice(None)
    out_ids[mask] = flat_ids[keep]
    out_scores[mask] = flat_scores[keep]
    return out_ids, out_scores
