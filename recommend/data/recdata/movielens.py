"""MovieLens-100k, read from the `recbole==1.2.1` wheel on PyPI (its bundled ml-100k example).

Only the member `recbole/dataset_example/ml-100k/ml-100k.inter` is read: tab-separated,
header `user_id:token item_id:token rating:float timestamp:float`. Every rating counts as a click.
"""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

from .clicks import Clicks
from .output import remap_by_frequency, write_dataset
from .protocol import drop_short, split_users

WHEEL_SPEC = "recbole==1.2.1"
WHEEL_NAME = "recbole-1.2.1-py3-none-any.whl"
MEMBER = "recbole/dataset_example/ml-100k/ml-100k.inter"
HEADER = ["user_id:token", "item_id:token", "rating:float", "timestamp:float"]


def fetch_wheel(cache: Path) -> Path:
    """The recbole wheel in `cache`, downloaded with `pip download --no-deps` if missing."""
    wheel = cache / WHEEL_NAME
    if not wheel.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            WHEEL_SPEC,
            "--no-deps",
            "-q",
            "-d",
            str(cache),
        ]
        print("running:", " ".join(cmd))
        subprocess.run(cmd, check=True)
        if not wheel.is_file():
            raise FileNotFoundError(f"pip download did not produce {wheel}")
    return wheel


def read_inter(wheel: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user tokens, item tokens, timestamps) from the wheel's ml-100k.inter, in file order."""
    with zipfile.ZipFile(wheel) as zf:
        text = zf.read(MEMBER).decode("utf-8")
    head, _, body = text.partition("\n")
    if head.strip().split("\t") != HEADER:
        raise ValueError(f"{wheel}!{MEMBER}: expected header {HEADER}, found {head!r}")
    table = np.loadtxt(io.StringIO(body), delimiter="\t", dtype=np.float64, ndmin=2)
    if table.shape[1] != 4:
        raise ValueError(f"{wheel}!{MEMBER}: expected 4 columns, found {table.shape[1]}")
    return table[:, 0].astype(np.int64), table[:, 1].astype(np.int64), table[:, 3]


def prepare(out_dir: Path, cache: Path, seed: int) -> dict:
    """Download (cached), convert and write MovieLens-100k under the ComiRec protocol."""
    wheel = fetch_wheel(cache)
    users, raw_items, ts = read_inter(wheel)
    _, item_index = np.unique(raw_items, return_inverse=True)
    items, _ = remap_by_frequency(item_index)
    # lexsort inside from_events is stable: equal timestamps keep the file's order.
    clicks, dropped = drop_short(Clicks.from_events(users, items, ts))
    splits = split_users(clicks, seed)
    meta = {
        "source": f"MovieLens-100k from PyPI wheel {WHEEL_SPEC} ({MEMBER})",
        "seed": seed,
        "options": {},
        "dropped_short_users": dropped,
        "raw_clicks": int(len(users)),
    }
    return write_dataset(out_dir, splits, int(items.max()) + 1, meta)
