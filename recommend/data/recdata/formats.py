"""Readers of the dataset formats (PaddleRec's files byte for byte; README, "Data").

Train files: `uid,item_id,time_order` lines. Eval (valid/test) files: one user per line,
`user_id:U [target_item:T] hist_item:a ... eval_item:x ...` (target_item is accepted and ignored).
Errors raise DataFormatError naming the file, the 1-based line, what was expected and what was
found; with skip_bad=True bad lines are skipped instead and their count is logged as a warning.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .clicks import Clicks

log = logging.getLogger("recdata")

CREATE_HINT = "cd recommend/data && sh data.sh synthetic   (or: sh data.sh movielens / sh data.sh)"
# recommend/data/<variant>/{train,valid,test}: the command that creates each variant's folders.
VARIANT_HINTS = {
    "amazonbook": "cd recommend/data && sh data.sh   (AmazonBook, downloads ~1 GB; offline: "
                  "sh data.sh synthetic)",
    "synthetic": "cd recommend/data && sh data.sh synthetic",
    "movielens": "cd recommend/data && sh data.sh movielens",
}
TRAIN_LINE = "`uid,item_id,time_order` (three non-negative integers)"
EVAL_KEYS = ("user_id", "target_item", "hist_item", "eval_item")


class DataFormatError(ValueError):
    """Malformed or missing data; the message names the file, the line and the expectation."""


def _error(path: Path, lineno: int | None, expected: str, found: str) -> DataFormatError:
    where = f"{path}:{lineno}" if lineno is not None else f"{path}"
    return DataFormatError(f"{where}: expected {expected}, found {found}")


def create_hint(split_dir: str | Path) -> str:
    """The data.sh command that creates `split_dir` (the generic hint for folders of our own)."""
    return VARIANT_HINTS.get(Path(split_dir).parent.name, CREATE_HINT)


def data_files(path: str | Path, what: str) -> list[Path]:
    """Regular non-hidden files of a data directory, sorted by name."""
    path = Path(path)
    if not path.is_dir():
        found = "a file" if path.exists() else "nothing (missing directory)"
        raise _error(
            path, None, f"a directory of {what} files; create it with: {create_hint(path)}", found
        )
    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise _error(
            path,
            None,
            f"{what} files in this directory; create them with: {create_hint(path)}",
            "an empty directory",
        )
    return files


def _item_problem(item: int, item_count: int | None) -> str | None:
    if item == 0:
        return "an item id >= 1 (0 is the padding id)"
    if item_count is not None and item >= item_count:
        return f"an item id < item_count={item_count}"
    return None


def _warn_skipped(path: Path, skipped: int) -> None:
    if skipped:
        log.warning("%s: skipped %d bad line(s) (skip_bad=True)", path, skipped)


def _read(path: Path, expected_lines: str, skip_bad: bool) -> bytes | None:
    """The file's bytes; None for an empty file that skip_bad allows us to skip."""
    raw = Path(path).read_bytes()
    if raw.strip():
        return raw
    if skip_bad:
        log.warning("%s: empty file skipped (skip_bad=True)", path)
        return None
    raise _error(path, 1 if raw else None, f"lines {expected_lines}", "an empty file")


def _decode(path: Path, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        lineno = raw[: exc.start].count(b"\n") + 1
        raise _error(path, lineno, "UTF-8 text", f"undecodable byte at offset {exc.start}") from exc


# -- train files -------------------------------------------------------------------------------


def _fast_train(raw: bytes) -> np.ndarray | None:
    """[N, 3] int64 of a canonical train file (only digits, commas, LF), else None.

    With nothing but digits, commas and newlines, numpy's C parser can only accept what the
    line-by-line path would (blank lines are skipped by both; empty fields, wrong column
    counts and int64 overflow make it raise). Anything else (CRLF, spaces, signs, errors) goes
    to the line-by-line path, which is the authority and locates errors.
    """
    if raw.translate(None, b"0123456789,\n"):
        return None
    try:
        rows = np.loadtxt(io.BytesIO(raw), delimiter=",", dtype=np.int64, ndmin=2, comments=None)
    except ValueError:
        return None
    return rows if rows.shape[1] == 3 else None


def _slow_train(path: Path, text: str, item_count: int | None, skip_bad: bool) -> np.ndarray:
    rows: list[tuple[int, int, int]] = []
    skipped = 0
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split(",")]
        problem = None
        if len(fields) != 3 or not all(f.isascii() and f.isdigit() for f in fields):
            problem = (TRAIN_LINE, repr(line))
        else:
            uid, item, order = (int(f) for f in fields)
            bad = _item_problem(item, item_count)
            if bad:
                problem = (bad, f"item id {item} in {line!r}")
        if problem:
            if not skip_bad:
                raise _error(path, lineno, *problem)
            skipped += 1
            continue
        rows.append((uid, item, order))
    _warn_skipped(path, skipped)
    return np.array(rows, dtype=np.int64).reshape(-1, 3)


