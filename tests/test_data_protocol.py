"""The ComiRec protocol shared by every dataset variant, and the vectorised text writer."""

from __future__ import annotations

import numpy as np
import pytest
from mind.reader import read_eval_dir, read_train_dir
from recdata.clicks import Clicks
from recdata.output import remap_by_frequency
from recdata.protocol import drop_short, history_lengths, render_eval, render_train, split_users
from recdata.textio import render_tokens


def random_clicks(n_users: int = 500, seed: int = 0) -> Clicks:
    rng = np.random.default_rng(seed)
    lens = rng.integers(1, 30, size=n_users)
    users = np.repeat(rng.permutation(10 * n_users)[:n_users], lens)
    items = rng.integers(1, 1000, size=len(users))
    order = rng.integers(0, 5, size=len(users))  # many ties: stability matters
    return Clicks.from_events(users, items, order)


def test_from_events_orders_by_time_and_keeps_ties_in_input_order():
    c = Clicks.from_events(
        np.array([5, 3, 5, 5, 3]), np.array([1, 2, 3, 4, 5]), np.array([2, 0, 1, 1, 0])
    )
    assert c.user_ids.tolist() == [3, 5]
    assert c.sequence(0).tolist() == [2, 5] and c.sequence(1).tolist() == [3, 4, 1]


def test_split_is_disjoint_complete_8_1_1_and_seeded():
    clicks, dropped = drop_short(random_clicks())
    assert dropped == int((random_clicks().lengths < 5).sum()) > 0
    assert clicks.lengths.min() >= 5
    parts = split_users(clicks, seed=7)
    sets = {k: set(v.user_ids.tolist()) for k, v in parts.items()}
    n = len(clicks)
    assert len(sets["train"]) == n * 8 // 10
    assert len(sets["valid"]) == n * 9 // 10 - n * 8 // 10
    assert not (
        sets["train"] & sets["valid"]
        or sets["train"] & sets["test"]
        or sets["valid"] & sets["test"]
    )
    assert sets["train"] | sets["valid"] | sets["test"] == set(clicks.user_ids.tolist())
    for part in parts.values():  # sequences travel with their users
        for i, u in enumerate(part.user_ids):
            j = int(np.flatnonzero(clicks.user_ids == u)[0])
            assert np.array_equal(part.sequence(i), clicks.sequence(j))
    again = split_users(clicks, seed=7)
    other = split_users(clicks, seed=8)
    assert np.array_equal(again["test"].user_ids, parts["test"].user_ids)
    assert not np.array_equal(other["test"].user_ids, parts["test"].user_ids)


@pytest.mark.parametrize(
    "n,hist",
    [
        (2, 1),
        (3, 2),
        (4, 3),
        (5, 4),
        (6, 4),
        (9, 7),
        (10, 8),
        (11, 8),
        (14, 11),
        (15, 12),
        (35, 28),
        (100, 80),
    ],
)
def test_history_eval_cut(n, hist):
    assert history_lengths(np.array([n]))[0] == hist
    if n >= 5:  # ComiRec's int(0.8 * n) for the users it keeps
        assert hist == int(n * 0.8)


def test_history_cut_needs_two_clicks():
    with pytest.raises(ValueError):
        history_lengths(np.array([5, 1]))


def test_rendered_files_read_back_exactly(tmp_path):
    clicks, _ = drop_short(random_clicks(300, seed=3))
    (tmp_path / "train").mkdir()
    (tmp_path / "valid").mkdir()
    (tmp_path / "train" / "p").write_bytes(render_train(clicks))
    (tmp_path / "valid" / "p").write_bytes(render_eval(clicks))
    seqs = read_train_dir(tmp_path / "train", item_count=1000)
    ev = read_eval_dir(tmp_path / "valid", item_count=1000)
    assert ev.user_ids.tolist() == clicks.user_ids.tolist()
    for i, u in enumerate(clicks.user_ids.tolist()):
        full = clicks.sequence(i)
        assert np.array_equal(seqs[u], full)
        nh = history_lengths(np.array([len(full)]))[0]
        assert np.array_equal(ev.histories[i], full[:nh])
        assert np.array_equal(ev.eval_items[i], full[nh:])


def test_render_tokens_matches_python_formatting():
    rng = np.random.default_rng(1)
    values = np.r_[0, 9, 10, 99, 100, 10**17, 10**18 - 1, rng.integers(0, 10**12, size=3000)]
    pre = rng.integers(0, 3, size=len(values))
    suf = rng.integers(0, 2, size=len(values))
    prefixes, suffixes = ["", "hist_item:", "u:"], [" ", "\n"]
    expected = "".join(
        f"{prefixes[p]}{v}{suffixes[s]}" for v, p, s in zip(values, pre, suf, strict=True)
    )
    assert render_tokens(values, pre, suf, prefixes, suffixes).decode() == expected


def test_remap_by_frequency_gives_id_1_to_the_most_clicked():
    items = np.array([5, 2, 5, 7, 2, 5, 0])
    new, new_id = remap_by_frequency(items, 8)
    assert new.tolist() == [1, 2, 1, 4, 2, 1, 3]  # 5 (x3), 2 (x2), then ties 0 < 7
    assert sorted(new_id.tolist()) == list(range(1, 9))
