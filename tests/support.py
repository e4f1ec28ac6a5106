"""Helpers shared by several test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import functools
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = REPO / "recommend" / "data"
MODEL_DIR = REPO / "recommend" / "model"

TINY_ITEMS = 400


def run(cmd: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run a command the way a user would; fail with its output when it fails."""
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(path: Path, data: Path, model: Path, runner: dict, hyper: dict) -> Path:
    """A model config for data under ``data`` and checkpoints under ``model``."""
    config = {
        "runner": {
            "train_data_dir": str(data / "train"),
            "test_data_dir": str(data / "test"),
            "valid_data_dir": str(data / "valid"),
            "model_save_path": str(model),
            "infer_load_path": str(model),
            **runner,
        },
        "hyper_parameters": {"item_count": "auto", **hyper},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def keyed_catalogue(data: Path) -> None:
    """Replace the item map of synthetic ``data`` with a hand-made one: keys `SKU-0001`..., a
    title, and genres (the planted category's, plus "Classic" for every 10th item; a quote in
    one genre name, to test escaping)."""
    from recdata.itemmap import write_item_map

    import numpy as np

    category = np.load(data / "truth.npz")["item_category"][1:]
    ids = range(1, len(category) + 1)
    genres = [[f'Genre "{c}"' if c == 3 else f"Genre {c}"] + (["Classic"] if i % 10 == 0 else [])
              for i, c in zip(ids, category.tolist())]
    write_item_map(data / "item_map.tsv", [f"SKU-{i:04d}" for i in ids],
                   {"title": [f"Product {i}" for i in ids], "genre": genres}, ["genre"])


@functools.cache
def train_keyed_model(root: Path) -> tuple[Path, int]:
    """The tiny synthetic model trained on data with a hand-made item map (keyed_catalogue)."""
    return train_tiny_model(root, keyed_catalogue)


@functools.cache
def train_tiny_model(root: Path, prepare=None) -> tuple[Path, int]:
    """Synthetic data + one short epoch via `sh data.sh synthetic` and `trainer.py`;
    ``prepare(data_dir)`` may change the data before training.

    Cached per process so every module that needs a model shares one training run.
    Returns (config path, item_count).
    """
    root.mkdir(parents=True, exist_ok=True)
    data = root / "data"
    run(["sh", "data.sh", "synthetic", "--out", str(data), "--items", str(TINY_ITEMS),
         "--categories", "8", "--users", "600", "--min-len", "8", "--max-len", "20"],
        cwd=DATA_DIR)
    if prepare is not None:
        prepare(data)
    path = write_config(
        root / f"config_{root.name}.yaml", data, root / "model",
        runner={"epochs": 1, "train_batch_size": 64, "samples_per_epoch": 1280,
                "print_interval": 1000, "infer_end_epoch": 0, "seed": 7},
        hyper={"neg_samples": 64, "optimizer": {"class": "Adam", "learning_rate": 0.01}},
    )
    run([sys.executable, "-u", "trainer.py", "-m", str(path)], cwd=MODEL_DIR)
    item_count = json.loads((data / "meta.json").read_text())["item_count"]
    return path, int(item_count)
