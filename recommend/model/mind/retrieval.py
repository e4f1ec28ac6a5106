"""From interest vectors to one ranked list per user.

MIND gives each user K interest vectors. Each is searched for its own top-n
items; a user's K lists are then merged, cleaned (duplicates, padding id 0,
Milvus's -1 fillers, optionally the user's own history) and cut to n. The
service and infer.py both go through ``recall`` so they can never disagree on
how lists are merged.

Merge strategies (``MERGES``):
- "score": pool the K lists and sort by inner-product score (ComiRec's and the
  tutorial's evaluation). An interest with a large norm (squash gives longer
  vectors to interests that gathered more behaviours) can fill the whole list.
- "round_robin": take each list's 1st hit, then each list's 2nd hit, ...
  (inside one round, by score): every interest gets about n/K places.
- "slots": each active interest gets a share of the n places (largest remainder of n/K'),
  filled with its own best unseen hits; places an interest cannot fill go to the best
  remaining pooled hits; the chosen items are listed by score. "slots_norm": shares in
  proportion to the interest vectors' norms (squash makes an interest longer the more
  behaviour mass routing gave it). Cutting a slots list at m < n is not the slots list of m.
- "controllable": ComiRec's controllable aggregation (Cen et al., KDD 2020, section 3.4): greedy
  over the pooled hits (deduplicated, best score each), each step taking the item that maximises
  score + lambda * #{chosen items whose category differs}; since #chosen is the same for every
  candidate of a step, that is score - lambda * #{chosen items of the same category}, which is
  what ComiRec's evaluation computes. lambda = 0 is the "score" merge. Items with several
  categories (MovieLens genres) "share a category" with a chosen item when their sets meet; an
  item without a category shares none. The list is in the order chosen. (Read as "score +
  lambda * [the item's category is new]", a bonus only for an unseen category, the rule would
  stop diversifying once every category had one item; ComiRec's penalty grows with each repeat.)

Masked interests: a zero interest vector (dynamic_k beyond K'_u, or an empty capsule) scores
every item 0, so it is never searched and none of its hits is ever merged.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

# Milvus rejects a per-vector limit above 16,384.
MAX_SEARCH_K = 16384

MERGES = ("score", "round_robin", "slots", "slots_norm", "controllable")
DEFAULT_MERGE = "score"
# The largest lambda a request may ask for: far beyond any useful trade-off (item scores are inner
# products of a few units), a larger one is a client's mistake.
MAX_DIVERSITY = 100.0
# The catalogue columns a category is read from when none is named, in this order: synthetic data
# writes `category`, MovieLens `genre` (a list).
CATEGORY_COLUMNS = ("category", "genre")

SearchFn = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]


class Tower(Protocol):
    """What ``recall`` needs from a user tower (see mind.user_tower.UserTower)."""

    item_count: int

    def interests(self, histories: Sequence[Sequence[int]]) -> np.ndarray: ...

    def known_items(self, history: Sequence[int]) -> np.ndarray: ...

    def popular_items(self, n: int, allowed: np.ndarray | None = None) -> np.ndarray: ...


def merge_hits(
    ids: np.ndarray,
    scores: np.ndarray,
    top_n: int,
    exclude: Sequence[np.ndarray] | None = None,
    strategy: str = DEFAULT_MERGE,
    lists: int = 1,
    active: np.ndarray | None = None,
    shares: np.ndarray | None = None,
    positions: list[np.ndarray] | None = None,
    categories: np.ndarray | None = None,
    diversity: float = 0.0,
) -> list[np.ndarray]:
    """Merge each user's hits into one list: unique, valid, cut to ``top_n``.

    ids, scores: [U, M] — row u holds all K*n hits of user u: for strategy "score" in any
    order; for "round_robin" as ``lists`` = K consecutive blocks of n = M/K hits, one block per
    interest vector (any order inside a block).
    exclude: per user, ids to leave out (e.g. their history).
    strategy: "score" = best score first over the pooled hits; "round_robin" = by rank inside
    the hit's own block first, then by score (see the module docstring).
    Ids <= 0 are dropped: 0 is padding and -1 is the filler for "no hit".
    active: [U, K] bool, False = a masked interest whose block is dropped whatever it holds.
    shares: [U, K] non-negative slot weights for "slots"/"slots_norm" (default: equal).
    Ties keep the order of the input (stable sort).
    positions: when given, gets per user the column in ``ids`` of each merged id's hit (its
    best one): the score is ``scores[u, col]`` and, for K blocks of n, the interest ``col // n``.
    categories: bool [item_count, C], row i = item i's categories (item_categories), and
    diversity = lambda >= 0: for "controllable" (required there, ignored by the others).
    """
    if ids.shape != scores.shape or ids.ndim != 2:
        raise ValueError(f"ids {ids.shape} and scores {scores.shape} must be the same 2-D shape")
    if strategy not in MERGES:
        raise ValueError(f"unknown merge strategy {strategy!r}; expected one of {MERGES}")
    users, width = ids.shape
    if users == 0:
        return []
    if (strategy != "score" or active is not None) and (lists < 1 or width % lists):
        raise ValueError(f"{width} hits per user do not split into {lists} lists")
    if active is not None:
        dead = np.repeat(~np.asarray(active, bool).reshape(users, lists), width // lists, axis=1)
        ids = np.where(dead, -1, ids)
    if strategy == "controllable":
        if categories is None:
            raise ValueError("the controllable merge needs the items' categories")
        if not 0 <= diversity <= MAX_DIVERSITY:
            raise ValueError(f"diversity must be in [0, {MAX_DIVERSITY:g}], got {diversity}")
        # The score merge of every pooled hit: unique, valid, history out, best score first.
        cols: list[np.ndarray] = []
        pooled = merge_hits(ids, scores, width, exclude, "score", lists, None, positions=cols)
        merged, picked = [], []
        for u, (row, col) in enumerate(zip(pooled, cols)):
            order = greedy_diverse(scores[u, col], categories[np.clip(row, 0, len(categories) - 1)]
                                   & (row < len(categories))[:, None], diversity, top_n)
            merged.append(row[order])
            picked.append(col[order])
        if positions is not None:
            positions.extend(picked)
        return merged
    if strategy in ("slots", "slots_norm"):
        merged = _merge_slots(ids, scores, top_n, exclude, lists, active, shares)
        if positions is not None:
            positions.extend(_best_columns(ids[u], scores[u], m) for u, m in enumerate(merged))
        return merged
    if strategy == "score":
        order = np.argsort(-scores, axis=1, kind="stable")
    else:
        rank = _rank_in_list(scores, lists)
        order = np.array([np.lexsort((-scores[u], rank[u])) for u in range(users)],
                         dtype=np.int64).reshape(users, width)
    ranked = np.take_along_axis(ids, order, axis=1)
    keep = ranked > 0

    # Key each (user, id) pair as one integer so that dedupe and exclusion are
    # single vectorised operations instead of a Python loop per user.
    stride = int(max(ranked.max(initial=0), 0)) + 1
    rows = np.arange(users, dtype=np.int64)[:, None]
    keys = rows * stride + np.where(keep, ranked, 0)
    ex_keys = np.empty(0, np.int64)
    if exclude is not None:
        if len(exclude) != users:
            raise ValueError(f"{len(exclude)} exclusion lists for {users} users")
        parts = [u * stride + e[(e > 0) & (e < stride)]
                 for u, e in enumerate(map(np.asarray, exclude)) if len(e)]
        if parts:
            ex_keys = np.concatenate(parts).astype(np.int64, copy=False)
    # One stable sort of the excluded keys followed by the hits: a key's first place is an
    # exclusion if it has one (then none of its hits is first), else its best-ranked hit.
    # (np.unique + np.isin took three sorts: 0.3 ms of a 1-user request, 0.6 ms at 8 users.)
    pool = np.concatenate([ex_keys, keys.ravel()])
    by_key = np.argsort(pool, kind="stable")
    in_order = pool[by_key]
    first = np.ones(pool.size, dtype=bool)
    first[by_key[1:]] = in_order[1:] != in_order[:-1]
    keep &= first[ex_keys.size:].reshape(users, width)

    keep &= np.cumsum(keep, axis=1) <= top_n
    if positions is not None:
        positions.extend(order[u][keep[u]] for u in range(users))
    return [ranked[u][keep[u]] for u in range(users)]


def greedy_diverse(scores: np.ndarray, cats: np.ndarray, diversity: float, top_n: int
                   ) -> np.ndarray:
    """Indices of up to top_n candidates, in the order chosen: each step the candidate with the
    largest score - diversity * (chosen candidates sharing a category with it); ties go to the
    earlier candidate. scores [M] (candidates best first for the "score" order at diversity 0),
    cats bool [M, C]."""
    m = len(scores)
    take = min(top_n, m)
    if diversity == 0 or take == 0:
        return np.arange(take)
    c = cats.astype(np.float32)
    shares = (c @ c.T) > 0  # [M, M]: candidates i, j have a category in common
    penalty = np.zeros(m, np.float64)
    gain = scores.astype(np.float64)
    out = np.empty(take, np.int64)
    for step in range(take):
        j = int(np.argmax(gain - diversity * penalty))
        out[step] = j
        gain[j] = -np.inf
        penalty += shares[j]
    return out


def item_categories(catalogue, item_count: int, column: str | None = None) -> np.ndarray | None:
    """bool [item_count, C]: row i = the categories of item id i (row 0, padding: none), read
    from the catalogue's column ``column`` (a scalar or a list column; "" = none) or, when None,
    the first of CATEGORY_COLUMNS it has. None when there is no such column (or no catalogue)."""
    if catalogue is None:
        return None
    names = [column] if column else [c for c in CATEGORY_COLUMNS if c in catalogue.columns]
    if not names or names[0] not in catalogue.columns:
        return None
    values = catalogue.columns[names[0]]
    as_sets = [tuple(v) if isinstance(v, (tuple, list)) else ((v,) if v else ())
               for v in values.tolist()]
    vocab = {name: k for k, name in enumerate(sorted({x for v in as_sets for x in v if x}))}
    out = np.zeros((item_count, max(len(vocab), 1)), bool)
    for i, v in enumerate(as_sets[:item_count]):
        if i:
            out[i, [vocab[x] for x in v if x]] = True
    return out


def _best_columns(ids: np.ndarray, scores: np.ndarray, merged: np.ndarray) -> np.ndarray:
    """For each id of ``merged``, the column of its best-scoring hit in the row ``ids``."""
    best: dict[int, int] = {}
    for col in np.argsort(-scores, kind="stable").tolist():
        best.setdefault(int(ids[col]), col)
    return np.array([best[int(i)] for i in merged], dtype=np.int64)


def _rank_in_list(scores: np.ndarray, lists: int) -> np.ndarray:
    """[U, M]: each hit's rank inside its own list of M/lists hits (0 = that list's best)."""
    users, width = scores.shape
    n = width // lists
    within = np.argsort(-scores.reshape(users, lists, n), axis=2, kind="stable")
    rank = np.empty_like(within)
    np.put_along_axis(rank, within, np.arange(n)[None, None, :], axis=2)
    return rank.reshape(users, width)


def slot_quotas(shares: np.ndarray, top_n: int) -> np.ndarray:
    """int [K]: top_n places split in proportion to shares (largest remainder; ties: lower k)."""
    w = np.asarray(shares, np.float64)
    if w.sum() <= 0:
        return np.zeros(len(w), np.int64)
    exact = top_n * w / w.sum()
    quota = np.floor(exact).astype(np.int64)
    extra = np.argsort(-(exact - quota), kind="stable")[: top_n - int(quota.sum())]
    quota[extra] += 1
    return quota


def _merge_slots(ids, scores, top_n, exclude, lists, active, shares) -> list[np.ndarray]:
    """The "slots" merge of merge_hits, one user at a time (K small, lists short)."""
    users, width = ids.shape
    n = width // lists
    if shares is None:
        shares = np.ones((users, lists)) if active is None else np.asarray(active, np.float64)
    rank = _rank_in_list(scores, lists).reshape(users, lists, n)
    out = []
    for u in range(users):
        banned = set() if exclude is None else set(np.asarray(exclude[u]).tolist())
        chosen: dict[int, float] = {}  # id -> score, in the order taken
        blocks = ids[u].reshape(lists, n), scores[u].reshape(lists, n)
        for k, quota in enumerate(slot_quotas(shares[u], top_n)):
            taken = 0
            for j in np.argsort(rank[u, k], kind="stable"):
                if taken == quota:
                    break
                item = int(blocks[0][k, j])
                if item > 0 and item not in banned and item not in chosen:
                    chosen[item] = float(blocks[1][k, j])
                    taken += 1
        # Places an interest could not fill: the best remaining hits of every active list.
        for j in np.argsort(-scores[u], kind="stable"):
            if len(chosen) >= top_n:
                break
            item = int(ids[u, j])
            if item > 0 and item not in banned and item not in chosen:
                chosen[item] = float(scores[u, j])
        items = np.fromiter(chosen, np.int64, len(chosen))
        best = np.fromiter(chosen.values(), np.float64, len(chosen))
        out.append(items[np.argsort(-best, kind="stable")][:top_n])
    return out


@dataclass(frozen=True)
class RecallQuery:
    """One caller's request: its users' click histories, how many ids each, history left out?

    where: the Milvus filter its search must use ("" = none; queries answered together share
    one search, so they must share it too); allowed: bool [item_count], the items that filter
    admits (for the popular fallback). details: answer (ids, scores, interests) per user.
    diversity: lambda of the "controllable" merge; > 0 answers this query's users with it
    (recall_many's ``categories`` then required), 0 = the call's merge.
    """

    histories: Sequence[Sequence[int]]
    top_k: int
    exclude_history: bool = True
    where: str = ""
    allowed: np.ndarray | None = None
    details: bool = False
    diversity: float = 0.0


@dataclass(frozen=True)
class Recalled:
    """One user's answer with its reasons: the score of each id and the interest that found it
    (-1 and NaN for the popular items a user with no known history gets)."""

    ids: np.ndarray  # int64
    scores: np.ndarray  # float32
    interests: np.ndarray  # int64


def recall(
    tower: Tower,
    search: SearchFn,
    histories: Sequence[Sequence[int]],
    top_k: int,
    exclude_history: bool = True,
    timings: dict[str, float] | None = None,
    merge: str = DEFAULT_MERGE,
    diversity: float = 0.0,
    categories: np.ndarray | None = None,
) -> list[list[int]]:
    """Recall up to ``top_k`` item ids per user, best first (one query of ``recall_many``)."""
    (rows,) = recall_many(tower, search, [RecallQuery(histories, top_k, exclude_history,
                                                      diversity=diversity)],
                          timings, merge, categories=categories)
    return rows


def recall_many(
    tower: Tower,
    search: SearchFn,
    queries: Sequence[RecallQuery],
    timings: dict[str, float] | None = None,
    merge: str = DEFAULT_MERGE,
    unknown: list[int] | None = None,
    categories: np.ndarray | None = None,
) -> list[list[list[int]] | list[Recalled]]:
    """Answer several queries with ONE ``tower.interests`` call and ONE ``search``.

    This is what lets the service batch concurrent requests: the model and Milvus
    cost little more for 64 users than for one. Each query keeps its own top_k and
    history rule; the search asks every vector for the largest per-vector limit any
    query needs (a longer list only adds hits that query's merge cuts off again).
    A user with no item the model knows gets the most popular items instead (there
    is nothing to personalise from). When ``timings`` is given, seconds spent in the
    tower, the search and the merge are added to it. ``merge`` picks how the K lists
    become one (``MERGES``, see merge_hits). When ``unknown`` is given, each query's number of
    history ids the tower does not know (ignored) is appended to it. A query with ``details``
    gets a ``Recalled`` per user instead of a list of ids. The users of a query with
    ``diversity`` > 0 are merged by "controllable" with that lambda, which needs ``categories``
    (item_categories of the catalogue): without them such a query is a ValueError.
    """
    if len({q.where for q in queries}) > 1:
        raise ValueError("queries answered by one search must share its filter (where)")
    for q in queries:
        if q.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {q.top_k}")
        if q.diversity and categories is None:
            raise ValueError("diversity > 0 needs the items' categories: the catalogue has "
                             "no category column")
    known = [[tower.known_items(h) for h in q.histories] for q in queries]
    if unknown is not None:
        unknown.extend(sum(len(h) - len(k) for h, k in zip(q.histories, q_known))
                       for q, q_known in zip(queries, known))
    # Ask each interest for enough extra hits that filtering the history out
    # still leaves top_k items.
    per_vector = min(max((q.top_k + _history_extra(k, q.exclude_history)
                          for q, k in zip(queries, known)), default=1), MAX_SEARCH_K)
    # The tower keeps the ids it knows: given those, it filters again to the same ids
    # (and skips converting each raw history once more).
    histories = [h for q_known in known for h in q_known]
    if not histories:
        return [[] for _ in queries]

    t0 = time.perf_counter()
    vectors = tower.interests(histories)  # [B, K, D]
    users, k, dim = vectors.shape
    t1 = time.perf_counter()
    ids, scores = search_active(search, vectors, per_vector)
    t2 = time.perf_counter()
    active = np.any(vectors != 0, axis=2)  # [B, K]: a zero vector is a masked interest
    shares = np.linalg.norm(vectors, axis=2) if merge == "slots_norm" else None
    # One merge for every user of every query (a call per query costs more than the merge),
    # to the largest top_k; each row is then cut to its own query's top_k.
    exclude = None
    if any(q.exclude_history for q in queries):
        nothing = np.empty(0, np.int64)
        exclude = [h if q.exclude_history else nothing
                   for q, q_known in zip(queries, known) for h in q_known]
    flat_scores = scores.reshape(users, -1)
    positions: list[np.ndarray] | None = [] if any(q.details for q in queries) else None
    flat_ids = ids.reshape(users, -1)
    merged = merge_hits(flat_ids, flat_scores,
                        max(q.top_k for q in queries), exclude, strategy=merge, lists=k,
                        active=active, shares=shares, positions=positions,
                        categories=categories)
    # Queries asking for a diversity: their users merged again, one merge per lambda.
    lam = np.repeat([q.diversity for q in queries], [len(q.histories) for q in queries])
    for value in np.unique(lam[lam > 0]).tolist():
        rows_of = np.flatnonzero(lam == value)
        cols: list[np.ndarray] | None = [] if positions is not None else None
        again = merge_hits(flat_ids[rows_of], flat_scores[rows_of],
                           max(q.top_k for q in queries if q.diversity == value),
                           None if exclude is None else [exclude[u] for u in rows_of],
                           "controllable", k, active[rows_of], positions=cols,
                           categories=categories, diversity=value)
        for j, u in enumerate(rows_of.tolist()):
            merged[u] = again[j]
            if positions is not None:
                positions[u] = cols[j]  # type: ignore[index]
    answers: list = []
    rows = iter(zip(range(users), merged, (h for q_known in known for h in q_known)))
    for q in queries:
        answer = []
        for u, row, h in itertools.islice(rows, len(q.histories)):
            if len(h) == 0:
                row = tower.popular_items(q.top_k) if q.allowed is None \
                    else tower.popular_items(q.top_k, q.allowed)
            row = row[:q.top_k]
            if not q.details:
                answer.append(row.tolist())
            elif len(h) == 0:
                answer.append(Recalled(row, np.full(len(row), np.nan, np.float32),
                                       np.full(len(row), -1, np.int64)))
            else:
                cols = positions[u][:q.top_k]  # type: ignore[index]
                answer.append(Recalled(row, flat_scores[u, cols], cols // per_vector))
        answers.append(answer)
    if timings is not None:
        t3 = time.perf_counter()
        for name, seconds in (("tower", t1 - t0), ("search", t2 - t1), ("merge", t3 - t2)):
            timings[name] = timings.get(name, 0.0) + seconds
    return answers


def search_active(search: SearchFn, vectors: np.ndarray, per_vector: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Search only the non-zero interest vectors of [B, K, D]; masked rows get no hit (-1, -inf).

    Returns ids, scores [B*K, per_vector], the layout one search of every vector would give."""
    users, k, dim = vectors.shape
    flat = vectors.reshape(users * k, dim).astype(np.float32)
    live = np.flatnonzero(np.any(flat != 0, axis=1))
    if len(live) == users * k:  # nothing masked (the usual case): no copy when rows are full
        got_ids, got_scores = search(flat, per_vector)
        got_ids = np.asarray(got_ids, dtype=np.int64)
        got_scores = np.asarray(got_scores, dtype=np.float32)
        if got_ids.shape == got_scores.shape == (users * k, per_vector):
            return got_ids, got_scores
        live, found = slice(None), (got_ids, got_scores)
    elif len(live):
        found = search(flat[live], per_vector)
    else:
        found = None
    ids = np.full((users * k, per_vector), -1, np.int64)
    scores = np.full((users * k, per_vector), -np.inf, np.float32)
    if found is not None:
        got_ids, got_scores = np.asarray(found[0]), np.asarray(found[1])
        width = min(per_vector, got_ids.shape[1])
        ids[live, :width] = got_ids[:, :width]
        scores[live, :width] = got_scores[:, :width]
    return ids, scores


def _history_extra(known: Sequence[np.ndarray], exclude_history: bool) -> int:
    """Hits the history filter may remove from one interest's list (0 if not filtering)."""
    # A set of a short history is cheaper than np.unique (~8 us a call, one per user).
    return max((len(set(np.asarray(h).tolist())) for h in known), default=0) \
        if exclude_history else 0
