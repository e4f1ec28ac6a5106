"""Metrics against a table computed by hand (see the comments beside each row)."""

import math

import numpy as np
import pytest

from evaluation.metrics import hit_matrix, per_user_metrics, topn_metrics

L3 = 1 / math.log2(3)  # discount of rank 2
L4 = 1 / math.log2(4)  # discount of rank 3 (= 0.5)

# (recommended, eval items, recall, ndcg, hitrate, ndcg_comirec) at N = 3
TABLE = [
    # one hit at rank 2 of 2 eval items: IDCG over 2 positions
    ([5, 7, 9], [7, 11], 1 / 2, L3 / (1 + L3), 1.0, L3 / 1.0),
    # a list shorter than N, one eval item hit at rank 1
    ([1, 2], [1], 1.0, 1.0, 1.0, 1.0),
    # more eval items than N, no hit
    ([4, 5, 6], [8, 9, 10, 11, 12], 0.0, 0.0, 0.0, 0.0),
    # 3 hits of 4 eval items: IDCG over min(4, 3) = 3 positions, so NDCG is 1
    ([3, 4, 5], [3, 4, 5, 6], 3 / 4, 1.0, 1.0, 1.0),
    # duplicate eval items count once (a set)
    ([2], [2, 2], 1.0, 1.0, 1.0, 1.0),
    # hit at rank 3 only, one eval item
    ([8, 9, 1], [1], 1.0, L4, 1.0, L4),
]


def test_per_user_values_match_hand_table():
    rec = [row[0] for row in TABLE]
    ev = [row[1] for row in TABLE]
    hits, sizes = hit_matrix(rec, ev, 3)
    got = per_user_metrics(hits, sizes)
    for i, (_, _, recall, ndcg, hitrate, ndcg_c) in enumerate(TABLE):
        assert got["recall"][i] == pytest.approx(recall), i
        assert got["ndcg"][i] == pytest.approx(ndcg), i
        assert got["hitrate"][i] == pytest.approx(hitrate), i
        assert got["ndcg_comirec"][i] == pytest.approx(ndcg_c), i


def test_means_weight_every_user_once():
    rec = [row[0] for row in TABLE]
    ev = [row[1] for row in TABLE]
    m = topn_metrics(rec, ev, 3)
    assert m["recall"] == pytest.approx(np.mean([r[2] for r in TABLE]))
    assert m["ndcg"] == pytest.approx(np.mean([r[3] for r in TABLE]))
    assert m["hitrate"] == pytest.approx(5 / 6)


def test_only_the_first_n_recommendations_count():
    # The hit sits at rank 4; at N = 3 it must not count.
    assert topn_metrics([[1, 2, 3, 4]], [[4]], 3)["recall"] == 0.0
    assert topn_metrics([[1, 2, 3, 4]], [[4]], 4)["recall"] == 1.0


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="no eval items"):
        topn_metrics([[1]], [[]], 3)
    with pytest.raises(ValueError, match="same id twice"):
        topn_metrics([[1, 1]], [[1]], 3)
    with pytest.raises(ValueError, match="lists for"):
        topn_metrics([[1]], [[1], [2]], 3)
