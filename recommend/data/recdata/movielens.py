"""MovieLens-100k, read from the `recbole==1.2.1` wheel on PyPI (its bundled ml-100k example).

Two members are read, both tab-separated with a header. `recbole/dataset_example/ml-100k/
ml-100k.inter`: `user_id:token item_id:token rating:float timestamp:float`; every rating counts
as a click. `ml-100k.item`: `item_id:token movie_title:token_seq release_year:token
class:token_seq`; it becomes item_map.tsv (key = the MovieLens item id, title, year and the
space-separated genres as the list column `genre`).
"""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

from .clicks import Clicks
from .itemmap import ITEM_MAP_FILE, write_item_map
from .output import remap_by_frequency, write_dataset
from .protocol import drop_short, split_users

WHEEL_SPEC = "recbole==1.2.1"
WHEEL_NAME = "recbole-1.2.1-py3-none-any.whl"
MEMBER = "recbole/dataset_example/ml-100k/ml-100k.inter"
HEADER = ["user_id:token", "item_id:token", "rating:float", "timestamp:float"]
ITEM_MEMBER = "recbole/dataset_example/ml-100k/ml-100k.item"
ITEM_HEADER = ["item_id:token", "movie_title:token_seq", "release_year:token", "class:token_seq"]


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


def read_items(wheel: Path) -> dict[str, tuple[str, str, tuple[str, ...]]]:
    """{MovieLens item id: (title, year, genres)} from the wheel's ml-100k.item."""
    with zipfile.ZipFile(wheel) as zf:
        lines = zf.read(ITEM_MEMBER).decode("utf-8").splitlines()
    if not lines or lines[0].split("\t") != ITEM_HEADER:
        raise ValueError(f"{wheel}!{ITEM_MEMBER}: expected header {ITEM_HEADER}, found "
                         f"{lines[:1]!r}")
    rows = {}
    for lineno, line in enumerate(lines[1:], start=2):
        cells = line.split("\t")
        if len(cells) != 4 or cells[0] in rows:
            raise ValueError(f"{wheel}!{ITEM_MEMBER}:{lineno}: expected 4 cells with a new "
                             f"item id, found {line!r}")
        rows[cells[0]] = (cells[1], cells[2], tuple(cells[3].split()))
    return rows


def prepare(out_dir: Path, cache: Path, seed: int) -> dict:
    """Download (cached), convert and write MovieLens-100k under the ComiRec protocol."""
    wheel = fetch_wheel(cache)
    users, raw_items, ts = read_inter(wheel)
    raw_ids, item_index = np.unique(raw_items, return_inverse=True)
    items, new_id = remap_by_frequency(item_index)
    # item_map row of id new_id[k] is the movie raw_ids[k]; a movie without a row keeps its key.
    keys = np.empty(len(raw_ids), dtype=object)
    keys[new_id - 1] = [str(i) for i in raw_ids.tolist()]
    movies = read_items(wheel)
    info = [movies.get(k, ("", "", ())) for k in keys]

    def write_map(tmp: Path) -> None:
        write_item_map(tmp / ITEM_MAP_FILE, keys.tolist(),
                       {"title": [m[0] for m in info], "year": [m[1] for m in info],
                        "genre": [m[2] for m in info]}, list_columns=["genre"])

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
    return write_dataset(out_dir, splits, int(items.max()) + 1, meta, extra=write_map)
