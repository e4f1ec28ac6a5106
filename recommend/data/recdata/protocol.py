"""The ComiRec evaluation protocol shared by every dataset variant.

1. Users with fewer than MIN_CLICKS clicks are dropped (and counted in meta.json), as ComiRec's
   5-core filter does; MIND's training samples need a target at position >= 4 anyway.
2. Users (not clicks) are split 8:1:1 with one seeded permutation:
   n_train = floor(0.8 U), n_valid = floor(0.9 U) - n_train, the rest are test users.
3. Train users' full sequences go to train/ as `uid,item_id,time_order` lines.
4. A held-out user with n clicks gets n_hist = clip(floor(4n/5), 1, n - 1) history items (the
   first ones, in click order, all written) and the remaining n - n_hist >= 1 eval items (all kept).
   For n >= 5 this equals ComiRec's int(0.8 n); integer arithmetic avoids float rounding.
"""

from __future__ import annotations

import numpy as np

from .clicks import Clicks
from .textio import render_tokens

MIN_CLICKS = 5
SPLITS = ("train", "valid", "test")


def drop_short(clicks: Clicks, min_clicks: int = MIN_CLICKS) -> tuple[Clicks, int]:
    """Users with at least `min_clicks` clicks, and how many users were dropped."""
    keep = np.flatnonzero(clicks.lengths >= min_clicks)
    return clicks.subset(keep), len(clicks) - len(keep)


def split_users(clicks: Clicks, seed: int) -> dict[str, Clicks]:
    """Split users 8:1:1 into train/valid/test; each split lists its users by ascending id."""
    n = len(clicks)
    perm = np.random.default_rng(seed).permutation(n)
    cut1, cut2 = n * 8 // 10, n * 9 // 10
    parts = (perm[:cut1], perm[cut1:cut2], perm[cut2:])
    out = {}
    for name, idx in zip(SPLITS, parts, strict=True):
        idx = idx[np.argsort(clicks.user_ids[idx], kind="stable")]
        out[name] = clicks.subset(idx)
    return out


def history_lengths(lengths: np.ndarray) -> np.ndarray:
    """Number of history items per held-out user (rule 4 of the module docstring)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.size and lengths.min() < 2:
        raise ValueError("a held-out user needs at least 2 clicks (1 history + 1 eval)")
    return np.clip(4 * lengths // 5, 1, lengths - 1)


def render_train(clicks: Clicks) -> bytes:
    """`uid,item_id,time_order` lines, time_order = position in the user's sequence."""
    lens = clicks.lengths
    uid = np.repeat(clicks.user_ids, lens)
    order = np.arange(len(clicks.items)) - np.repeat(clicks.offsets[:-1], lens)
    values = np.stack([uid, clicks.items, order], axis=1).ravel()
    n = len(clicks.items)
    return render_tokens(
        values, np.zeros(3 * n, np.int64), np.tile(np.array([0, 0, 1]), n), [""], [",", "\n"]
    )


def render_eval(clicks: Clicks) -> bytes:
    """One `user_id:U hist_item:... eval_item:...` line per user (rule 4)."""
    lens = clicks.lengths
    n_hist = history_lengths(lens)
    pos = np.arange(len(clicks.items)) - np.repeat(clicks.offsets[:-1], lens)
    item_code = np.where(pos < np.repeat(n_hist, lens), 1, 2)
    starts = clicks.offsets[:-1]
    values = np.insert(clicks.items, starts, clicks.user_ids)
    prefix = np.insert(item_code, starts, 0)
    suffix = np.zeros(len(values), np.int64)
    suffix[np.cumsum(lens + 1) - 1] = 1  # the last token of each user's line ends it
    return render_tokens(
        values, prefix, suffix, ["user_id:", "hist_item:", "eval_item:"], [" ", "\n"]
    )


def split_stats(name: str, clicks: Clicks) -> dict:
    """Counts and length statistics of one split (also stored in meta.json)."""
    lens = clicks.lengths
    st: dict = {
        "users": int(len(clicks)),
        "items": int(np.count_nonzero(np.bincount(clicks.items))),
        "clicks": int(lens.sum()),
        "seq_len_mean": round(float(lens.mean()), 2) if len(lens) else 0.0,
        "seq_len_median": float(np.median(lens)) if len(lens) else 0.0,
    }
    if name != "train" and len(lens):
        hist = history_lengths(lens)
        ev = lens - hist
        st.update(
            hist_len_mean=round(float(hist.mean()), 2),
            hist_len_median=float(np.median(hist)),
            eval_len_mean=round(float(ev.mean()), 2),
            eval_len_median=float(np.median(ev)),
        )
    return st


def format_stats(stats: dict[str, dict], item_count: int) -> str:
    """A small table of split statistics for the terminal."""
    cols = ["users", "items", "clicks", "seq_len_mean", "seq_len_median"]
    cols += ["hist_len_mean", "hist_len_median", "eval_len_mean", "eval_len_median"]
    head = f"{'split':<6}" + "".join(f"{c:>16}" for c in cols)
    rows = [f"item_count (max id + 1, incl. padding 0): {item_count}", head]
    for name, st in stats.items():
        rows.append(f"{name:<6}" + "".join(f"{str(st.get(c, '-')):>16}" for c in cols))
    return "\n".join(rows)
