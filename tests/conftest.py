"""Fixtures shared across the suite."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The real Milvus server process (milvus==2.3.5 from PyPI), started once per session
# by the first test that asks for it.
from milvus_server import milvus_server  # noqa: F401

from support import MODEL_DIR, run, train_keyed_model, train_tiny_model, write_config


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """(config path, item_count) of a tiny synthetic model trained for one short epoch."""
    return train_tiny_model(tmp_path_factory.getbasetemp() / "tiny_model")


@pytest.fixture(scope="session")
def keyed_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """(config path, item_count) of the tiny model trained on data with an item map."""
    return train_keyed_model(tmp_path_factory.getbasetemp() / "keyed_model")


@pytest.fixture(scope="session")
def two_epochs(tiny_model, tmp_path_factory) -> Path:
    """The tiny data trained for 2 epochs: epoch 0 and epoch 1 have different item vectors."""
    root = tmp_path_factory.mktemp("two_epochs")
    data = Path(tiny_model[0]).parent / "data"
    config = write_config(
        root / "config.yaml", data, root / "model",
        runner={"epochs": 2, "train_batch_size": 64, "samples_per_epoch": 640,
                "print_interval": 1000, "infer_end_epoch": 0, "seed": 11},
        hyper={"neg_samples": 64, "optimizer": {"class": "Adam", "learning_rate": 0.01}},
    )
    run([sys.executable, "-u", "trainer.py", "-m", str(config)], cwd=MODEL_DIR, timeout=300)
    return config
