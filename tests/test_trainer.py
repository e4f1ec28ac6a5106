"""trainer.py end to end on tiny data: loss goes down, checkpoints, log, exact resume."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import paddle
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recommend" / "model"))
import trainer  # noqa: E402

from mind.checkpoint import list_epochs, load_item_counts, load_model, read_meta, read_run  # noqa: E402
from mind.config import load_config  # noqa: E402


def make_data(root: Path, seed: int = 0) -> None:
    """120 users, each clicking 12 items of one of 3 item groups (ids 1..60)."""
    rng = np.random.default_rng(seed)
    lines = []
    for uid in range(120):
        group = uid % 3
        items = rng.integers(1 + 20 * group, 21 + 20 * group, size=12)
        lines += [f"{uid},{item},{t}" for t, item in enumerate(items)]
    (root / "train").mkdir(parents=True)
    (root / "train" / "part-0").write_text("\n".join(lines) + "\n")


def make_config(tmp_path: Path, *overrides: str):
    make_data(tmp_path / "data")
    p = tmp_path / "c.yaml"
    p.write_text(
        "runner:\n"
        "  train_data_dir: data/train\n  test_data_dir: data/test\n  model_save_path: out\n"
        "  train_batch_size: 32\n  samples_per_epoch: 640\n  epochs: 3\n  print_interval: 10\n"
        "  seed: 7\n"
        "hyper_parameters:\n"
        "  item_count: 61\n  embedding_dim: 16\n  hidden_size: 16\n  neg_samples: 32\n"
        "  maxlen: 8\n  optimizer: {class: Adam, learning_rate: 0.01}\n  capsual: {max_k: 2}\n"
    )
    return load_config(p, overrides)


def weights(config, epoch: int) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in load_model(config, epoch).state_dict().items()}


def test_train_end_to_end(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    lines: list[str] = []
    records = trainer.train(config, log=lines.append)
    root = config.runner.model_save_path
    assert list_epochs(root) == [0, 1, 2]
    assert records[-1]["train_loss"] < records[0]["train_loss"] - 0.3
    log = [json.loads(x) for x in (root / "train_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [0, 1, 2]
    assert any("samples/s" in x and "batch 10/20" in x for x in lines)
    # The losses printed every print_interval batches are kept for loss.png.
    assert [b for b, _ in log[0]["interval_losses"]] == [10, 20]
    assert (root / "loss.png").is_file()
    assert lines[-1].startswith("checkpoints: ") and "(epochs 0-2)" in lines[-1]
    assert str(root / "loss.png") in lines[-1] or "out/loss.png" in lines[-1]
    counts = load_item_counts(config, 2)
    assert counts.shape == (61,) and counts.sum() == 120 * 12 and counts[0] == 0


def test_lr_decay_sets_each_epochs_step_size_and_survives_a_resume(tmp_path: Path) -> None:
    config = make_config(tmp_path, "hyper_parameters.optimizer.lr_decay=0.5", "runner.epochs=2")
    records = trainer.train(config, log=lambda s: None)
    assert [r["learning_rate"] for r in records] == [0.01, 0.005]
    more = make_config(tmp_path / "more", "hyper_parameters.optimizer.lr_decay=0.5")
    trainer.train(more, log=lambda s: None)
    resumed = load_config(more.path, ("hyper_parameters.optimizer.lr_decay=0.5", "runner.epochs=4"))
    records = trainer.train(resumed, resume=True, log=lambda s: None)
    assert [r["learning_rate"] for r in records] == [0.01, 0.005, 0.0025, 0.00125]


def test_interrupted_then_resumed_equals_uninterrupted(tmp_path: Path) -> None:
    full = make_config(tmp_path / "a")
    trainer.train(full, log=lambda s: None)

    cut = make_config(tmp_path / "b")

    def die_mid_epoch_2(line: str) -> None:
        if line.startswith("epoch 2 batch 10"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        trainer.train(cut, log=die_mid_epoch_2)
    assert list_epochs(cut.runner.model_save_path) == [0, 1]
    paddle.seed(12345)  # whatever happened to the RNGs since must not matter
    np.random.seed(1)
    records = trainer.train(cut, resume=True, log=lambda s: None)
    assert [r["epoch"] for r in records] == [0, 1, 2]
    a, b = weights(full, 2), weights(cut, 2)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_early_stopping_hook(tmp_path: Path) -> None:
    config = make_config(tmp_path, "runner.epochs=6", "runner.early_stopping_patience=2",
                         "runner.valid_data_dir=data/valid", "runner.samples_per_epoch=64")
    scores = iter([0.1, 0.3, 0.2, 0.25, 0.9, 0.9])
    records = trainer.train(config, evaluate=lambda m, e: next(scores), log=lambda s: None)
    assert [r["epoch"] for r in records] == [0, 1, 2, 3]
    assert records[1]["valid_recall@50"] == 0.3


def test_cli_with_overrides(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    assert trainer.main(["-m", str(config.path), "-o", "runner.epochs=1",
                         "-o", "runner.samples_per_epoch=64"]) == 0
    assert list_epochs(config.runner.model_save_path) == [0]


@pytest.mark.skipif(paddle.device.is_compiled_with_cuda(), reason="needs a CPU-only paddle")
def test_use_gpu_without_cuda_warns_once_and_uses_cpu() -> None:
    with pytest.warns(UserWarning, match="no CUDA device") as rec:
        assert trainer.select_device(True) == "cpu"
    assert len([w for w in rec if "CUDA" in str(w.message)]) == 1


# ------------------------------------------------------------------ one folder, one run
SHORT = ("-o", "runner.samples_per_epoch=64")  # 2 batches per epoch


def cli(config, *args: str) -> int:
    """trainer.py's command line on the config file (make_config's overrides do not apply)."""
    return trainer.main(["-m", str(config.path), *SHORT, *args])


def test_retraining_into_an_old_run_is_refused(tmp_path: Path, capsys) -> None:
    config = make_config(tmp_path)
    assert cli(config, "-o", "runner.epochs=2") == 0
    root = config.runner.model_save_path
    before = sorted((p.name, p.stat().st_mtime_ns) for p in root.rglob("*"))
    run_id = read_run(root)["run_id"]
    capsys.readouterr()
    assert cli(config) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "holds epochs 0-1 of another run" in err and f"run {run_id[:8]}" in err
    assert "--resume" in err and "--overwrite" in err and "runner.model_save_path" in err
    assert sorted((p.name, p.stat().st_mtime_ns) for p in root.rglob("*")) == before


def test_overwrite_leaves_only_the_new_run(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    assert cli(config) == 0
    root = config.runner.model_save_path
    old_id = read_run(root)["run_id"]
    (root / ".1.tmp-leftover").mkdir()  # what a kill during a save leaves behind
    (root / "notes.txt").write_text("not the trainer's")
    assert list_epochs(root) == [0, 1, 2]
    assert cli(config, "-o", "runner.epochs=1", "--overwrite") == 0
    new_id = read_run(root)["run_id"]
    assert new_id != old_id and len(new_id) == 32
    assert list_epochs(root) == [0]
    assert not (root / ".1.tmp-leftover").exists() and (root / "notes.txt").is_file()
    assert read_meta(root, 0)["run_id"] == new_id
    assert [json.loads(x)["epoch"] for x in (root / "train_log.jsonl").read_text().splitlines()] == [0]


def test_resume_and_overwrite_together_is_one_line_error(tmp_path: Path, capsys) -> None:
    config = make_config(tmp_path)
    assert cli(config, "--resume", "--overwrite") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "exclude each other" in err
    assert not config.runner.model_save_path.exists()


def test_resume_with_every_epoch_done_says_nothing_to_do(tmp_path: Path, capsys) -> None:
    config = make_config(tmp_path)
    assert cli(config, "-o", "runner.epochs=2") == 0
    capsys.readouterr()
    assert cli(config, "--resume", "-o", "runner.epochs=2") == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "nothing to do: epochs 0-1 already trained (runner.epochs=2); "
        "raise runner.epochs to train more")


def test_epoch_line_figures_have_sensible_precision() -> None:
    record = {"epoch": 1, "train_loss": 4.86661, "batches": 895, "seconds": 54.556,
              "samples_per_s": 2099.9, "interval_losses": [[200, 7.5]]}
    assert trainer._format_record(record) == (
        "epoch 1 train_loss 4.8666 batches 895 seconds 54.56 samples_per_s 2,100")


def test_resume_keeps_the_run_id(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    assert cli(config, "-o", "runner.epochs=1") == 0
    root = config.runner.model_save_path
    run = read_run(root)
    assert run["config"] == str(config.path)
    assert cli(config, "--resume") == 0
    assert read_run(root) == run
    assert {read_meta(root, e)["run_id"] for e in list_epochs(root)} == {run["run_id"]}


def test_old_checkpoints_without_run_id_still_load_and_resume(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    assert cli(config, "-o", "runner.epochs=1") == 0
    root = config.runner.model_save_path
    # As written before run ids existed: no manifest, no run_id in meta.json.
    (root / "run.json").unlink()
    meta = json.loads((root / "0" / "meta.json").read_text())
    del meta["run_id"]
    (root / "0" / "meta.json").write_text(json.dumps(meta))
    assert read_run(root) is None
    weights(config, 0)
    assert cli(config) == 2  # still another run's epoch
    assert cli(config, "--resume", "-o", "runner.epochs=2") == 0
    assert read_run(root)["run_id"] == read_meta(root, 1)["run_id"]
    assert "run_id" not in read_meta(root, 0)


def test_resume_is_exact_with_an_evaluator_that_draws_random_numbers(tmp_path: Path) -> None:
    """Valid evaluation builds a model (RNG draws); training must go on as a resume would."""

    def evaluate(model, epoch: int) -> float:
        paddle.rand([3])
        np.random.rand()
        return 0.5

    opts = ("runner.early_stopping_patience=9", "runner.valid_data_dir=data/valid")
    full = make_config(tmp_path / "a", *opts)
    trainer.train(full, evaluate=evaluate, log=lambda s: None)
    cut = make_config(tmp_path / "b", "runner.epochs=2", *opts)
    trainer.train(cut, evaluate=evaluate, log=lambda s: None)
    resumed = load_config(cut.path, opts)
    trainer.train(resumed, resume=True, evaluate=evaluate, log=lambda s: None)
    a, b = weights(full, 2), weights(resumed, 2)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
