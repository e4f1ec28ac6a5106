"""Per-user click sequences in flat form (one items array + offsets), the currency of recdata."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Clicks:
    """Users' time-ordered clicks: user i clicked items[offsets[i]:offsets[i+1]] in that order."""

    user_ids: np.ndarray  # int64 [U], distinct
    offsets: np.ndarray  # int64 [U + 1], offsets[0] == 0
    items: np.ndarray  # int64 [T]

    @classmethod
    def from_events(cls, users: np.ndarray, items: np.ndarray, order: np.ndarray) -> Clicks:
        """Group click events by user, ordering each user's clicks by `order`.

        Ties in `order` keep the input order (lexsort is stable), so equal timestamps never
        shuffle between runs.
        """
        users = np.asarray(users, dtype=np.int64)
        order = np.asarray(order)
        # Files are usually written grouped by user in time order already: skip the sort then.
        same_user = users[1:] == users[:-1]
        if (users[1:] >= users[:-1]).all() and (
            order[1:][same_user] >= order[:-1][same_user]
        ).all():
            perm = np.arange(len(users))
        else:
            perm = np.lexsort((order, users))
        su = users[perm]
        starts = np.flatnonzero(np.r_[True, su[1:] != su[:-1]]) if len(su) else np.zeros(0, int)
        offsets = np.r_[starts, len(su)].astype(np.int64)
        return cls(su[starts], offsets, np.asarray(items, dtype=np.int64)[perm])

    def __len__(self) -> int:
        return len(self.user_ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def sequence(self, i: int) -> np.ndarray:
        return self.items[self.offsets[i] : self.offsets[i + 1]]

    def subset(self, index: np.ndarray) -> Clicks:
        """The users at positions `index` (in that order), with their full sequences."""
        index = np.asarray(index, dtype=np.int64)
        lens = self.lengths[index]
        offsets = np.zeros(len(index) + 1, dtype=np.int64)
        np.cumsum(lens, out=offsets[1:])
        src = np.repeat(self.offsets[index] - offsets[:-1], lens) + np.arange(offsets[-1])
        return Clicks(self.user_ids[index], offsets, self.items[src])