def parse_train_file(
    path: Path, item_count: int | None = None, skip_bad: bool = False
) -> np.ndarray:
    """[N, 3] int64 rows (uid, item_id, time_order) of one train file, in file order."""
    raw = _read(path, TRAIN_LINE, skip_bad)
    if raw is None:
        return np.zeros((0, 3), dtype=np.int64)
    rows = _fast_train(raw)
    if rows is not None:
        items = rows[:, 1]
        in_range = items.min() >= 1 and (item_count is None or items.max() < item_count)
        if in_range:
            return rows
    # The slow path locates the bad line (or skips bad lines), or handles CRLF/spaces.
    return _slow_train(path, _decode(path, raw), item_count, skip_bad)


def read_train_clicks(
    path: str | Path, item_count: int | None = None, skip_bad: bool = False
) -> Clicks:
    """All train files of a directory (or one file) as per-user sequences ordered by time_order."""
    path = Path(path)
    files = [path] if path.is_file() else data_files(path, "train")
    rows = np.concatenate([parse_train_file(f, item_count, skip_bad) for f in files])
    if not len(rows):
        raise _error(path, None, f"at least one line {TRAIN_LINE}", "no usable lines")
    return Clicks.from_events(rows[:, 0], rows[:, 1], rows[:, 2])


def read_train_dir(
    path: str | Path, item_count: int | None = None, skip_bad: bool = False
) -> dict[int, np.ndarray]:
    """{uid: int64 item ids ordered by time_order (ties keep file order)} of a train directory."""
    clicks = read_train_clicks(path, item_count, skip_bad)
    bounds = clicks.offsets.tolist()
    items = clicks.items
    # Slicing in a comprehension is several times faster than np.split for ~500k users.
    return {u: items[bounds[i] : bounds[i + 1]] for i, u in enumerate(clicks.user_ids.tolist())}


# -- eval files --------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalSet:
    """Held-out users: full click-ordered histories and all their eval items."""

    user_ids: np.ndarray  # int64 [U]
    histories: list[np.ndarray]  # int64 each, click order, full history
    eval_items: list[np.ndarray]  # int64 each

    def __len__(self) -> int:
        return len(self.user_ids)


EVAL_LINE = "`user_id:U [target_item:T] hist_item:A ... eval_item:X ...`"


def _parse_eval_line(
    line: str, item_count: int | None
) -> tuple[int, list[int], list[int]] | tuple[str, str]:
    """(uid, hist, eval) or (expected, found) describing the first problem of the line."""
    uid: int | None = None
    hist: list[int] = []
    ev: list[int] = []
    for tok in line.split():
        key, colon, val = tok.partition(":")
        if not colon or key not in EVAL_KEYS:
            return (f"tokens key:value with key in {', '.join(EVAL_KEYS)}", f"token {tok!r}")
        if not (val.isascii() and val.isdigit()):
            return ("a non-negative integer value", f"token {tok!r}")
        v = int(val)
        if key == "user_id":
            if uid is not None:
                return ("one user_id token", f"a second one {tok!r}")
            uid = v
        elif key == "hist_item" or key == "eval_item":
            bad = _item_problem(v, item_count)
            if bad:
                return (bad, f"token {tok!r}")
            (hist if key == "hist_item" else ev).append(v)
    if uid is None:
        return ("a user_id: token", "none")
    if not hist:
        return ("at least one hist_item: token", "none")
    if not ev:
        return ("at least one eval_item: token", "none")
    return uid, hist, ev


def parse_eval_file(
    path: Path,
    item_count: int | None = None,
    skip_bad: bool = False,
    seen: dict[int, str] | None = None,
) -> EvalSet:
    """The users of one eval file, in file order; `seen` tracks user ids across files."""
    raw = _read(path, EVAL_LINE, skip_bad)
    if raw is None:
        return EvalSet(np.zeros(0, np.int64), [], [])
    text = _decode(path, raw)
    seen = {} if seen is None else seen
    uids: list[int] = []
    hists: list[np.ndarray] = []
    evals: list[np.ndarray] = []
    skipped = 0
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parsed = _parse_eval_line(line, item_count)
        if len(parsed) == 3 and parsed[0] in seen:
            parsed = (
                "each user_id once",
                f"user_id {parsed[0]} again (first at {seen[parsed[0]]})",
            )
        if len(parsed) == 2:
            if not skip_bad:
                raise _error(path, lineno, *parsed)
            skipped += 1
            continue
        uid, hist, ev = parsed
        seen[uid] = f"{path}:{lineno}"
        uids.append(uid)
        hists.append(np.array(hist, dtype=np.int64))
        evals.append(np.array(ev, dtype=np.int64))
    _warn_skipped(path, skipped)
    return EvalSet(np.array(uids, dtype=np.int64), hists, evals)


def read_eval_dir(
    path: str | Path, item_count: int | None = None, skip_bad: bool = False
) -> EvalSet:
    """Every eval file of a directory (sorted by name), users in file order."""
    path = Path(path)
    files = [path] if path.is_file() else data_files(path, "valid/test")
    seen: dict[int, str] = {}
    parts = [parse_eval_file(f, item_count, skip_bad, seen) for f in files]
    user_ids = np.concatenate([p.user_ids for p in parts])
    if not len(user_ids):
        raise _error(path, None, f"at least one line {EVAL_LINE}", "no usable lines")
    return EvalSet(
        user_ids,
        [h for p in parts for h in p.histories],
        [e for p in parts for e in p.eval_items],
    )
