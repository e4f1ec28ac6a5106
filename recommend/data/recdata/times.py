"""Click times as one sortable number each: integers, floats or ISO-8601 timestamps.

All times of a file take one form: integers (kept as int64), floats (float64; integers among them
are promoted), ISO-8601 timestamps all with a zone offset (`Z`, `+02:00`; converted to UTC) or all
without one (compared as written). Timestamps become int64 nanoseconds since 1970-01-01. Numbers
mixed with timestamps, or offsets mixed with none, are refused naming the first line that differs:
there is no safe way to order them against each other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NoReturn

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .tabular import Table, first_true

FORMS = {
    "integer": "an integer",
    "float": "a float",
    "iso_utc": "an ISO-8601 timestamp with a zone offset",
    "iso_naive": "an ISO-8601 timestamp without a zone offset",
}
_CAST = {
    "integer": pa.int64(),
    "float": pa.float64(),
    "iso_utc": pa.timestamp("ns", tz="UTC"),
    "iso_naive": pa.timestamp("ns"),
}


def _cast(arr: pa.Array, kind: str) -> pa.Array | None:
    try:
        return pc.cast(arr, _CAST[kind])
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


def _kind_of(text: str) -> str | None:
    """The first form a single time string parses as (integer before float)."""
    one = pa.array([text])
    return next((k for k in _CAST if _cast(one, k) is not None), None)


def _first_failing(arr: pa.Array, kind: str) -> int:
    """Index of the first value that does not parse as `kind`, by bisection with pyarrow's own
    parser (a failure is known to lie in arr)."""
    lo, hi = 0, len(arr)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _cast(arr.slice(lo, mid - lo), kind) is None:
            hi = mid
        else:
            lo = mid
    return lo


class TimeColumn:
    """Collects the time column batch by batch; `values()` is one array in file order."""

    def __init__(self, table: Table, name: str) -> None:
        self.table, self.name = table, name
        self.kind: str | None = None
        self.parts: list[np.ndarray] = []

    def _refuse(self, row: int, value: object, kind: str | None, before: str | None) -> NoReturn:
        if kind is None or before is None:
            what = "not an integer, a float or an ISO-8601 timestamp (e.g. 2024-05-01T12:00:00Z)"
        else:
            what = (f"{FORMS[kind]}, unlike the times before it ({FORMS[before]}); write every "
                    "time of a file in one form")
        raise self.table.error(row, f"time ({self.name!r}) {value!r} is {what}")

    def _settle(self, kind: str, row: int, value: object) -> None:
        """Fix the file's form, or promote integers to floats; refuse any other change."""
        if self.kind is None or self.kind == kind:
            self.kind = kind
        elif {self.kind, kind} == {"integer", "float"}:
            self.kind = "float"
        else:
            self._refuse(row, value, kind, self.kind)

    def add(self, arr: pa.Array, row_of: Callable[[int], int]) -> None:
        """One batch of the column; `row_of(j)` is the data row of its value j (error lines)."""
        bad = first_true(pc.is_null(arr))
        if bad is not None:
            raise self.table.error(row_of(bad), f"no time ({self.name!r})")
        t = arr.type
        if pa.types.is_integer(t) or pa.types.is_floating(t):
            kind = "integer" if pa.types.is_integer(t) else "float"
            self._settle(kind, row_of(0), arr[0].as_py() if len(arr) else None)
            parsed = pc.cast(arr, _CAST[kind])
        elif pa.types.is_timestamp(t) or pa.types.is_date(t):
            kind = "iso_utc" if getattr(t, "tz", None) else "iso_naive"
            self._settle(kind, row_of(0), str(arr[0]) if len(arr) else None)
            parsed = pc.cast(arr, _CAST[kind])
        elif pa.types.is_string(t) or pa.types.is_large_string(t):
            parsed = self._parse_strings(pc.utf8_trim_whitespace(arr), row_of)
        else:
            raise self.table.error(row_of(0), f"time ({self.name!r}) has type {t}; expected "
                                   "integers, floats or ISO-8601 timestamps")
        values = parsed.cast(pa.int64()) if pa.types.is_timestamp(parsed.type) else parsed
        values = values.to_numpy(zero_copy_only=False)
        if self.kind == "float":
            bad = first_true(~np.isfinite(values))
            if bad is not None:
                self._refuse(row_of(bad), arr[bad].as_py(), None, None)
        self.parts.append(values)

    def _parse_strings(self, s: pa.Array, row_of: Callable[[int], int]) -> pa.Array:
        empty = first_true(pc.equal(s, ""))
        if empty is not None:
            raise self.table.error(row_of(empty), f"no time ({self.name!r})")
        if not len(s):
            return pa.array([], pa.int64())
        kind = self.kind
        if kind is None:
            kind = _kind_of(s[0].as_py())
            if kind is None:
                self._refuse(row_of(0), s[0].as_py(), None, None)
        # Integers that meet a float become floats: try the wider numeric form before failing.
        tries = ("integer", "float") if kind == "integer" else (kind,)
        for k in tries:
            parsed = _cast(s, k)
            if parsed is not None:
                self._settle(k, row_of(0), s[0].as_py())
                return parsed
        i = _first_failing(s, tries[-1])
        value = s[i].as_py()
        self._refuse(row_of(i), value, _kind_of(value), kind)

    def values(self) -> np.ndarray:
        """All times: int64 (integers, timestamps in ns) or float64 (floats)."""
        dtype = np.float64 if self.kind == "float" else np.int64
        if not self.parts:
            return np.zeros(0, dtype)
        return np.concatenate([p.astype(dtype, copy=False) for p in self.parts])

    def form(self) -> str:
        return {"integer": "integers", "float": "floats", "iso_utc": "ISO-8601 with zone offsets "
                "(as UTC nanoseconds)", "iso_naive": "ISO-8601 without zone offsets (as "
                "nanoseconds, compared as written)"}.get(self.kind or "", "none")
