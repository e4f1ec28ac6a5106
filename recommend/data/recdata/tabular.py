"""Tables (click logs, item files) from CSV, TSV, JSON lines or Parquet, read in bounded batches.

The format is chosen by the file's extension:
- `.csv`: comma-separated, a header line, `"` quotes a value (no line breaks inside values);
- `.tsv`: tab-separated, a header line, no quoting (a `"` is part of the value);
- `.jsonl` / `.ndjson`: one JSON object per line, blank lines skipped;
- `.parquet`: any Parquet file.
pyarrow reads them block by block, so memory grows with the columns kept, not the file. Every
problem is an InputError whose message is one line: the file, the line (CSV, TSV, JSON lines) or
row (Parquet) where it can be known, and what is wrong.
"""

from __future__ import annotations

import codecs
import csv
import functools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.json as pjson
import pyarrow.parquet as pq

from .formats import DataFormatError

FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl",
           ".parquet": "parquet"}
BLOCK_BYTES = 8 << 20  # CSV / JSON bytes per batch
PARQUET_ROWS = 1 << 20
_ROW = re.compile(r"Row #(\d+)")


class InputError(DataFormatError):
    """An input file that cannot be imported; the message is one line naming file and line."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))  # pyarrow's messages may span lines


def _reason(exc: BaseException) -> str:
    """pyarrow's message without its location prefixes (we add our own)."""
    text = str(exc).split("\n")[0]
    return re.sub(r"^((In CSV column #\d+|Row #\d+|(CSV|JSON) (parse|conversion) error"
                  r"( to \w+)?): )+", "", text)


