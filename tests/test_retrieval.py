"""Merging K interest hit lists into one list, and the baselines, on hand-checked inputs."""

import numpy as np
import pytest

from evaluation.baselines import CosineCooccurrence, MostPopular, recommend_all
from mind.retrieval import RecallQuery, merge_hits, recall, recall_many


def test_merge_pools_sorts_dedupes_and_cuts():
    # One user, two interests with 3 hits each; item 7 found by both.
    ids = np.array([[7, 3, 0, 7, 9, -1]])
    scores = np.array([[0.9, 0.5, 0.4, 0.8, 0.7, -np.inf]], dtype=np.float32)
    (row,) = merge_hits(ids, scores, top_n=3)
    assert row.tolist() == [7, 9, 3]  # 7 once (its best score), 0 and -1 dropped


def test_merge_excludes_history_and_keeps_rows_apart():
    ids = np.array([[1, 2, 3, 4], [1, 2, 3, 4]])
    scores = np.array([[4, 3, 2, 1], [1, 2, 3, 4]], dtype=np.float32)
    rows = merge_hits(ids, scores, top_n=2, exclude=[np.array([1]), np.array([4, 99])])
    assert [r.tolist() for r in rows] == [[2, 3], [3, 2]]


def test_merge_short_rows_are_not_padded():
    ids = np.array([[5, -1, -1]])
    scores = np.array([[1.0, -np.inf, -np.inf]], dtype=np.float32)
    assert merge_hits(ids, scores, top_n=3)[0].tolist() == [5]


class TinyTower:
    """A two-interest user tower over 6 items with fixed vectors (no training)."""

    item_count = 6

    def __init__(self):
        self.items = np.array(
            [[0, 0], [1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9], [0.5, 0.5]], dtype=np.float32
        )

    def known_items(self, history):
        h = np.asarray(history, dtype=np.int64)
        return h[(h > 0) & (h < self.item_count)]

    def interests(self, histories):
        # Interest 1 = mean of "x" items (1, 2), interest 2 = mean of "y" items (3, 4).
        out = np.zeros((len(histories), 2, 2), dtype=np.float32)
        for u, h in enumerate(histories):
            k = self.known_items(h)
            for j, group in enumerate(([1, 2], [3, 4])):
                sel = [i for i in k if i in group]
                if sel:
                    out[u, j] = self.items[sel].mean(axis=0)
        return out

    def popular_items(self, n):
        return np.array([5, 1, 2, 3, 4])[:n]


def exact_search(items):
    def search(vectors, k):
        scores = vectors @ items[1:].T
        order = np.argsort(-scores, axis=1)[:, :k]
        return order + 1, np.take_along_axis(scores, order, axis=1)

    return search


def test_recall_uses_both_interests_and_filters_history():
    tower = TinyTower()
    search = exact_search(tower.items)
    # History touches both interests: the answer holds the unseen item of each.
    (row,) = recall(tower, search, [[1, 3]], top_k=2)
    assert sorted(row) == [2, 4]
    (row,) = recall(tower, search, [[1, 3]], top_k=5, exclude_history=False)
    assert set(row) >= {1, 3}


def test_recall_many_answers_each_query_as_if_alone():
    # Different top_k and history rules in one pass: each query's answer is the one
    # it would get alone, although the search used the largest per-vector limit.
    tower = TinyTower()
    calls = []

    def search(vectors, k):
        calls.append((len(vectors), k))
        return exact_search(tower.items)(vectors, k)

    queries = [
        RecallQuery([[1, 3]], top_k=2),
        RecallQuery([[1, 3], [4]], top_k=5, exclude_history=False),
        RecallQuery([[99]], top_k=3),
    ]
    together = recall_many(tower, search, queries)
    # One search, limit 5, of the 5 non-zero interests of 4 users: [4] has no "x" interest and
    # [99] none at all; zero vectors (masked interests) are never searched.
    assert calls == [(5, 5)]
    alone = [recall(tower, exact_search(tower.items), q.histories, q.top_k, q.exclude_history)
             for q in queries]
    assert together == alone
    assert together[2] == [[5, 1, 2]]  # unknown history -> most popular


