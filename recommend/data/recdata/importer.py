"""`sh data.sh import`: a shop's own click log (and item file) as a MIND dataset.

Input: a click log with a user key, an item key and a time per click (recdata.tabular reads CSV,
TSV, JSON lines or Parquet in batches; recdata.times normalises the times), optionally an items
file keyed by the same item key with metadata columns. Output, written atomically into one
folder: train/, valid/, test/ and meta.json as every variant writes them (recdata.output), plus
item_map.tsv and user_map.tsv (recdata.itemmap) and config.yaml for trainer.py.

Preprocessing follows ComiRec's (THUDM/ComiRec preprocess/data.py): ComiRec counts every click
of an item, keeps items with >= 5 clicks numbered 1..N by that count (ties in first-appearance
order), then keeps users with >= 5 clicks on kept items, and orders each user's clicks by a
stable sort on time. We do the same, and in addition drop exact duplicate clicks (same user,
item and time) before counting, and number the items by their counts in the data finally
written (after the user filter), leaving out items that the user filter left without clicks,
so ids 1..N are exactly in the popularity order the log-uniform sampler assumes. Ties in the
count keep first-appearance order (the item whose key appears first in the click log gets the
smaller id); users are numbered 1..U in first-appearance order too.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import DATA_ROOT
from .clicks import Clicks
from .itemmap import ITEM_MAP_FILE, RESERVED, USER_MAP_FILE, check_column_name, render_item_map
from .output import remap_by_frequency, write_dataset
from .protocol import split_users
from .tabular import InputError, Table, as_strings, first_true
from .times import TimeColumn

MODEL_CONFIG = DATA_ROOT.parent / "model" / "mind" / "config.yaml"
CONFIG_FILE = "config.yaml"
SPLIT_DIRS = {"train_data_dir": "train", "valid_data_dir": "valid", "test_data_dir": "test"}
MIN_USERS = 10  # the 8:1:1 split needs at least one valid and one test user
EXAMPLES = 3


@dataclass
class Options:
    clicks: Path
    out: Path
    items: Path | None = None
    user_col: str = "user"
    item_col: str = "item"
    time_col: str = "time"
    min_count: int = 5
    seed: int = 0
    list_cols: tuple[str, ...] = ()
    list_sep: str = "|"


# -- reading the click log ----------------------------------------------------------------------


@dataclass
class KeyColumn:
    """A key column, dictionary-encoded batch by batch (codes in first-appearance order)."""

    table: Table
    name: str
    option: str
    chunks: list[pa.DictionaryArray] = field(default_factory=list)

    def add(self, arr: pa.Array, row_of: Callable[[int], int]) -> None:
        arr = as_strings(arr).cast(pa.string())
        bad = first_true(pc.or_kleene(pc.is_null(arr), pc.equal(arr, "")))
        if bad is not None:
            raise self.table.error(row_of(bad), f"empty {self.option} key ({self.name!r})")
        enc = pc.dictionary_encode(arr)
        # A key is one cell of item_map.tsv / user_map.tsv: no tab or line break (checked on
        # the batch's distinct keys only).
        odd = first_true(pc.match_substring_regex(enc.dictionary, r"[\t\r\n]"))
        if odd is not None:
            at = first_true(pc.equal(enc.indices, odd))
            raise self.table.error(row_of(at), f"{self.option} key {enc.dictionary[odd].as_py()!r}"
                                   " contains a tab or line break")
        self.chunks.append(enc)

    def codes(self) -> tuple[np.ndarray, pa.Array]:
        """(int32 code per click, key per code); code order = first appearance in the file."""
        if not self.chunks:
            return np.zeros(0, np.int32), pa.array([], pa.string())
        unified = pa.chunked_array(self.chunks).unify_dictionaries()
        self.chunks = []
        codes = np.concatenate([c.indices.to_numpy(zero_copy_only=False) for c in unified.chunks])
        return codes, unified.chunks[0].dictionary


@dataclass
class Log:
    users: np.ndarray  # int32 codes
    user_keys: pa.Array
    items: np.ndarray  # int32 codes
    item_keys: pa.Array
    times: np.ndarray
    time_form: str
    blank_lines: int


def _row_of(row0: int, kept: np.ndarray | None) -> Callable[[int], int]:
    """The data row of a batch's value j (`kept`: the rows left after skipping blank lines)."""
    if kept is None:
        return lambda j: row0 + j
    return lambda j: row0 + int(kept[j])