def _first_bad_utf8(path: Path) -> int | None:
    """1-based line of the first byte sequence that is not UTF-8, None if there is none."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    line = 1
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            try:
                decoder.decode(block)
            except UnicodeDecodeError as exc:
                return line + block[: exc.start].count(b"\n")
            line += block.count(b"\n")
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return line
    return None


@dataclass(frozen=True)
class Table:
    """One input file: its columns and a reader of some of them in batches."""

    path: Path
    fmt: str  # csv | tsv | jsonl | parquet
    label: str  # what the file is to the user, e.g. "--clicks"

    @classmethod
    def open(cls, path: Path, label: str) -> Table:
        path = Path(path)
        fmt = FORMATS.get(path.suffix.lower())
        if fmt is None:
            raise InputError(f"{path}: unknown extension {path.suffix or '(none)'!r} for "
                             f"{label}; expected one of {', '.join(FORMATS)}")
        if not path.is_file():
            what = "is a directory" if path.is_dir() else "does not exist"
            raise InputError(f"{path}: {label} file {what}")
        if path.stat().st_size == 0:
            raise InputError(f"{path}:1: empty file; expected {cls._expected(fmt)}")
        return cls(path, fmt, label)

    @staticmethod
    def _expected(fmt: str) -> str:
        return {"csv": "a header line, then one comma-separated row per line",
                "tsv": "a header line, then one tab-separated row per line",
                "jsonl": "one JSON object per line",
                "parquet": "a Parquet file"}[fmt]

    def where(self, row: int) -> str:
        """Data row `row` (0-based, in file order) for the user: "line N" or "row N"."""
        return f"row {row + 1}" if self.fmt == "parquet" else f"line {self.line_of(row)}"

    def error(self, row: int | None, what: str) -> InputError:
        """An error at data row `row` (None: the file as a whole)."""
        if row is None:
            return InputError(f"{self.path}: {what}")
        if self.fmt == "parquet":
            return InputError(f"{self.path}: row {row + 1}: {what}")
        return InputError(f"{self.path}:{self.line_of(row)}: {what}")

    def line_of(self, row: int) -> int:
        """The 1-based line of data row `row`. CSV/TSV rows are lines after the header (blank
        lines are rows too, see batches); JSON lines skips blank lines, so they are counted."""
        if self.fmt != "jsonl":
            return row + 2
        seen = -1
        with open(self.path, "rb") as f:
            for lineno, line in enumerate(f, start=1):
                seen += bool(line.strip())
                if seen == row:
                    return lineno
        return lineno + 1

    # -- header -------------------------------------------------------------------------------

    def columns(self) -> list[str]:
        """Column names: the header (CSV, TSV), the first object's keys (JSON), the schema."""
        if self.fmt == "parquet":
            return self._parquet().schema_arrow.names
        if self.fmt == "jsonl":
            return list(self._first_object()[1])
        with open(self.path, "rb") as f:
            first = f.readline()
        try:
            text = first.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise InputError(f"{self.path}:1: not UTF-8 text") from None
        delimiter = "," if self.fmt == "csv" else "\t"
        quoting = csv.QUOTE_MINIMAL if self.fmt == "csv" else csv.QUOTE_NONE
        names = next(csv.reader([text.rstrip("\r\n")], delimiter=delimiter, quoting=quoting), [])
        if not any(n.strip() for n in names):
            raise InputError(f"{self.path}:1: expected a header line naming the columns, found "
                             f"{text.strip()[:80]!r}")
        return names

    def _first_object(self) -> tuple[int, dict]:
        """(line, object) of the first JSON line that is not blank."""
        with open(self.path, "rb") as f:
            for lineno, raw in enumerate(f, start=1):
                if raw.strip():
                    try:
                        return lineno, self._json_line(raw.decode("utf-8-sig"), lineno)
                    except UnicodeDecodeError:
                        raise InputError(f"{self.path}:{lineno}: not UTF-8 text") from None
        raise InputError(f"{self.path}: no JSON object, only blank lines")

    def _json_line(self, text: str, lineno: int) -> dict:
        try:
            obj = json.loads(text)
        except ValueError as exc:
            raise InputError(f"{self.path}:{lineno}: not valid JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise InputError(f"{self.path}:{lineno}: expected a JSON object, found "
                             f"{type(obj).__name__}")
        return obj

    def require(self, wanted: dict[str, str]) -> list[str]:
        """The columns, after checking that each of `wanted` (name -> option) is one of them."""
        names = self.columns()
        for name, option in wanted.items():
            if name not in names:
                where = ("" if self.fmt == "parquet" else
                         f":{self._first_object()[0]}" if self.fmt == "jsonl" else ":1")
                raise InputError(f"{self.path}{where}: no column {name!r} ({option}); found "
                                 f"columns {', '.join(map(repr, names))}")
        return names

    def _parquet(self) -> pq.ParquetFile:
        try:
            return pq.ParquetFile(self.path)
        except (pa.ArrowException, OSError) as exc:
            raise InputError(f"{self.path}: not a readable Parquet file ({_reason(exc)})") from None

    # -- batches ------------------------------------------------------------------------------

    def batches(self, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
        """The columns (None: all) in file order, batch by batch. CSV/TSV values are strings,
        blank lines included as rows of empty strings (so row numbers are line numbers); JSON
        and Parquet keep their own types (JSON: named columns typed by the first object, see
        _json_schema; all columns as pyarrow infers them)."""
        reader = {"csv": self._csv, "tsv": self._csv, "jsonl": self._json,
                  "parquet": self._parquet_batches}[self.fmt]
        if columns is None and self.fmt in ("csv", "tsv"):
            columns = self.columns()
        rows = 0
        try:
            for batch in reader(columns):
                if self.fmt != "csv" and self.fmt != "tsv":
                    batch.validate(full=True)  # pyarrow's JSON reader takes non-UTF-8 strings
                rows += batch.num_rows
                yield batch
        except pa.ArrowInvalid as exc:
            raise self._located(exc, rows, columns) from None

    def non_blank(self, batch: pa.RecordBatch) -> np.ndarray | None:
        """The rows of a CSV/TSV batch that are not blank lines (every cell empty); None when
        there is no blank line (always for JSON and Parquet, which have none)."""
        if self.fmt not in ("csv", "tsv") or not batch.num_columns:
            return None
        empty = functools.reduce(pc.and_, (pc.equal(c, "") for c in batch.columns))
        kept = np.flatnonzero(~empty.to_numpy(zero_copy_only=False))
        return kept if len(kept) < batch.num_rows else None

    def _csv(self, columns: list[str], use_threads: bool = True) -> Iterator[pa.RecordBatch]:
        tsv = self.fmt == "tsv"
        reader = pcsv.open_csv(
            self.path,
            read_options=pcsv.ReadOptions(use_threads=use_threads, block_size=BLOCK_BYTES),
            parse_options=pcsv.ParseOptions(delimiter="\t" if tsv else ",",
                                            quote_char=False if tsv else '"',
                                            ignore_empty_lines=False),
            convert_options=pcsv.ConvertOptions(
                column_types={c: pa.string() for c in columns}, include_columns=columns,
                strings_can_be_null=False, quoted_strings_can_be_null=False))
        yield from reader

    def _json_schema(self, columns: list[str]) -> pa.Schema:
        """Each column typed as in the first object: string, integer or float (a column whose
        type changes later is an error naming that line)."""
        lineno, obj = self._first_object()
        fields = []
        for c in columns:
            v = obj.get(c)
            kind = (pa.string() if isinstance(v, str) else pa.int64() if
                    isinstance(v, int) and not isinstance(v, bool) else pa.float64()
                    if isinstance(v, float) else None)
            if kind is None:
                raise InputError(f"{self.path}:{lineno}: {c!r} must be a string or a number, "
                                 f"found {json.dumps(v)}")
            fields.append(pa.field(c, kind))
        return pa.schema(fields)

    def _json(self, columns: list[str] | None) -> Iterator[pa.RecordBatch]:
        parse = (pjson.ParseOptions(explicit_schema=self._json_schema(columns),
                                    unexpected_field_behavior="ignore")
                 if columns is not None else pjson.ParseOptions())
        reader = pjson.open_json(self.path, read_options=pjson.ReadOptions(
            block_size=BLOCK_BYTES), parse_options=parse)
        yield from reader

    def _parquet_batches(self, columns: list[str] | None) -> Iterator[pa.RecordBatch]:
        yield from self._parquet().iter_batches(batch_size=PARQUET_ROWS, columns=columns)

    # -- locating pyarrow's errors ------------------------------------------------------------

    def _located(self, exc: pa.ArrowInvalid, rows_done: int, columns: list[str] | None
                 ) -> InputError:
        """pyarrow's error with the line it happened on (found again where pyarrow omits it)."""
        text = str(exc)
        if "UTF8" in text and self.fmt != "parquet":
            line = _first_bad_utf8(self.path)
            where = f"{self.path}:{line}" if line else f"{self.path}"
            return InputError(f"{where}: not UTF-8 text")
        if self.fmt in ("csv", "tsv"):
            match = _ROW.search(text)
            if match is None:  # the threaded reader omits row numbers: read again on one thread
                try:
                    for _ in self._csv(columns or self.columns(), use_threads=False):
                        pass
                except pa.ArrowInvalid as again:
                    match, text = _ROW.search(str(again)), str(again)
            if match is not None:
                return InputError(f"{self.path}:{match.group(1)}: {_reason(text)}")
            if "out of sync" in text:
                return InputError(f"{self.path}:{rows_done + 2}: a quote opened on or after this "
                                  "line is never closed on its line (values may not span lines)")
            return InputError(f"{self.path}: after line {rows_done + 1}: {_reason(text)}")
        if self.fmt == "jsonl":
            found = self._json_scan(rows_done, columns)
            if found is not None:
                return found
            return InputError(f"{self.path}: after line {self.line_of(rows_done) - 1}: "
                              f"{_reason(text)}")
        return InputError(f"{self.path}: {_reason(text)}")

    def _json_scan(self, rows_done: int, columns: list[str] | None) -> InputError | None:
        """The first bad line from data row `rows_done` on, checked the way pyarrow reads it."""
        schema = self._json_schema(columns) if columns is not None else None
        want = {f.name: f.type for f in schema} if schema is not None else {}
        row = -1
        with open(self.path, "rb") as f:
            for lineno, raw in enumerate(f, start=1):
                if not raw.strip():
                    continue
                row += 1
                if row < rows_done:
                    continue
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    return InputError(f"{self.path}:{lineno}: not UTF-8 text")
                obj = self._json_line(text, lineno)  # raises for invalid JSON / non-objects
                for name, kind in want.items():
                    v = obj.get(name)
                    ok = v is None or (isinstance(v, str) if kind == pa.string() else
                                       isinstance(v, int) and not isinstance(v, bool)
                                       if kind == pa.int64() else isinstance(v, int | float))
                    if not ok:
                        first = "a string" if kind == pa.string() else (
                            "an integer" if kind == pa.int64() else "a number")
                        return InputError(f"{self.path}:{lineno}: {name!r} is {json.dumps(v)}, "
                                          f"but it is {first} on the first line; write every "
                                          f"{name!r} the same way")
        return None


# -- column helpers -----------------------------------------------------------------------------


def first_true(mask: pa.Array | np.ndarray) -> int | None:
    """Index of the first true value (nulls count as false), None if none."""
    arr = np.asarray(mask.fill_null(False) if isinstance(mask, pa.Array) else mask, dtype=bool)
    hit = np.flatnonzero(arr)
    return int(hit[0]) if hit.size else None


def as_strings(arr: pa.Array) -> pa.Array:
    """Keys as strings: an integer key is a string too (17 -> "17")."""
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        return arr
    if pa.types.is_dictionary(arr.type):
        return as_strings(arr.dictionary_decode())
    return pc.cast(arr, pa.string())

