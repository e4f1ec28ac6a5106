"""ComiRec's controllable aggregation (merge "controllable", request field "diversity"): the greedy
selection checked by hand, its categories read from item maps, its place in recall_many and the
request's limits."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from config import Settings
from mind.config import ConfigError, load_config
from mind.retrieval import (MAX_DIVERSITY, RecallQuery, greedy_diverse, item_categories,
                            merge_hits, recall, recall_many)
from recdata.itemmap import ItemMap
from service.schemas import recall_request_model
from support import MODEL_DIR
from test_retrieval import TinyTower, exact_search

A, B = [True, False], [False, True]
# Candidates best first: items 1 (A, 1.0), 2 (A, 0.95), 3 (B, 0.9), 4 (A, 0.5), 5 (B, 0.4).
SCORES = np.array([1.0, 0.95, 0.9, 0.5, 0.4])
CATS = np.array([A, A, B, A, B])


def test_greedy_by_hand() -> None:
    # lambda 0: by score.
    assert greedy_diverse(SCORES, CATS, 0.0, 4).tolist() == [0, 1, 2, 3]
    # lambda 0.3: 1; then 3 (0.9 - 0) over 2 (0.95 - 0.3); then 2 (0.95 - 0.3 = 0.65) over 4
    # (0.5 - 0.3) and 5 (0.4 - 0.3); then 5 (0.4 - 0.3 = 0.1) over 4 (0.5 - 2 x 0.3 = -0.1): the
    # penalty counts every chosen item of the category, not just whether one was chosen.
    assert greedy_diverse(SCORES, CATS, 0.3, 4).tolist() == [0, 2, 1, 4]
    # lambda 0.04 < 0.95 - 0.9: the first two are as by score; the third is 3 (0.9 - 0 beats
    # 0.5 - 0.08), the fourth 4 (0.5 - 2 x 0.04 = 0.42) against 5 (0.4 - 0.04 = 0.36).
    assert greedy_diverse(SCORES, CATS, 0.04, 4).tolist() == [0, 1, 2, 3]
    # Fewer candidates than places: all of them; none: nothing.
    assert greedy_diverse(SCORES[:2], CATS[:2], 0.3, 5).tolist() == [0, 1]
    assert greedy_diverse(SCORES[:0], CATS[:0], 0.3, 5).tolist() == []


def test_greedy_with_several_and_no_categories() -> None:
    # Item 1: {A, B}; 2: {B}; 3: no category (shares none); 4: {A}.
    scores = np.array([1.0, 0.9, 0.8, 0.7])
    cats = np.array([[True, True], B, [False, False], A])
    # lambda 0.25: 1; then 2 (0.65: shares B with 1) vs 3 (0.8) -> 3; then 2 (0.65) vs 4
    # (0.7 - 0.25 = 0.45) -> 2; then 4.
    assert greedy_diverse(scores, cats, 0.25, 4).tolist() == [0, 2, 1, 3]


def test_merge_hits_controllable_pools_dedupes_excludes_and_keeps_positions() -> None:
    # Two interests x 3 hits; item 2 found by both (best 0.95), item 9 is history, -1 a filler.
    ids = np.array([[1, 2, 9, 3, 2, -1]])
    scores = np.array([[1.0, 0.95, 0.92, 0.9, 0.3, -np.inf]])
    cats = np.zeros((10, 2), bool)
    cats[[1, 2, 9]] = A
    cats[3] = B
    got = merge_hits(ids, scores, 3, [np.array([9])], "controllable", lists=2,
                     categories=cats, diversity=0.3, positions=(pos := []))
    assert got[0].tolist() == [1, 3, 2]
    assert pos[0].tolist() == [0, 3, 1]  # the column of each item's best hit
    score = merge_hits(ids, scores, 3, [np.array([9])], "score", lists=2)
    assert merge_hits(ids, scores, 3, [np.array([9])], "controllable", lists=2,
                      categories=cats, diversity=0.0)[0].tolist() == score[0].tolist() == [1, 2, 3]
    with pytest.raises(ValueError, match="needs the items' categories"):
        merge_hits(ids, scores, 3, strategy="controllable", lists=2, diversity=0.1)


def test_lambda_zero_is_the_score_merge_on_random_hits() -> None:
    rng = np.random.default_rng(0)
    ids = rng.integers(-1, 40, size=(20, 4 * 15))
    scores = rng.normal(size=ids.shape)
    cats = rng.random((40, 5)) < 0.3
    exclude = [rng.integers(1, 40, size=3) for _ in range(20)]
    a = merge_hits(ids, scores, 10, exclude, "score", lists=4)
    b = merge_hits(ids, scores, 10, exclude, "controllable", lists=4, categories=cats)
    assert all((x == y).all() for x, y in zip(a, b))


def test_item_categories_from_item_maps() -> None:
    keys = np.array(["", "a", "b", "c"], object)
    synthetic = ItemMap(keys, {"category": np.array(["", "Books", "Music", "Books"], object)})
    cats = item_categories(synthetic, 4)
    assert cats.tolist() == [[False, False], [True, False], [False, True], [True, False]]
    movielens = ItemMap(keys, {"genre": np.array([(), ("Drama", "War"), (), ("War",)], object),
                               "title": np.array(["", "x", "y", "z"], object)},
                        frozenset({"genre"}))
    cats = item_categories(movielens, 4)  # vocabulary sorted: Drama, War
    assert cats.tolist() == [[False, False], [True, True], [False, False], [False, True]]
    assert item_categories(movielens, 4, "title").sum(axis=1).tolist() == [0, 1, 1, 1]
    assert item_categories(ItemMap(keys, {"title": keys}), 4) is None
    assert item_categories(movielens, 4, "colour") is None
    assert item_categories(None, 4) is None


def test_recall_many_answers_a_diverse_query_beside_a_plain_one() -> None:
    tower = TinyTower()
    search = exact_search(tower.items)
    cats = np.zeros((tower.item_count, 2), bool)
    cats[1:3] = A
    cats[3:] = B
    plain = RecallQuery([[1, 3]], top_k=4, exclude_history=False)
    diverse = RecallQuery([[1, 3]], top_k=4, exclude_history=False, diversity=MAX_DIVERSITY)
    got_plain, got_diverse = recall_many(tower, search, [plain, diverse], categories=cats)
    assert got_plain == recall(tower, search, [[1, 3]], 4, False)
    assert got_diverse == recall(tower, search, [[1, 3]], 4, False, diversity=MAX_DIVERSITY,
                                 categories=cats)
    # A huge lambda alternates the categories as long as both have items left.
    row = got_diverse[0]
    assert [bool(cats[i, 0]) for i in row[:4]] in ([True, False, True, False],
                                                   [False, True, False, True])
    with pytest.raises(ValueError, match="no category column"):
        recall_many(tower, search, [diverse])


def test_request_diversity_limits() -> None:
    model = recall_request_model(Settings.from_env({}))
    assert model.model_validate({"hist_item": [[1]]}).diversity is None
    assert model.model_validate({"hist_item": [[1]], "diversity": 0.2}).diversity == 0.2
    assert model.model_validate({"hist_item": [[1]], "diversity": 0}).diversity == 0
    for bad in (-0.1, MAX_DIVERSITY + 1, "0.1", True, float("inf")):
        with pytest.raises(ValidationError):
            model.model_validate({"hist_item": [[1]], "diversity": bad})


def test_config_merge_lambda() -> None:
    path = MODEL_DIR / "mind" / "config_synthetic.yaml"
    c = load_config(path, ["hyper_parameters.item_count=50", "runner.merge_lambda=0.1"])
    assert (c.runner.merge_lambda, c.runner.merge_category) == (0.1, "")
    with pytest.raises(ConfigError, match=r"'runner\.merge_lambda' must be >= 0"):
        load_config(path, ["hyper_parameters.item_count=50", "runner.merge_lambda=-1"])
