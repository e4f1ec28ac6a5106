"""The ComiRec AmazonBook dataset, from the tarball PaddleRec's datasets/AmazonBook/run.sh fetches.

The archive holds ComiRec's preprocessed files under `book_data/`: `book_train.txt`,
`book_valid.txt`, `book_test.txt` (lines `uid,item_id,order`, users already split 8:1:1 by
ComiRec, items numbered 1..367,982 by descending frequency) and side files such as
`book_item_map.txt` (lines `ASIN,id`; it becomes item_map.tsv, the ASIN as key). We keep
ComiRec's user split and apply the 80/20 history/eval cut of recdata.protocol to valid/test.
An archive that instead carries PaddleRec-format `train/`, `valid/`, `test/` directories is
validated and installed unchanged (without an item map: it has none).
"""

from __future__ import annotations

import gzip
import json
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path, PurePosixPath

from .atomic import atomic_dir
from .clicks import Clicks
from .download import fetch
from .formats import data_files, read_eval_dir, read_train_clicks
from .itemmap import ITEM_MAP_FILE, write_item_map
from .output import creation_command, write_dataset
from .protocol import SPLITS, drop_short

DEFAULT_URL = "https://paddlerec.bj.bcebos.com/datasets/AmazonBook/AmazonBook.tar.gz"
EXPECTED_ITEMS = 367_983  # item rows incl. the padding row 0
COMIREC_FILES = {"train": "book_train.txt", "valid": "book_valid.txt", "test": "book_test.txt"}
ITEM_MAP = "book_item_map.txt"


class ArchiveError(ValueError):
    """The archive or its extracted files are not what we expect."""


def list_archive(path: Path) -> list[tarfile.TarInfo]:
    """Members of a gzip'd tar, after reading the gzip stream to its end.

    tarfile stops at the end-of-archive blocks and never reaches the gzip trailer, so a
    damaged CRC would pass unnoticed; the full pass through gzip checks CRC and length.
    """
    try:
        with gzip.open(path, "rb") as gz:
            while gz.read(1 << 22):
                pass
        with tarfile.open(path, "r:gz") as tar:
            return tar.getmembers()
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise ArchiveError(
            f"{path}: expected a valid .tar.gz archive, found a corrupt or truncated file ({exc}); "
            f"delete it and run again to download a fresh copy"
        ) from exc


def find_layout(members: list[tarfile.TarInfo]) -> tuple[str, dict[str, str]]:
    """('comirec', split -> member path) or ('paddlerec', split -> directory path)."""
    files = [PurePosixPath(m.name) for m in members if m.isfile()]
    by_name = {p.name: str(p) for p in files if p.parent.name == "book_data"}
    if all(n in by_name for n in COMIREC_FILES.values()):
        found = {s: by_name[n] for s, n in COMIREC_FILES.items()}
        if ITEM_MAP in by_name:
            found["item_map"] = by_name[ITEM_MAP]
        return "comirec", found
    dirs = {p.parent.name: str(p.parent) for p in files if not p.name.startswith(".")}
    if all(s in dirs for s in SPLITS):
        return "paddlerec", {s: dirs[s] for s in SPLITS}
    names = sorted(str(p) for p in files)[:10]
    raise ArchiveError(
        "expected book_data/{book_train,book_valid,book_test}.txt (ComiRec) or train/, valid/, "
        f"test/ directories (PaddleRec) in the archive, found {names}"
    )


def _extract(archive: Path, members: list[tarfile.TarInfo], wanted: set[str], into: Path) -> None:
    with tarfile.open(archive, "r:gz") as tar:
        pick = [
            m
            for m in members
            if m.name in wanted or any(m.name.startswith(w + "/") for w in wanted)
        ]
        tar.extractall(into, members=pick, filter="data")  # 'data' refuses links/abs paths out


