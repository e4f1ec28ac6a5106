"""The served model's catalogue: item keys in and out, metadata, and filters on it.

A model trained on data with an item_map.tsv knows each id's key (an SKU, an ASIN) and metadata
(title, genre, ...): requests may then name items by key, answers carry keys, metadata, the score
and the interest that found each item, and a recall may be filtered on the metadata. Without a
map, ids are the only names and nothing can be filtered.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from itemstore.fields import ScalarField, compile_where
from mind.retrieval import Recalled, item_categories
from recdata.itemmap import ItemMap
from service.domain import BadQuery

NO_MAP = ("this model has no item keys or metadata (its data had no item_map.tsv): "
          "send item ids (integers)")


class Catalogue:
    """Keys and metadata of the ids 1..item_count-1 (or nothing but the ids, without a map)."""

    def __init__(self, item_map: ItemMap | None, item_count: int):
        self.item_map, self.item_count = item_map, item_count
        self._ids = item_map.ids_by_key() if item_map is not None else {}
        self.fields: dict[str, bool] = {} if item_map is None else {
            name: name in item_map.list_columns for name in item_map.columns}
        self._postings: dict[str, dict[str, np.ndarray]] = {}  # field -> value -> ids
        self._categories: dict[str, np.ndarray] = {}  # column ("" = the first there is) -> table

    def categories(self, column: str = "") -> np.ndarray:
        """bool [item_count, C]: each item's categories, for the controllable merge (built once);
        BadQuery when the catalogue has no such column."""
        got = self._categories.get(column)
        if got is None:
            got = item_categories(self.item_map, self.item_count, column or None)
            if got is None:
                raise BadQuery(
                    "diversity: the controllable merge needs the items' categories, and "
                    + (f"this model's catalogue has no column {column!r}" if column and
                       self.item_map is not None else "this model's catalogue has no category "
                       "or genre column") + "; leave diversity out (or 0)")
            self._categories[column] = got
        return got

    @property
    def has_keys(self) -> bool:
        return self.item_map is not None

    def ids_of(self, rows: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """Key rows as id rows; an unknown key becomes 0 (ignored and counted, as unknown ids)."""
        if self.item_map is None:
            raise BadQuery(NO_MAP)
        get = self._ids.get
        return [np.fromiter((get(k, 0) for k in row), np.int64, len(row)) for row in rows]

    def where(self, where: Mapping[str, Sequence[str]] | None) -> tuple[str, np.ndarray | None]:
        """(Milvus filter, bool [item_count] of the items it admits) for a request's ``where``."""
        if not where:
            return "", None
        if self.item_map is None:
            raise BadQuery("where: " + NO_MAP.replace("send item ids (integers)",
                                                     "nothing to filter on"))
        try:
            expr = compile_where(where, self.fields)
        except ValueError as exc:
            raise BadQuery(str(exc)) from None
        allowed = np.ones(self.item_count, dtype=bool)
        allowed[0] = False
        for name, values in where.items():
            postings = self._postings_of(name)
            hit = np.zeros(self.item_count, dtype=bool)
            for v in values:
                hit[postings.get(v, [])] = True
            allowed &= hit
        return expr, allowed

    def _postings_of(self, name: str) -> dict[str, np.ndarray]:
        """value -> ids holding it, built on first use of a field."""
        got = self._postings.get(name)
        if got is None:
            assert self.item_map is not None
            lists: dict[str, list[int]] = {}
            multi = self.fields[name]
            for i, value in enumerate(self.item_map.columns[name].tolist()):
                for v in (value if multi else (value,)):
                    lists.setdefault(v, []).append(i)
            got = self._postings[name] = {v: np.array(ids, np.int64) for v, ids in lists.items()}
        return got

    def scalar_fields(self) -> list[ScalarField]:
        """What the store keeps beside each vector of ids 1..N: the key and every column."""
        if self.item_map is None:
            return []
        m = self.item_map
        return [ScalarField("key", m.keys[1:]), *(
            ScalarField(name, values[1:], name in m.list_columns)
            for name, values in m.columns.items())]

    def answer(self, rows: Sequence[Any], keys: bool, items: bool) -> list[list[Any]]:
        """Rows of ids (as the engine answers) as the client asked: ids or keys, or item objects
        with score, interest and metadata (``rows`` then holds ``Recalled``)."""
        if not items:
            if not keys:
                return rows  # type: ignore[return-value]
            names = self.item_map.keys  # type: ignore[union-attr]
            return [names[np.asarray(r, np.int64)].tolist() for r in rows]
        return [self._items(r, keys) for r in rows]

    def _items(self, r: Recalled, keys: bool) -> list[dict[str, Any]]:
        m = self.item_map
        ids = r.ids.tolist()
        names = m.keys[r.ids].tolist() if keys and m is not None else ids
        out = [{"item": n, "score": None if s != s else round(s, 6),
                "interest": None if k < 0 else k}
               for n, s, k in zip(names, r.scores.tolist(), r.interests.tolist(), strict=True)]
        if m is not None:
            for name, values in m.columns.items():
                multi = name in m.list_columns
                for item, v in zip(out, values[r.ids].tolist(), strict=True):
                    item[name] = list(v) if multi else v
        return out