def read_log(opts: Options) -> Log:
    table = Table.open(opts.clicks, "--clicks")
    cols = {opts.user_col: "--user-col", opts.item_col: "--item-col", opts.time_col: "--time-col"}
    if len(cols) < 3:
        raise InputError(f"--user-col, --item-col and --time-col must name three different "
                         f"columns, got {opts.user_col!r}, {opts.item_col!r}, {opts.time_col!r}")
    table.require(cols)
    users = KeyColumn(table, opts.user_col, "user")
    items = KeyColumn(table, opts.item_col, "item")
    times = TimeColumn(table, opts.time_col)
    rows = blank = 0
    for batch in table.batches(list(cols)):
        row0, kept = rows, table.non_blank(batch)
        rows += batch.num_rows
        if kept is not None:  # blank lines are skipped; rows keep their line numbers
            blank += batch.num_rows - len(kept)
            batch = batch.take(pa.array(kept))
        u, i, t = (batch.column(c) for c in cols)
        row_of = _row_of(row0, kept)
        users.add(u, row_of)
        items.add(i, row_of)
        times.add(t, row_of)
    user_codes, user_keys = users.codes()
    if not len(user_codes):
        raise table.error(None, "no clicks (the file has no data rows)")
    item_codes, item_keys = items.codes()
    return Log(user_codes, user_keys, item_codes, item_keys, times.values(), times.form(), blank)


# -- ComiRec preprocessing (module docstring) ---------------------------------------------------


@dataclass
class Prepared:
    clicks: Clicks  # users 1..U, items 1..N
    item_code: np.ndarray  # [N + 1] code (index into Log.item_keys) of each item id; [0] = -1
    user_code: np.ndarray  # [U] code of user id j + 1
    dropped: dict[str, int]


def preprocess(log: Log, min_count: int) -> Prepared:
    """ComiRec's preprocessing (module docstring). Takes the click arrays out of `log`: holding
    them beside their sorted copies would add a third to the peak memory."""
    n = len(log.users)
    n_items, n_users = len(log.item_keys), len(log.user_keys)
    # Each user's clicks by time; equal times keep file order (from_events' stable sort, applied
    # to click positions so that times and items can follow the same permutation).
    perm = Clicks.from_events(log.users, np.arange(n), log.times).items
    su, si, st = log.users[perm], log.items[perm], log.times[perm]
    del perm
    log.users = log.items = log.times = None
    keep = np.ones(n, dtype=bool)
    tie = (su[1:] == su[:-1]) & (st[1:] == st[:-1])
    if tie.any():  # exact duplicates can only sit in runs of one user's equal times
        run = np.cumsum(np.r_[True, ~tie]) - 1
        cand = np.flatnonzero(np.r_[tie, False] | np.r_[False, tie])
        cand = cand[np.lexsort((si[cand], run[cand]))]  # stable: file order within a key
        dup = (run[cand][1:] == run[cand][:-1]) & (si[cand][1:] == si[cand][:-1])
        keep[cand[1:][dup]] = False
    deduped = int(keep.sum())
    item_n = np.bincount(si[keep], minlength=n_items)
    keep &= item_n[si] >= min_count
    after_items = int(keep.sum())
    user_min = max(min_count, 2)  # a held-out user needs one history and one eval click
    user_n = np.bincount(su[keep], minlength=n_users)
    keep &= user_n[su] >= user_min
    fu, fi = su[keep], si[keep]
    final_n = np.bincount(fi, minlength=n_items)
    present = np.flatnonzero(final_n)  # ascending code = first-appearance order
    compact = np.cumsum(final_n > 0) - 1
    # Ties of the count keep the smaller compact code first: first appearance (docstring).
    ids, new_id = remap_by_frequency(compact[fi], len(present))
    item_code = np.full(len(present) + 1, -1, dtype=np.int64)
    item_code[new_id] = present
    kept_users = user_n >= user_min
    uid = np.cumsum(kept_users)[fu]  # 1..U, monotone in the code, so fu's order is kept
    starts = np.flatnonzero(np.r_[True, uid[1:] != uid[:-1]]) if len(uid) else np.zeros(0, int)
    clicks = Clicks(uid[starts].astype(np.int64), np.r_[starts, len(uid)].astype(np.int64), ids)
    dropped = {
        "duplicate_clicks": n - deduped,
        "rare_items": int(np.count_nonzero((item_n > 0) & (item_n < min_count))),
        "rare_item_clicks": deduped - after_items,
        "rare_users": int(n_users - np.count_nonzero(kept_users)),
        "rare_user_clicks": after_items - int(keep.sum()),
        "items_left_without_clicks": int(np.count_nonzero((item_n >= min_count) & (final_n == 0))),
    }
    return Prepared(clicks, item_code, np.flatnonzero(kept_users), dropped)