def _check_items(splits: dict[str, Clicks], expect_items: int) -> None:
    top = max(int(c.items.max()) for c in splits.values())
    if top + 1 != expect_items:
        raise ArchiveError(
            f"expected {expect_items} item rows (max item id {expect_items - 1} + padding 0), "
            f"found max item id {top}; pass --expect-items {top + 1} if this is intended"
        )
    users = [set(c.user_ids.tolist()) for c in splits.values()]
    if users[0] & users[1] or users[0] & users[2] or users[1] & users[2]:
        raise ArchiveError("expected disjoint user sets in book_train/valid/test, found overlap")


def read_item_map(path: Path, expect_items: int) -> list[str]:
    """The ASIN of each item id 1..N from ComiRec's `ASIN,id` lines (N rows, each id once)."""
    text = path.read_text(encoding="utf-8")
    lines = [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if len(lines) != expect_items - 1:
        raise ArchiveError(f"{path.name}: expected {expect_items - 1} rows, found {len(lines)}")
    keys = [""] * (expect_items - 1)
    for lineno, line in lines:
        asin, _, raw = line.rpartition(",")
        if not (asin and raw.isdigit() and 1 <= int(raw) < expect_items) or keys[int(raw) - 1]:
            raise ArchiveError(f"{path.name}:{lineno}: expected `ASIN,id` with a new id in "
                               f"1..{expect_items - 1}, found {line!r}")
        keys[int(raw) - 1] = asin
    return keys


def _convert_comirec(
    root: Path, found: dict[str, str], out_dir: Path, url: str, expect: int
) -> dict:
    splits: dict[str, Clicks] = {}
    dropped = {}
    for s in SPLITS:
        clicks = read_train_clicks(root / found[s], item_count=expect)
        splits[s], dropped[s] = drop_short(clicks)
    _check_items(splits, expect)
    keys = read_item_map(root / found["item_map"], expect) if "item_map" in found else None
    meta = {
        "source": f"ComiRec AmazonBook ({url}), ComiRec's own user split",
        "seed": None,
        "options": {"url": url, "expect_items": expect},
        "dropped_short_users": dropped,
    }

    def write_map(tmp: Path) -> None:
        if keys is not None:  # without book_item_map.txt the ids are the items' only names
            write_item_map(tmp / ITEM_MAP_FILE, keys)

    return write_dataset(out_dir, splits, expect, meta, extra=write_map)


def _install_paddlerec(
    root: Path, found: dict[str, str], out_dir: Path, url: str, expect: int
) -> dict:
    train = read_train_clicks(root / found["train"], item_count=expect)
    evals = {s: read_eval_dir(root / found[s], item_count=expect) for s in ("valid", "test")}
    stats = {"train": {"users": len(train), "clicks": int(len(train.items))}}
    for s, ev in evals.items():
        stats[s] = {
            "users": len(ev),
            "clicks": int(
                sum(len(h) + len(e) for h, e in zip(ev.histories, ev.eval_items, strict=True))
            ),
        }
    meta = {
        "source": f"PaddleRec-format AmazonBook ({url}), installed unchanged",
        "seed": None,
        "options": {"url": url, "expect_items": expect},
        "item_count": expect,
        "users": {s: v["users"] for s, v in stats.items()},
        "clicks": {s: v["clicks"] for s, v in stats.items()},
        "stats": stats,
        "command": creation_command(),
    }
    with atomic_dir(out_dir) as tmp:
        for s in SPLITS:
            (tmp / s).mkdir()
            for f in data_files(root / found[s], s):
                shutil.copyfile(f, tmp / s / f.name)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {out_dir}\n{json.dumps(stats)}")
    return meta


def prepare(
    out_dir: Path,
    cache: Path,
    url: str = DEFAULT_URL,
    expect_items: int = EXPECTED_ITEMS,
    retries: int = 3,
) -> dict:
    """Download (cached, resumable), check, extract and convert or install AmazonBook."""
    archive = fetch(url, cache, retries=retries)
    members = list_archive(archive)
    layout, found = find_layout(members)
    print(f"archive {archive}: {len(members)} members, {layout} layout")
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".extract-", dir=cache) as tmp:
        root = Path(tmp)
        _extract(archive, members, set(found.values()), root)
        if layout == "comirec":
            return _convert_comirec(root, found, out_dir, url, expect_items)
        return _install_paddlerec(root, found, out_dir, url, expect_items)
