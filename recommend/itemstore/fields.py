"""Scalar fields beside the vectors (an item's key and metadata) and filters on them.

A filter is built here from a structured request, ``{"genre": ["Comedy"], ...}``, never taken
as a client-written expression: field names must be declared, values are quoted by ``quote``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from itemstore.client import DataType

MAX_VARCHAR = 65535  # Milvus's limit on a VARCHAR's max_length (bytes)
MAX_CAPACITY = 4096  # and on an ARRAY's max_capacity


@dataclass(frozen=True)
class ScalarField:
    """One value per item, aligned with the ids loaded: strings, or tuples of strings (is_list)."""

    name: str
    values: Sequence
    is_list: bool = False

    def schema(self) -> dict:
        """add_field keyword arguments sized to the data (Milvus wants the sizes up front)."""
        if self.is_list:
            items = [x for v in self.values for x in v]
            return {"datatype": DataType.ARRAY, "element_type": DataType.VARCHAR,
                    "max_capacity": min(MAX_CAPACITY, max(1, *map(len, self.values))),
                    "max_length": _width(items)}
        return {"datatype": DataType.VARCHAR, "max_length": _width(self.values)}

    def check(self, count: int) -> None:
        if len(self.values) != count:
            raise ValueError(f"field {self.name!r} has {len(self.values)} values for {count} ids")
        spec = self.schema()
        if spec["max_length"] > MAX_VARCHAR:
            raise ValueError(f"field {self.name!r}: a value longer than {MAX_VARCHAR} bytes")
        if self.is_list and max(map(len, self.values), default=0) > MAX_CAPACITY:
            raise ValueError(f"field {self.name!r}: more than {MAX_CAPACITY} values in one item")


def _width(values: Sequence[str]) -> int:
    return max(1, max((len(v.encode()) for v in values), default=1))


def quote(value: str) -> str:
    """A Milvus string literal for ``value``. Milvus reads \\" and \\\\ but not \\u escapes,
    so the text goes in as it is; control characters are refused (no item holds them)."""
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError(f"value {value!r} holds a control character")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def compile_where(where: Mapping[str, Sequence[str]], declared: Mapping[str, bool]) -> str:
    """The Milvus filter for ``where`` (field -> accepted values, fields AND-ed, values OR-ed);
    ``declared``: field name -> is a list field. ValueError naming what is wrong."""
    parts = []
    for name, values in where.items():
        if name not in declared:
            known = ", ".join(sorted(declared)) or "none: this catalogue has no metadata"
            raise ValueError(f"where: unknown field {name!r} (fields: {known})")
        if not values:
            raise ValueError(f"where.{name}: give at least one value")
        literals = ", ".join(quote(v) for v in values)
        parts.append(f"array_contains_any({name}, [{literals}])" if declared[name]
                     else f"{name} in [{literals}]")
    return " and ".join(parts)
