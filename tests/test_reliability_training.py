"""A real SIGKILL of `trainer.py` mid-epoch, then `--resume`: the same final checkpoint.

tests/test_trainer.py proves resume equality with an in-process KeyboardInterrupt, which
lets Python unwind (finally blocks, buffered writes). Here the trainer is a separate process
killed with SIGKILL while an epoch is half done, as the OOM killer or a lost machine would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from support import MODEL_DIR, run
from test_trainer import make_data

sys.path.insert(0, str(MODEL_DIR))
from mind.checkpoint import list_epochs, load_model  # noqa: E402
from mind.config import load_config  # noqa: E402

# 3 epochs of 100 batches: long enough that a kill at batch 20 of epoch 1 lands mid-epoch.
CONFIG = (
    "runner:\n"
    "  train_data_dir: data/train\n  test_data_dir: data/test\n  model_save_path: out\n"
    "  train_batch_size: 32\n  samples_per_epoch: 3200\n  epochs: 3\n  print_interval: 10\n"
    "  seed: 7\n"
    "hyper_parameters:\n"
    "  item_count: 61\n  embedding_dim: 16\n  hidden_size: 16\n  neg_samples: 32\n"
    "  maxlen: 8\n  optimizer: {class: Adam, learning_rate: 0.01}\n  capsual: {max_k: 2}\n"
)


def setup(root: Path) -> Path:
    make_data(root / "data")
    path = root / "c.yaml"
    path.write_text(CONFIG)
    return path


def trainer(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-u", "trainer.py", "-m", str(config), *args]


def final_weights(config: Path) -> dict[str, np.ndarray]:
    cfg = load_config(config)
    assert list_epochs(cfg.runner.model_save_path) == [0, 1, 2]
    return {k: v.numpy() for k, v in load_model(cfg, 2).state_dict().items()}


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_equals_an_uninterrupted_run(tmp_path):
    full = setup(tmp_path / "full")
    import trainer as trainer_module  # the uninterrupted reference run, in-process (as main() runs it)

    trainer_module.train(load_config(full), log=lambda line: None)

    cut = setup(tmp_path / "cut")
    log = (tmp_path / "cut.log").open("w+")
    proc = subprocess.Popen(trainer(cut), cwd=MODEL_DIR, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        while "epoch 1 batch 20/" not in Path(log.name).read_text():
            assert proc.poll() is None, Path(log.name).read_text()[-3000:]
            assert time.monotonic() < deadline, "trainer.py never reached epoch 1 batch 20"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        log.close()
    text = Path(log.name).read_text()
    assert "epoch 1 batch 100/" not in text, "the kill came after epoch 1 had ended"
    # Only epoch 0 was complete; whatever the kill left of epoch 1 is not taken as a checkpoint.
    assert list_epochs(load_config(cut).runner.model_save_path) == [0]

    resumed = run(trainer(cut, "--resume"), cwd=MODEL_DIR, timeout=300)
    assert "resumed from" in resumed.stdout
    a, b = final_weights(full), final_weights(cut)
    assert a.keys() == b.keys() and a
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
