"""Exact inner-product top-k in process (numpy), the reference Milvus is compared with.

Same call shape as ``ItemStore.search`` so evaluation can swap one for the other.
"""

from __future__ import annotations

import numpy as np

# Vectors scored per matrix product: 256 x 367,983 float32 scores is ~380 MB at
# most, so memory stays bounded however many users are evaluated at once.
_CHUNK = 256


class ExactSearch:
    """Brute-force inner-product search over a fixed item matrix."""

    def __init__(self, ids: np.ndarray, vectors: np.ndarray):
        if len(ids) != len(vectors):
            raise ValueError(f"{len(ids)} ids for {len(vectors)} vectors")
        self.ids = np.asarray(ids, dtype=np.int64)
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)

    def search(self, queries: np.ndarray, top_k: int) -> tuple[np.ndarray, np.ndarray]:
        """ids int64 [nq, top_k] and scores float32 [nq, top_k], best first (-1 / -inf fill)."""
        nq = len(queries)
        k = min(top_k, len(self.ids))
        out_ids = np.full((nq, top_k), -1, dtype=np.int64)
        out_scores = np.full((nq, top_k), -np.inf, dtype=np.float32)
        for start in range(0, nq, _CHUNK):
            q = np.asarray(queries[start : start + _CHUNK], dtype=np.float32)
            scores = q @ self.vectors.T
            part = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < scores.shape[1] else (
                np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
            )
            top = np.take_along_axis(scores, part, axis=1)
            order = np.argsort(-top, axis=1, kind="stable")
            rows = slice(start, start + len(q))
            out_ids[rows, :k] = self.ids[np.take_along_axis(part, order, axis=1)]
            out_scores[rows, :k] = np.take_along_axis(top, order, axis=1)
        return out_ids, out_scores
