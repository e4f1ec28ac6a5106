"""Write a prepared dataset (train/, valid/, test/, meta.json) atomically and report its stats."""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .atomic import atomic_dir
from .clicks import Clicks
from .protocol import SPLITS, format_stats, render_eval, render_train, split_stats

DATA_FILE = "part-0"


def creation_command() -> str:
    """The command line that created the dataset (data.sh exports RECDATA_COMMAND)."""
    return os.environ.get("RECDATA_COMMAND") or shlex.join(
        ["python", "-m", "recdata", *sys.argv[1:]]
    )


def write_dataset(
    out_dir: Path,
    splits: dict[str, Clicks],
    item_count: int,
    meta: dict,
    extra: Callable[[Path], None] | None = None,
) -> dict:
    """Write the three splits under the ComiRec protocol, meta.json, and `extra(tmp_dir)` files.

    Returns the meta dict written (with per-split stats). Item ids must lie in [1, item_count).
    """
    for name in SPLITS:
        items = splits[name].items
        if items.size and (items.min() < 1 or items.max() >= item_count):
            raise ValueError(f"{name}: item ids must lie in [1, {item_count})")
    stats = {name: split_stats(name, splits[name]) for name in SPLITS}
    meta = {
        **meta,
        "item_count": int(item_count),
        "users": {n: s["users"] for n, s in stats.items()},
        "clicks": {n: s["clicks"] for n, s in stats.items()},
        "stats": stats,
        "command": creation_command(),
    }
    with atomic_dir(out_dir) as tmp:
        for name in SPLITS:
            (tmp / name).mkdir()
            render = render_train if name == "train" else render_eval
            (tmp / name / DATA_FILE).write_bytes(render(splits[name]))
        if extra is not None:
            extra(tmp)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {out_dir}")
    print(format_stats(stats, item_count))
    return meta


def remap_by_frequency(
    items: np.ndarray, n_items: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """New ids 1..n by descending click count (ties: smaller original id first), as ComiRec.

    `items` holds original ids in [0, n_items). Returns (new ids of `items`, new_id_of[original]).
    Items never clicked get the ids after all clicked ones.
    """
    n = int(n_items if n_items is not None else items.max() + 1)
    counts = np.bincount(items, minlength=n)
    order = np.argsort(-counts, kind="stable")
    new_id = np.empty(n, dtype=np.int64)
    new_id[order] = np.arange(1, n + 1)
    return new_id[items], new_id