def test_recall_falls_back_to_popular_for_unknown_history():
    tower = TinyTower()
    rows = recall(tower, exact_search(tower.items), [[99, 1000], [1]], top_k=3)
    assert rows[0] == [5, 1, 2]
    assert 1 not in rows[1] and len(rows[1]) == 3


# Training users: u0 {1,2}, u1 {1,2,3}, u2 {3}; each item has 2 users.
SEQS = {0: np.array([1, 2]), 1: np.array([1, 2, 3, 3]), 2: np.array([3])}


def test_cosine_cooccurrence_scores_by_hand():
    cf = CosineCooccurrence(SEQS, item_count=5)
    # sim(1,1)=2/2, sim(1,2)=2/sqrt(2*2), sim(1,3)=1/sqrt(2*2); item 4 never clicked.
    assert cf.scores(np.array([1])) == pytest.approx([0, 1.0, 1.0, 0.5, 0])
    # Summed over a history of {1, 3}: item 2 = 1 + 0.5.
    assert cf.scores(np.array([1, 3, 3]))[2] == pytest.approx(1.5)
    assert cf.recommend(np.array([1]), 2, exclude_history=True).tolist() == [2, 3]


def test_most_popular_counts_clicks_and_breaks_ties_by_id():
    mp = MostPopular(SEQS, item_count=5)
    assert mp.recommend(np.array([9]), 3).tolist() == [3, 1, 2]
    assert recommend_all(mp, [np.array([3])], 2, exclude_history=True)[0].tolist() == [1, 2]


def test_round_robin_merge_by_hand():
    # One user, K=2 lists of 3 hits. Interest 0 has the larger scores throughout, so a pooled
    # sort would give it every place; round robin alternates (inside a round: by score).
    ids = np.array([[1, 2, 3, 4, 2, 5]])
    scores = np.array([[0.9, 0.8, 0.7, 0.3, 0.2, 0.1]], dtype=np.float32)
    assert merge_hits(ids, scores, 4)[0].tolist() == [1, 2, 3, 4]
    rr = merge_hits(ids, scores, 4, strategy="round_robin", lists=2)[0].tolist()
    # Round 1: 1 (0.9), 4 (0.3); round 2: 2 (0.8), 2 again (dropped); round 3: 3, 5.
    assert rr == [1, 4, 2, 3]
    # Order inside a list comes from the scores, not from the input positions.
    shuffled = merge_hits(ids[:, [2, 0, 1, 5, 3, 4]], scores[:, [2, 0, 1, 5, 3, 4]], 4,
                          strategy="round_robin", lists=2)[0].tolist()
    assert shuffled == rr
    # History exclusion still applies.
    assert merge_hits(ids, scores, 3, exclude=[np.array([1])], strategy="round_robin",
                      lists=2)[0].tolist() == [4, 2, 3]


def test_merge_rejects_unknown_strategy_and_bad_blocks():
    ids = np.array([[1, 2, 3]])
    scores = np.ones((1, 3), np.float32)
    with pytest.raises(ValueError, match="merge strategy"):
        merge_hits(ids, scores, 2, strategy="best")
    with pytest.raises(ValueError, match="split into 2 lists"):
        merge_hits(ids, scores, 2, strategy="round_robin", lists=2)


def test_recall_round_robin_gives_each_interest_a_place():
    tower = TinyTower()

    def search(vectors, k):  # interest 0 scores far above interest 1 (a longer vector)
        assert vectors.shape[0] == 2
        ids = np.array([[1, 2, 5][:k], [3, 4, 5][:k]])
        return ids, np.array([[9.0, 8.0, 7.0][:k], [1.0, 0.9, 0.8][:k]], np.float32)

    pooled = recall(tower, search, [[1, 3]], top_k=3, exclude_history=False)
    rr = recall(tower, search, [[1, 3]], top_k=3, exclude_history=False, merge="round_robin")
    assert pooled == [[1, 2, 5]] and rr == [[1, 3, 2]]


