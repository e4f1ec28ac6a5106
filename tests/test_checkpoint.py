"""Checkpoints: round trip, atomic write, corrupt/partial detection."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import paddle
import pytest

from mind import checkpoint as ckpt
from mind.checkpoint import CheckpointError, list_epochs, load_item_counts, load_model, save_checkpoint
from mind.config import load_config
from mind.network import MIND


@pytest.fixture()
def setup(tmp_path: Path):
    p = tmp_path / "c.yaml"
    p.write_text(
        "runner: {train_data_dir: d/train, test_data_dir: d/test, model_save_path: out}\n"
        "hyper_parameters: {item_count: 50, embedding_dim: 8, hidden_size: 8, neg_samples: 16,"
        " maxlen: 5, capsual: {max_k: 2}}\n"
    )
    config = load_config(p)
    paddle.seed(0)
    model = MIND(config.hyper_parameters)
    opt = paddle.optimizer.Adam(0.01, parameters=model.parameters(), lazy_mode=True)
    loss = model(paddle.to_tensor(np.array([[1, 2, 3, 0, 0]])), paddle.to_tensor(np.array([4])))
    loss.backward()
    opt.step()
    opt.clear_grad()
    return config, model, opt


def test_round_trip(setup) -> None:
    config, model, opt = setup
    counts = np.arange(50)
    d = save_checkpoint(config.runner.model_save_path, 3, model, opt, config, {"train_loss": 1.5},
                        item_counts=counts)
    assert d == config.runner.model_save_path / "3"
    assert sorted(p.name for p in d.iterdir()) == ["item_counts.npy", "meta.json", "rec.pdopt",
                                                   "rec.pdparams"]
    assert list_epochs(config.runner.model_save_path) == [3]
    loaded = load_model(config, 3)
    assert not loaded.training
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=k)
    np.testing.assert_array_equal(load_item_counts(config, 3), counts)
    meta = json.loads((d / "meta.json").read_text())
    assert meta["epoch"] == 3 and meta["train_loss"] == 1.5 and meta["format_version"] == 1
    assert meta["config"]["hyper_parameters"]["item_count"] == 50
    # Optimizer state comes back too.
    opt2 = paddle.optimizer.Adam(0.01, parameters=loaded.parameters(), lazy_mode=True)
    ckpt.restore(config.runner.model_save_path, 3, loaded, opt2)
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert len(s1) > 2
    for (k1, v1), (k2, v2) in zip(sorted(s1.items()), sorted(s2.items())):
        if hasattr(v1, "numpy"):
            np.testing.assert_array_equal(v1.numpy(), v2.numpy(), err_msg=k1)


def test_resave_replaces_and_leaves_no_temp(setup) -> None:
    config, model, opt = setup
    root = config.runner.model_save_path
    save_checkpoint(root, 0, model, opt, config, {"train_loss": 2.0})
    save_checkpoint(root, 0, model, opt, config, {"train_loss": 1.0})
    assert [p.name for p in root.iterdir()] == ["0"]
    assert json.loads((root / "0" / "meta.json").read_text())["train_loss"] == 1.0


def test_corrupt_file_is_detected(setup) -> None:
    config, model, opt = setup
    d = save_checkpoint(config.runner.model_save_path, 0, model, opt, config, {})
    raw = bytearray((d / "rec.pdparams").read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (d / "rec.pdparams").write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="checksum"):
        load_model(config, 0)


def test_partial_and_missing_checkpoints(setup) -> None:
    config, model, opt = setup
    root = config.runner.model_save_path
    d = save_checkpoint(root, 0, model, opt, config, {})
    (d / "rec.pdopt").unlink()
    assert list_epochs(root) == []
    with pytest.raises(CheckpointError, match="missing"):
        load_model(config, 0)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_model(config, 7)
    (root / "5").mkdir()  # a folder without meta.json is not a checkpoint
    assert list_epochs(root) == []


def test_kill_mid_write_leaves_nothing(setup, monkeypatch) -> None:
    config, model, opt = setup
    root = config.runner.model_save_path

    def boom(*a, **k):
        raise KeyboardInterrupt  # what a Ctrl-C between two files looks like

    monkeypatch.setattr(ckpt.np, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(root, 1, model, opt, config, {}, item_counts=np.zeros(50))
    assert list(root.iterdir()) == []
    assert list_epochs(root) == []


def test_config_mismatch_is_a_checkpoint_error(setup) -> None:
    config, model, opt = setup
    save_checkpoint(config.runner.model_save_path, 0, model, opt, config, {})
    other = config.model_copy(
        update={"hyper_parameters": config.hyper_parameters.model_copy(update={"item_count": 60})})
    with pytest.raises(CheckpointError, match="item_count"):
        load_model(other, 0)


def test_clear_run_removes_only_what_the_trainer_writes(setup) -> None:
    config, model, opt = setup
    root = config.runner.model_save_path
    save_checkpoint(root, 0, model, opt, config, {})
    run = ckpt.start_run(root, config.path)
    assert ckpt.read_run(root) == run and len(run["run_id"]) == 32
    (root / "train_log.jsonl").write_text("{}\n")
    (root / "milvus_eval.db").write_text("infer.py's")
    (root / "7").mkdir()
    (root / "7" / "mine.txt").write_text("someone's")
    with pytest.raises(CheckpointError, match="does not write"):
        ckpt.clear_run(root)
    assert list_epochs(root) == [0]  # nothing removed
    (root / "7" / "mine.txt").unlink()
    removed = {p.name for p in ckpt.clear_run(root)}
    assert removed == {"0", "7", "run.json", "train_log.jsonl"}
    assert [p.name for p in root.iterdir()] == ["milvus_eval.db"]
    assert ckpt.read_run(root) is None