# -- the items file -----------------------------------------------------------------------------


def field_name(raw: str) -> str:
    """A column name as a Milvus field name: lower case, each run of other characters as one
    `_` (none at either end: "Genre(s)" -> "genre_s"), `_` before a leading digit."""
    name = "_".join(p for p in re.split(r"[^0-9a-z_]+", raw.lower()) if p)
    return "_" + name if name[:1].isdigit() else name


@dataclass
class Catalogue:
    """The items file: keys in file order and each metadata column by field name (a list
    column as lists of strings)."""

    keys: pa.Array
    columns: dict[str, pa.Array]


def metadata_fields(table: Table, names: list[str], key_col: str, list_cols: tuple[str, ...]
                    ) -> tuple[dict[str, str], set[str]]:
    """{file column: field name} of the metadata columns, and the list fields; refuses names
    that are empty, reserved, too long or clash after sanitising."""
    where = f"{table.path}" if table.fmt == "parquet" else f"{table.path}:1"
    fields: dict[str, str] = {}
    for raw in names:
        if raw == key_col:
            continue
        name = field_name(raw)
        if not name:
            raise InputError(f"{where}: column {raw!r} has no letter or digit to make a field "
                             "name of; rename it")
        if name in RESERVED:
            raise InputError(f"{where}: column {raw!r} would be the field {name!r}, a name the "
                             f"item store uses itself ({', '.join(sorted(RESERVED))}); rename it")
        try:
            check_column_name(name)
        except ValueError as exc:
            raise InputError(f"{where}: {exc}") from None
        other = next((r for r, f in fields.items() if f == name), None)
        if other is not None:
            raise InputError(f"{where}: columns {other!r} and {raw!r} both become the field "
                             f"{name!r}; rename one")
        fields[raw] = name
    lists = set()
    for col in list_cols:
        name = fields.get(col) or (col if col in fields.values() else None)
        if name is None:
            raise InputError(f"--list-cols {col!r}: not a metadata column of {table.path} "
                             f"(columns: {', '.join(fields)})")
        lists.add(name)
    return fields, lists


def read_items(path: Path, opts: Options) -> Catalogue:
    table = Table.open(path, "--items")
    table.require({opts.item_col: "--item-col"})
    keys, parts, row_ids = [], {}, []
    rows, fields = 0, None
    for batch in table.batches():
        if fields is None:
            fields, lists = metadata_fields(table, batch.schema.names, opts.item_col,
                                            opts.list_cols)
        kept = table.non_blank(batch)
        row_ids.append(rows + (np.arange(batch.num_rows) if kept is None else kept))
        rows += batch.num_rows
        if kept is not None:
            batch = batch.take(pa.array(kept))
        arr = as_strings(batch.column(opts.item_col)).cast(pa.string())
        bad = first_true(pc.or_kleene(pc.is_null(arr), pc.equal(arr, "")))
        if bad is not None:
            raise table.error(int(row_ids[-1][bad]), f"empty item key ({opts.item_col!r})")
        keys.append(arr)
        for raw, name in fields.items():
            parts.setdefault(name, []).append(_metadata(batch.column(raw), name in lists,
                                                        opts.list_sep))
    if not keys or not sum(map(len, keys)):
        raise table.error(None, "no items (the file has no data rows)")
    keys, row_of = pa.concat_arrays(keys), np.concatenate(row_ids)
    enc = pc.dictionary_encode(keys)
    if len(enc.dictionary) < len(keys):  # name the first repeated key and where it was first
        codes = enc.indices.to_numpy(zero_copy_only=False)
        _, first = np.unique(codes, return_index=True)
        again = int(np.flatnonzero(first[codes] != np.arange(len(codes)))[0])
        raise table.error(int(row_of[again]), f"item key {keys[again].as_py()!r} appears again "
                          f"(first on {table.where(int(row_of[first[codes[again]]]))})")
    return Catalogue(keys, {n: pa.concat_arrays(p) for n, p in parts.items()})


def _metadata(arr: pa.Array, is_list: bool, sep: str) -> pa.Array:
    """A metadata column as strings, or as lists of strings (split on `sep`; _cells trims)."""
    if pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type):
        return pc.cast(arr, pa.list_(pa.string()))
    text = as_strings(arr).cast(pa.string())
    if not is_list:
        return text
    return pc.split_pattern(text, sep)


