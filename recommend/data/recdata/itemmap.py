"""`item_map.tsv`: which shop item (key, title, genres, ...) each integer item id stands for.

    id	key	title	year	genre:list
    1	50	Star Wars	1977	Action|Adventure|Romance|Sci-Fi|War

A header line, then one row per item id 1..N in order (0 is padding and has no row). `key` is the
item's own identifier (an SKU, an ASIN, a MovieLens id: always a string, unique, non-empty); the
other columns are metadata. A column named `name:list` holds several values joined by `|` (as
recbole marks a `token_seq`). Tabs, newlines and (in list values) `|` inside a value are written
as spaces. `user_map.tsv` has the same shape (`id`, `key`) for users.
Column names are Milvus field names (letters, digits, `_`), so the map's columns can be stored
beside the vectors and filtered on.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ITEM_MAP_FILE = "item_map.tsv"
USER_MAP_FILE = "user_map.tsv"
LIST_SUFFIX = ":list"
LIST_SEP = "|"
# Names the store and the API use themselves: a metadata column may not take them.
RESERVED = frozenset({"id", "key", "embedding", "item", "score", "interest"})
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_CLEAN = str.maketrans({"\t": " ", "\n": " ", "\r": " "})


class ItemMapError(ValueError):
    """A malformed map file; the message names the file and line."""


@dataclass(frozen=True)
class ItemMap:
    """Keys and metadata indexed by item id: ``keys[i]`` is id i's key (``keys[0]`` = "")."""

    keys: np.ndarray  # object [N + 1] of str
    columns: dict[str, np.ndarray] = field(default_factory=dict)  # name -> object [N + 1]
    list_columns: frozenset[str] = frozenset()  # values are tuples of str
    sha256: str = ""

    def __len__(self) -> int:
        """Items (ids 1..N), padding not counted."""
        return len(self.keys) - 1

    def ids_by_key(self) -> dict[str, int]:
        return {k: i for i, k in enumerate(self.keys.tolist()) if i}


def check_column_name(name: str) -> str:
    if not _NAME.match(name) or name in RESERVED:
        raise ValueError(
            f"column name {name!r}: letters, digits and '_' (not first) only, at most 64, "
            f"and none of {sorted(RESERVED)}")
    return name


def clean(value: object, in_list: bool = False) -> str:
    """A value as the file stores it: a string without tab or newline (or `|` in a list)."""
    text = "" if value is None else str(value).translate(_CLEAN)
    return text.replace(LIST_SEP, " ") if in_list else text


def render_item_map(keys: Sequence[object], columns: Mapping[str, Sequence[object]] | None = None,
                    list_columns: Iterable[str] = ()) -> bytes:
    """The file's bytes for ids 1..len(keys): ``keys[j]`` is id j+1's key; a list column's value
    is a sequence of strings."""
    columns = dict(columns or {})
    lists = set(list_columns)
    for name in columns:
        check_column_name(name)
    unknown = lists - set(columns)
    if unknown:
        raise ValueError(f"list columns {sorted(unknown)} are not columns")
    key_text = [clean(k) for k in keys]
    if any(not k for k in key_text):
        raise ValueError("every item needs a non-empty key")
    if len(set(key_text)) != len(key_text):
        raise ValueError("item keys must be unique")
    for name, values in columns.items():
        if len(values) != len(key_text):
            raise ValueError(f"column {name!r} has {len(values)} values for {len(key_text)} keys")
    head = ["id", "key"] + [n + (LIST_SUFFIX if n in lists else "") for n in columns]
    cells = [[clean(v) for v in vals] if n not in lists
             else [LIST_SEP.join(clean(x, True) for x in (v or ())) for v in vals]
             for n, vals in columns.items()]
    lines = ["\t".join(head)]
    lines += ["\t".join([str(i + 1), k, *(c[i] for c in cells)]) for i, k in enumerate(key_text)]
    return ("\n".join(lines) + "\n").encode("utf-8")


def write_item_map(path: Path, keys: Sequence[object],
                   columns: Mapping[str, Sequence[object]] | None = None,
                   list_columns: Iterable[str] = ()) -> None:
    Path(path).write_bytes(render_item_map(keys, columns, list_columns))


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_item_map(path: str | Path) -> ItemMap:
    """The map in ``path``; ItemMapError naming the line for anything malformed."""
    path = Path(path)
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ItemMapError(f"{path}:{line}: expected UTF-8 text, found byte "
                           f"0x{raw[exc.start]:02x}") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise ItemMapError(f"{path}: expected a header line `id<TAB>key...`, found an empty file")
    head = lines[0].split("\t")
    if head[:2] != ["id", "key"]:
        raise ItemMapError(f"{path}:1: expected a header starting `id<TAB>key`, found {lines[0]!r}")
    names, lists = [], set()
    for cell in head[2:]:
        name = cell[: -len(LIST_SUFFIX)] if cell.endswith(LIST_SUFFIX) else cell
        try:
            check_column_name(name)
        except ValueError as exc:
            raise ItemMapError(f"{path}:1: {exc}") from None
        if name in names:
            raise ItemMapError(f"{path}:1: column {name!r} appears twice")
        names.append(name)
        if cell.endswith(LIST_SUFFIX):
            lists.add(name)
    width = len(head)
    keys = np.empty(len(lines), dtype=object)
    keys[0] = ""
    cols = {n: np.empty(len(lines), dtype=object) for n in names}
    for n in names:
        cols[n][0] = () if n in lists else ""
    seen: set[str] = set()
    for lineno, line in enumerate(lines[1:], start=2):
        cells = line.split("\t")
        if len(cells) != width:
            raise ItemMapError(f"{path}:{lineno}: expected {width} tab-separated cells, "
                               f"found {len(cells)}")
        if cells[0] != str(lineno - 1):
            raise ItemMapError(f"{path}:{lineno}: expected id {lineno - 1} (ids 1..N in order), "
                               f"found {cells[0]!r}")
        key = cells[1]
        if not key or key in seen:
            raise ItemMapError(f"{path}:{lineno}: expected a unique non-empty key, found "
                               f"{'an empty one' if not key else 'a repeat of ' + repr(key)}")
        seen.add(key)
        keys[lineno - 1] = key
        for n, cell in zip(names, cells[2:], strict=True):
            cols[n][lineno - 1] = tuple(v for v in cell.split(LIST_SEP) if v) \
                if n in lists else cell
    return ItemMap(keys, cols, frozenset(lists), hashlib.sha256(raw).hexdigest())
