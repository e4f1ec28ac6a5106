"""Readers (PaddleRec's formats byte for byte, bad data) and the training sampler."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pytest
from mind.reader import (
    DataFormatError,
    EvalSet,
    TrainSampler,
    pad_histories,
    read_eval_dir,
    read_train_dir,
)

FIXTURES = Path(__file__).parent / "fixtures" / "data" / "paddlerec"
ITEMS = 367_983


# -- PaddleRec's formats -----------------------------------------------------------------------


def test_train_file_in_paddlerec_format():
    seqs = read_train_dir(FIXTURES / "train", item_count=ITEMS)
    assert sorted(seqs) == [0, 1, 2]
    assert seqs[0].tolist() == [31415, 926, 53589, 7932, 38462, 64]
    assert seqs[2].tolist() == [99375, 105820, 97494, 4592, 30781, 6406, 2862]
    assert all(s.dtype == np.int64 for s in seqs.values())


@pytest.mark.parametrize("subdir", ["valid", "valid_no_target"])
def test_eval_file_with_and_without_target_item(subdir):
    ev = read_eval_dir(FIXTURES / subdir, item_count=ITEMS)
    assert isinstance(ev, EvalSet)
    assert ev.user_ids.tolist() == [482936, 482946, 482955]
    assert ev.histories[1].tolist() == [9821, 48086, 51328, 230664, 70938]
    assert ev.eval_items[1].tolist() == [44609, 5505]
    assert ev.eval_items[2].tolist() == [811]
    assert ev.user_ids.dtype == np.int64 and ev.histories[0].dtype == np.int64


def test_train_lines_are_ordered_by_time_order_stably_across_files(tmp_path):
    (tmp_path / "a").write_text("7,10,2\n7,11,0\n\n8,5,0\n8,6,1\n7,12,2\n")
    (tmp_path / "b").write_text("7,13,1\n8,4,0\n")
    (tmp_path / ".hidden").write_text("garbage\n")
    (tmp_path / "sub").mkdir()
    seqs = read_train_dir(tmp_path)
    assert seqs[7].tolist() == [11, 13, 10, 12]  # time 0, 1, then the two 2s in file order
    assert seqs[8].tolist() == [5, 4, 6]


def test_crlf_and_spaces_take_the_slow_path_with_the_same_result(tmp_path):
    lf = tmp_path / "lf"
    crlf = tmp_path / "crlf"
    lf.mkdir(), crlf.mkdir()
    (lf / "p").write_text("0,5,0\n0,6,1\n1,7,0\n")
    (crlf / "p").write_bytes(b"0, 5,0\r\n0,6,1 \r\n\r\n1,7,0\r\n")
    a, b = read_train_dir(lf), read_train_dir(crlf)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


# -- bad data ----------------------------------------------------------------------------------


def write(dir_: Path, name: str, text: str) -> Path:
    dir_.mkdir(parents=True, exist_ok=True)
    (dir_ / name).write_text(text)
    return dir_


TRAIN_BAD = [
    ("0,1,0\n0,2,1\n0,3\n", 3, "uid,item_id,time_order"),
    ("0,1,0\n0,x,1\n", 2, "uid,item_id,time_order"),
    ("0,1,0\n0,1,0,9\n", 2, "uid,item_id,time_order"),
    ("0,1,0\n\n0,0,1\n", 3, "0 is the padding id"),
    ("0,1,0\n0,100,1\n", 2, "item_count=100"),
    ("0,1,0\n-1,2,1\n", 2, "uid,item_id,time_order"),
]


@pytest.mark.parametrize("text,line,expected", TRAIN_BAD)
def test_bad_train_line_names_file_line_and_expectation(tmp_path, text, line, expected):
    d = write(tmp_path / "train", "part-3", text)
    with pytest.raises(DataFormatError) as err:
        read_train_dir(d, item_count=100)
    msg = str(err.value)
    assert f"part-3:{line}:" in msg and expected in msg and "found" in msg


EVAL_BAD = [
    (
        "user_id:1 hist_item:2 eval_item:3\nuser_id:2 hist_item:2 colour:3 eval_item:4\n",
        2,
        "key:value",
    ),
    ("user_id:1 hist_item:2 eval_item:3\nuser_id:2 eval_item:4\n", 2, "hist_item"),
    ("user_id:1 hist_item:2\n", 1, "eval_item"),
    ("hist_item:2 eval_item:3\n", 1, "user_id"),
    ("user_id:1 hist_item:0 eval_item:3\n", 1, "0 is the padding id"),
    ("user_id:1 hist_item:2 eval_item:100\n", 1, "item_count=100"),
    ("user_id:1 hist_item:2 eval_item:x\n", 1, "integer"),
    ("user_id:1 hist_item:2 eval_item:3 junk\n", 1, "key:value"),
    (
        "user_id:1 hist_item:2 eval_item:3\nuser_id:1 hist_item:4 eval_item:5\n",
        2,
        "each user_id once",
    ),
]


@pytest.mark.parametrize("text,line,expected", EVAL_BAD)
def test_bad_eval_line_names_file_line_and_expectation(tmp_path, text, line, expected):
    d = write(tmp_path / "valid", "part-0", text)
    with pytest.raises(DataFormatError) as err:
        read_eval_dir(d, item_count=100)
    msg = str(err.value)
    assert f"part-0:{line}:" in msg and expected in msg


@pytest.mark.parametrize("reader", [read_train_dir, read_eval_dir])
def test_empty_file_empty_dir_and_missing_dir(tmp_path, reader):
    d = write(tmp_path / "d", "part-0", "")
    with pytest.raises(DataFormatError, match=r"part-0.*empty file"):
        reader(d)
    (d / "part-0").write_text("\n  \n")
    with pytest.raises(DataFormatError, match=r"part-0.*empty file"):
        reader(d)
    (tmp_path / "e").mkdir()
    with pytest.raises(DataFormatError) as err:
        reader(tmp_path / "e")
    assert "empty directory" in str(err.value) and "sh data.sh" in str(err.value)
    with pytest.raises(DataFormatError) as err:
        reader(tmp_path / "missing")
    assert "missing directory" in str(err.value)
    assert "cd recommend/data && sh data.sh synthetic" in str(err.value)


def test_skip_bad_skips_and_reports_the_count(tmp_path, caplog):
    d = write(tmp_path / "train", "p", "0,1,0\n0,2\n0,0,1\n0,3,2\n0,4,3\n")
    with caplog.at_level(logging.WARNING, logger="recdata"):
        seqs = read_train_dir(d, skip_bad=True)
    assert seqs[0].tolist() == [1, 3, 4]
    assert "skipped 2 bad line(s)" in caplog.text
    e = write(tmp_path / "valid", "p", "user_id:1 hist_item:2 eval_item:3\nuser_id:2 hist_item:4\n")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="recdata"):
        ev = read_eval_dir(e, item_count=10, skip_bad=True)
    assert ev.user_ids.tolist() == [1]
    assert "skipped 1 bad line(s)" in caplog.text


# -- pad_histories -----------------------------------------------------------------------------


def test_pad_histories_keeps_the_last_maxlen_items_left_aligned():
    out = pad_histories([[1, 2, 3], np.arange(1, 31), [], [9]], maxlen=5)
    assert out.dtype == np.int64 and out.shape == (4, 5)
    assert out.tolist() == [
        [1, 2, 3, 0, 0],
        [26, 27, 28, 29, 30],
        [0, 0, 0, 0, 0],
        [9, 0, 0, 0, 0],
    ]


# -- TrainSampler ------------------------------------------------------------------------------


def coded_sequences(n_users: int = 60, seed: int = 0) -> dict[int, np.ndarray]:
    """Item = 1000 * (user + 1) + position: every item tells where it came from."""
    rng = np.random.default_rng(seed)
    lens = rng.integers(2, 40, size=n_users)
    return {u: 1000 * (u + 1) + np.arange(n) for u, n in enumerate(lens)}


def test_sampler_targets_and_histories_follow_the_comirec_rule():
    seqs = coded_sequences()
    s = TrainSampler(seqs, batch_size=32, maxlen=6, seed=3)
    assert len(s) == sum(max(0, len(v) - 4) for v in seqs.values() if len(v) >= 5) // 32
    seen_users = set()
    for hist, target in s.epoch(0):
        assert hist.shape == (32, 6) and target.shape == (32,)
        for h, t in zip(hist, target, strict=True):
            u, k = divmod(int(t), 1000)
            u -= 1
            seen_users.add(u)
            assert len(seqs[u]) >= 5 and 4 <= k < len(seqs[u])
            n = min(k, 6)
            expected = list(seqs[u][k - n : k]) + [0] * (6 - n)
            assert h.tolist() == expected
    assert seen_users == {u for u, v in seqs.items() if len(v) >= 5}


def test_sampler_is_deterministic_per_seed_and_epoch():
    seqs = coded_sequences()
    a = [t.tolist() for _, t in TrainSampler(seqs, 16, seed=1).epoch(2)]
    b = [t.tolist() for _, t in TrainSampler(seqs, 16, seed=1).epoch(2)]
    c = [t.tolist() for _, t in TrainSampler(seqs, 16, seed=1).epoch(3)]
    d = [t.tolist() for _, t in TrainSampler(seqs, 16, seed=2).epoch(2)]
    assert a == b and a != c and a != d


def test_sampler_resume_from_start_batch_is_exact_across_chunks():
    seqs = coded_sequences(200)
    s = TrainSampler(seqs, batch_size=8, seed=5, samples_per_epoch=8 * 50)
    s.CHUNK_SAMPLES = 8 * 7  # several vectorised chunks per epoch
    full = list(s.epoch(4))
    assert len(full) == len(s) == 50
    for start in (0, 6, 7, 8, 21, 49, 50):
        resumed = list(s.epoch(4, start_batch=start))
        assert len(resumed) == 50 - start
        for (h1, t1), (h2, t2) in zip(full[start:], resumed, strict=True):
            assert np.array_equal(h1, h2) and np.array_equal(t1, t2)


def test_sampler_draws_fresh_samples_within_an_epoch():
    # Sampling with replacement from ~3,000 positions covers most of them in 3,000 draws
    # (1 - 1/e); a reader that reseeds per sample would repeat a few.
    seqs = coded_sequences(200, seed=1)
    s = TrainSampler(seqs, batch_size=100, seed=0)
    targets = np.concatenate([t for _, t in s.epoch(0)])
    assert len(np.unique(targets)) > 0.5 * s.num_positions


def test_sampler_throughput():
    rng = np.random.default_rng(0)
    lens = rng.integers(5, 30, size=20_000)
    seqs = {u: rng.integers(1, 367_983, size=n) for u, n in enumerate(lens)}
    s = TrainSampler(seqs, batch_size=1024, seed=0, samples_per_epoch=300_000)
    t0 = time.perf_counter()
    n = sum(len(t) for _, t in s.epoch(0))
    rate = n / (time.perf_counter() - t0)
    assert n == len(s) * 1024 and rate > 50_000, rate


def test_sampler_rejects_settings_without_a_full_batch():
    with pytest.raises(ValueError):
        TrainSampler({0: np.arange(1, 4)}, batch_size=1)  # no user with >= 5 clicks
    with pytest.raises(ValueError):
        TrainSampler(coded_sequences(), batch_size=10**6)
    with pytest.raises(ValueError):
        TrainSampler(coded_sequences(), batch_size=4, min_len=3)