def _cells(values: pa.Array) -> list:
    """Python values for render_item_map: "" for no value; a list as its non-empty strings."""
    if pa.types.is_list(values.type):
        return [tuple(x.strip() for x in v if x and x.strip()) if v else () for v in
                values.to_pylist()]
    return ["" if v is None else v for v in values.to_pylist()]


def join_items(cat: Catalogue | None, keys: list[str]) -> tuple[dict[str, list], set[str], dict]:
    """Each metadata column for the item ids 1..N (`keys` in id order), the list fields, and
    what did not match (items-file rows without clicks, clicked items without a row)."""
    if cat is None:
        return {}, set(), {}
    ids = pa.array(keys, pa.string())
    index = pc.index_in(ids, value_set=cat.keys)
    unused = pc.invert(pc.is_in(cat.keys, value_set=ids)).to_numpy(zero_copy_only=False)
    columns = {}
    for name, values in cat.columns.items():
        col = _cells(pc.take(values, index))
        columns[name] = col
    lists = {n for n in cat.columns if pa.types.is_list(cat.columns[n].type)}
    report = {
        "item_rows_without_clicks": int(unused.sum()),
        "item_rows_without_clicks_examples": cat.keys.filter(pa.array(unused))[:EXAMPLES]
        .to_pylist(),
        "items_without_row": int(index.null_count),
    }
    return columns, lists, report


# -- config.yaml --------------------------------------------------------------------------------

_LINE = re.compile(r"^(?P<indent>\s*)(?P<key>\w+):(?P<value>[^#]*?)(?P<comment>\s*#.*)?$")


def render_config(template: str, values: dict[str, str], header: list[str]) -> str:
    """`template` (config.yaml's text) with `values` substituted by key, comments kept in their
    column, and its header comment replaced by `header`."""
    lines = template.splitlines()
    while lines and lines[0].startswith("#"):
        lines.pop(0)
    done = set()
    for j, line in enumerate(lines):
        m = _LINE.match(line)
        if m is None or m["key"] not in values:
            continue
        if m["key"] in done:
            raise ValueError(f"{MODEL_CONFIG}: key {m['key']!r} appears twice")
        done.add(m["key"])
        new = f"{m['indent']}{m['key']}: {values[m['key']]}"
        comment = (m["comment"] or "").lstrip()
        if comment:
            column = len(line) - len(comment)
            new = new.ljust(column) if len(new) < column else new + "  "
        lines[j] = new + comment
    missing = set(values) - done
    if missing:
        raise ValueError(f"{MODEL_CONFIG} has no key(s) {sorted(missing)} to fill in")
    return "\n".join(header + lines) + "\n"


def config_text(out: Path, item_count: int) -> str:
    """recommend/model/mind/config.yaml for this data: paths relative to `out` (config paths
    resolve against the config's folder), the model beside `out`, never inside it: a re-import
    replaces `out` whole."""
    model = json.dumps(f"../{out.name}_model")
    values = {k: json.dumps(v) for k, v in SPLIT_DIRS.items()}
    values.update(model_save_path=model, infer_load_path=model, item_count=str(item_count))
    # AmazonBook's fixed 1.28 M samples an epoch and 20 epochs are hours for any catalogue: an
    # epoch of one sample per click, and stopping when valid Recall@50 stops improving.
    values.update(samples_per_epoch="null", early_stopping_patience="3")
    me = shlex.quote(str(out / CONFIG_FILE))
    header = [
        "# MIND on data imported by `sh data.sh import` (its command is in meta.json): the",
        "# shipped defaults of recommend/model/mind/config.yaml with this data's folders and",
        "# item_count (one sample per click an epoch, early stopping after 3 epochs without a",
        "# better valid Recall@50). Relative paths resolve against this file's folder; checkpoints go beside",
        "# it, not inside, so a re-import (which replaces the folder) keeps the model.",
        f"# Train:  cd recommend/model && python -u trainer.py -m {me} [-o runner.epochs=2]",
        f"# Infer:  cd recommend/model && python -u infer.py -m {me} -top_n 50",
    ]
    return render_config(MODEL_CONFIG.read_text(), values, header)


# -- the command --------------------------------------------------------------------------------


def check_out(opts: Options) -> Path:
    """The resolved --out, refused if replacing it could destroy something not ours."""
    out = opts.out.resolve()
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: --out exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / "meta.json").is_file():
        raise InputError(f"{out}: --out is a non-empty folder that data.sh did not write (no "
                         "meta.json); the import replaces --out whole, so choose a new folder")
    for given in (opts.clicks, opts.items):
        if given is not None and Path(given).resolve().is_relative_to(out):
            raise InputError(f"{given}: an input file inside --out {out} would be deleted when "
                             "the import replaces that folder; keep inputs elsewhere")
    return out