def test_slot_quotas_by_hand():
    from mind.retrieval import slot_quotas

    assert slot_quotas(np.array([1, 1, 1, 1]), 50).tolist() == [13, 13, 12, 12]
    assert slot_quotas(np.array([1, 1, 0, 0]), 5).tolist() == [3, 2, 0, 0]
    assert slot_quotas(np.array([3.0, 1.0]), 10).tolist() == [8, 2]  # 7.5, 2.5: tie -> lower k
    assert slot_quotas(np.array([0.0, 0.0]), 4).tolist() == [0, 0]


def test_slots_merge_by_hand():
    # K=2 lists of 4 hits. Interest 0 scores far above interest 1: the pooled score merge gives
    # it every place; slots give each interest 2 of the 4, dedupe and history rules still apply.
    ids = np.array([[1, 2, 3, 4, 5, 2, 6, 7]])
    scores = np.array([[0.9, 0.8, 0.7, 0.6, 0.4, 0.3, 0.2, 0.1]], np.float32)
    assert merge_hits(ids, scores, 4)[0].tolist() == [1, 2, 3, 4]
    # Interest 0 takes 1, 2; interest 1 takes 5, then 2 is taken already, so 6. By score:
    assert merge_hits(ids, scores, 4, strategy="slots", lists=2)[0].tolist() == [1, 2, 5, 6]
    # History 1 left out: interest 0 takes 2, 3.
    assert merge_hits(ids, scores, 4, exclude=[np.array([1])], strategy="slots",
                      lists=2)[0].tolist() == [2, 3, 5, 6]
    # Shares 3:1 of 4 places: 3 for interest 0, 1 for interest 1.
    assert merge_hits(ids, scores, 4, strategy="slots", lists=2,
                      shares=np.array([[3.0, 1.0]]))[0].tolist() == [1, 2, 3, 5]
    # An interest short of hits: its free places go to the best remaining pooled hits.
    short = np.array([[1, 2, 3, 4, 5, -1, -1, -1]])
    assert merge_hits(short, scores, 4, strategy="slots", lists=2)[0].tolist() == [1, 2, 3, 5]


@pytest.mark.parametrize("strategy", ["score", "round_robin", "slots", "slots_norm"])
def test_masked_interest_never_contributes(strategy):
    # Interest 1 is masked: its hits (8, 9, with the highest scores) never appear.
    ids = np.array([[1, 2, 3, 8, 9, 1]])
    scores = np.array([[0.5, 0.4, 0.3, 9.0, 8.0, 7.0]], np.float32)
    (row,) = merge_hits(ids, scores, 3, strategy=strategy, lists=2,
                        active=np.array([[True, False]]))
    assert row.tolist() == [1, 2, 3]


def test_recall_with_a_zero_interest_searches_and_merges_only_the_live_one():
    tower = TinyTower()
    seen = []

    def search(vectors, k):
        seen.append(vectors.copy())
        return exact_search(tower.items)(vectors, k)

    for merge in ("score", "slots", "slots_norm", "round_robin"):
        (row,) = recall(tower, search, [[1]], top_k=4, exclude_history=False, merge=merge)
        # Only the "x" interest [1, 0] exists: items by x . e, never the score-0 ties (3) of a
        # zero vector.
        assert row == [1, 2, 5, 4]
    assert all(v.shape == (1, 2) and np.any(v != 0, axis=1).all() for v in seen)


def test_baselines_on_a_history_window_filter_the_whole_history():
    cooc = CosineCooccurrence(SEQS, 4)
    # Window 1 of [1, 3]: scored from item 3 alone (3's users u1, u2 also clicked 1, 2).
    want = cooc.recommend(np.array([3]), 3).tolist()
    assert recommend_all(cooc, [np.array([1, 3])], 3, window=1)[0].tolist() == want
    # Served: the window scores, but the whole history (1 and 3) is left out.
    assert recommend_all(cooc, [np.array([1, 3])], 3, exclude_history=True, window=1)[0].tolist() == [2]
    mp = MostPopular(SEQS, 4)
    assert recommend_all(mp, [np.array([1, 3])], 3, window=1)[0].tolist() == mp.recommend(np.array([]), 3).tolist()
