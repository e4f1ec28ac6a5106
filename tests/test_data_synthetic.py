"""The synthetic generator: determinism, planted interests, ground truth, frequency ids."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from mind.reader import read_eval_dir, read_train_dir
from recdata.itemmap import read_item_map
from recdata.synthetic import SyntheticConfig, category_name, generate, prepare

SMALL = SyntheticConfig(items=600, categories=12, users=500, min_len=8, max_len=30, seed=11)


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("syn") / "synthetic"
    prepare(out, SMALL, full=False)
    return out


FILES = ["train/part-0", "valid/part-0", "test/part-0", "truth.npz", "item_map.tsv"]


def test_same_seed_gives_byte_identical_files(small_dataset, tmp_path):
    again = tmp_path / "again"
    prepare(again, SMALL, full=False)
    for f in FILES:
        assert (again / f).read_bytes() == (small_dataset / f).read_bytes(), f


def test_different_seed_gives_different_files(small_dataset, tmp_path):
    other = tmp_path / "other"
    prepare(other, SyntheticConfig(**{**SMALL.__dict__, "seed": 12}), full=False)
    for f in FILES[:3]:
        assert (other / f).read_bytes() != (small_dataset / f).read_bytes(), f


def test_planted_interests_are_in_the_sequences():
    g = generate(SyntheticConfig())  # the defaults the demo trains on
    c = g.clicks
    user = np.repeat(np.arange(len(c)), c.lengths)
    cat = g.item_category[c.items]
    assert (cat >= 0).all()
    inside = (g.user_interests[user] == cat[:, None]).any(axis=1)
    per_user = np.add.reduceat(inside.astype(float), c.offsets[:-1]) / c.lengths
    assert per_user.mean() >= 0.95 and per_user.min() >= 0.8
    n_int = (g.user_interests >= 0).sum(axis=1)
    assert set(np.unique(n_int).tolist()) == {1, 2, 3, 4}
    visited = np.array(
        [
            len(
                np.unique(
                    cat[c.offsets[i] : c.offsets[i + 1]][inside[c.offsets[i] : c.offsets[i + 1]]]
                )
            )
            for i in range(len(c))
        ]
    )
    multi = n_int >= 3
    assert (visited[multi] >= 3).mean() >= 0.98
    assert (visited[n_int == 1] == 1).all()
    # Repeats are rare, as in AmazonBook.
    distinct = np.array([len(np.unique(c.sequence(i))) for i in range(len(c))])
    assert (distinct / c.lengths).mean() > 0.9


def test_truth_file_and_frequency_ids(small_dataset):
    meta = json.loads((small_dataset / "meta.json").read_text())
    item_count = meta["item_count"]
    assert item_count == SMALL.items + 1
    truth = np.load(small_dataset / "truth.npz")
    cats = truth["item_category"]
    assert cats.shape == (item_count,) and cats[0] == -1
    assert cats[1:].min() >= 0 and set(np.unique(cats[1:])) == set(range(SMALL.categories))
    interests = truth["user_interests"]
    assert interests.shape == (SMALL.users, 4)
    train = read_train_dir(small_dataset / "train", item_count)
    valid = read_eval_dir(small_dataset / "valid", item_count)
    test = read_eval_dir(small_dataset / "test", item_count)
    all_users = set(train) | set(valid.user_ids.tolist()) | set(test.user_ids.tolist())
    assert all_users <= set(truth["user_ids"].tolist())
    items = np.concatenate(
        list(train.values()) + valid.histories + valid.eval_items + test.histories + test.eval_items
    )
    counts = np.bincount(items, minlength=item_count)[1:]
    assert (np.diff(counts) <= 0).all()  # id 1 = most clicked, and so on
    assert meta["seed"] == SMALL.seed and meta["options"]["items"] == SMALL.items
    # item_map.tsv: key p0017 and title "Product 17" for id 17, its planted category's name.
    m = read_item_map(small_dataset / "item_map.tsv")
    assert m.keys[17] == "p0017" and m.columns["title"][17] == "Product 17" and len(m) == SMALL.items
    assert m.columns["category"][1:].tolist() == [category_name(c) for c in cats[1:].tolist()]
    assert len({category_name(c) for c in range(1000)}) == 1000
    assert meta["users"] == {"train": len(train), "valid": len(valid), "test": len(test)}