def _count(n: int, what: str) -> str:
    return f"{n:,} {what}"


def prepare(opts: Options) -> dict:
    """Read, preprocess, split and write; returns meta.json's content."""
    if opts.min_count < 1:
        raise InputError(f"--min-count must be >= 1, got {opts.min_count}")
    if not opts.list_sep:
        raise InputError("--list-sep must not be empty")
    out = check_out(opts)
    t0 = time.perf_counter()
    log = read_log(opts)
    cat = read_items(opts.items, opts) if opts.items is not None else None
    print(f"read {_count(len(log.users), 'clicks')} of {_count(len(log.user_keys), 'users')} on "
          f"{_count(len(log.item_keys), 'items')} from {opts.clicks} in "
          f"{time.perf_counter() - t0:.1f} s (times: {log.time_form})")
    raw_clicks = len(log.users)
    prep = preprocess(log, opts.min_count)
    d = prep.dropped
    clicks = prep.clicks
    if len(clicks) < MIN_USERS:
        raise InputError(f"{opts.clicks}: {len(clicks)} user(s) left with >= "
                         f"{max(opts.min_count, 2)} clicks; the 8:1:1 split needs at least "
                         f"{MIN_USERS} (lower --min-count?)")
    item_keys = log.item_keys.take(pa.array(prep.item_code[1:])).to_pylist()
    user_keys = log.user_keys.take(pa.array(prep.user_code)).to_pylist()
    time_form, blank_lines = log.time_form, log.blank_lines
    del log
    columns, lists, joined = join_items(cat, item_keys)
    if cat is not None:
        d["item_rows_without_clicks"] = joined["item_rows_without_clicks"]
    item_map = render_item_map(item_keys, columns, lists)
    user_map = render_item_map(user_keys)
    item_count = len(item_keys) + 1
    config = config_text(out, item_count)

    print(f"dropped {_count(d['duplicate_clicks'], 'duplicate clicks')} (same user, item and "
          "time)")
    print(f"dropped {_count(d['rare_items'], 'items')} with < {opts.min_count} clicks "
          f"({_count(d['rare_item_clicks'], 'clicks')})")
    print(f"dropped {_count(d['rare_users'], 'users')} with < {max(opts.min_count, 2)} clicks "
          f"on kept items ({_count(d['rare_user_clicks'], 'clicks')})")
    if d["items_left_without_clicks"]:
        print(f"dropped {_count(d['items_left_without_clicks'], 'items')} whose clicks were "
              "all by dropped users")
    if cat is not None:
        ex = ", ".join(map(repr, joined["item_rows_without_clicks_examples"]))
        print(f"{opts.items}: {_count(joined['item_rows_without_clicks'], 'rows')} whose key "
              f"has no click left, left out{f' (e.g. {ex})' if ex else ''}; "
              f"{_count(joined['items_without_row'], 'clicked items')} without a row (kept, "
              "empty metadata)")

    def write_maps(tmp: Path) -> None:
        (tmp / ITEM_MAP_FILE).write_bytes(item_map)
        (tmp / USER_MAP_FILE).write_bytes(user_map)
        (tmp / CONFIG_FILE).write_text(config)

    meta = {
        "source": f"import of {opts.clicks}" + (f" with items {opts.items}" if opts.items else ""),
        "seed": opts.seed,
        "options": {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
                    for k, v in vars(opts).items()},
        "time_form": time_form,
        "raw_clicks": raw_clicks,
        "blank_lines": blank_lines,
        "dropped": d,
        "items_file": joined or None,  # the join of --items: counts and a few examples
        "item_map_sha256": hashlib.sha256(item_map).hexdigest(),
    }
    meta = write_dataset(out, split_users(clicks, opts.seed), item_count, meta, extra=write_maps)
    heads = item_map[: item_map.index(b"\n")].decode().split("\t")[2:]
    print(f"wrote {ITEM_MAP_FILE} ({_count(item_count - 1, 'items')}"
          f"{'; columns ' + ', '.join(heads) if heads else ''}), {USER_MAP_FILE} "
          f"({_count(len(user_keys), 'users')}), {CONFIG_FILE}")
    print("next: cd recommend/model && python -u trainer.py -m "
          + shlex.quote(str(out / CONFIG_FILE)))
    return meta
