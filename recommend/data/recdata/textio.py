"""Vectorised rendering of integer tokens to text.

Writing the full AmazonBook-sized train set (~9M lines) with per-line Python formatting takes
tens of seconds; building the bytes with numpy takes a few.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_POW10 = 10 ** np.arange(19, dtype=np.int64)
CHUNK = 1 << 20  # tokens per step: bounds the temporary byte matrices to some tens of MB


def _digit_counts(values: np.ndarray) -> np.ndarray:
    # searchsorted against powers of ten is exact, unlike log10 near powers of ten.
    return np.maximum(np.searchsorted(_POW10, values, side="right"), 1)


def _table(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Byte matrix [len(texts), max_len] of left-aligned texts, and its validity mask."""
    raw = [t.encode() for t in texts]
    width = max(len(r) for r in raw)
    mat = np.zeros((len(raw), width), dtype=np.uint8)
    mask = np.zeros((len(raw), width), dtype=bool)
    for i, r in enumerate(raw):
        mat[i, : len(r)] = np.frombuffer(r, dtype=np.uint8)
        mask[i, : len(r)] = True
    return mat, mask


def render_tokens(
    values: np.ndarray,
    prefix_codes: np.ndarray,
    suffix_codes: np.ndarray,
    prefixes: Sequence[str],
    suffixes: Sequence[str],
) -> bytes:
    """Text of the tokens `prefixes[p] + str(v) + suffixes[s]`, concatenated in order.

    Each token becomes one row of a fixed-width byte matrix (prefix, right-aligned digits,
    suffix) with a mask of the bytes that exist; the masked row-major read-out is the text.
    """
    values = np.asarray(values, dtype=np.int64)
    if values.size and values.min() < 0:
        raise ValueError("render_tokens only writes non-negative integers")
    pre, pre_mask = _table(prefixes)
    suf, suf_mask = _table(suffixes)
    parts = []
    for s in range(0, len(values), CHUNK):
        v = values[s : s + CHUNK]
        pc, sc = prefix_codes[s : s + CHUNK], suffix_codes[s : s + CHUNK]
        nd = _digit_counts(v)
        maxd = int(nd.max())
        digits = (v[:, None] // _POW10[maxd - 1 :: -1] % 10 + 48).astype(np.uint8)
        dmask = np.arange(maxd) >= maxd - nd[:, None]
        mat = np.concatenate([pre[pc], digits, suf[sc]], axis=1)
        mask = np.concatenate([pre_mask[pc], dmask, suf_mask[sc]], axis=1)
        parts.append(mat[mask].tobytes())
    return b"".join(parts)
