"""Finding items by what a person types: a title, a key, a genre (GET /rec/items).

An in-memory scan of the served model's item map (no Milvus call: the page can search while
the collection is empty or Milvus is down). Matches rank exact first, then a key or a word
of the name starting with the query, then the query anywhere; ties go to the smaller id,
the more clicked item (ids are numbered by descending clicks). Without a map the ids are the
only names: the query must be digits and matches ids by their leading digits.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from service.catalogue import Catalogue
from service.domain import BadQuery

# Columns that name an item, in the order the page shows the first one found.
NAME_COLUMNS = ("title", "name")
# Columns a filter selector offers when the map has no list column.
CATEGORY_COLUMNS = ("genre", "genres", "category", "categories")
# A selector of more values than this is no selector (a per-item column such as a title).
MAX_FILTER_VALUES = 500
_WORD = re.compile(r"\w+")


class ItemSearch:
    """Search over one catalogue; built once per served model (the scan text is kept)."""

    def __init__(self, catalogue: Catalogue):
        self.catalogue = catalogue
        m = catalogue.item_map
        self.name_column = None if m is None else next(
            (c for c in NAME_COLUMNS if c in m.columns and c not in m.list_columns), None)
        self._exact: dict[str, list[int]] = {}  # a key, name or value -> ids holding it
        self._prefixes: list[tuple[str, ...]] = []
        self._text: list[str] = []
        if m is None:
            return
        # Built on the first search: ~2 s for AmazonBook's 368k keys on a busy 2-core machine
        # (other threads keep running meanwhile: the GIL changes hands every 5 ms).
        keys = [k.casefold() for k in m.keys.tolist()]
        cols = [[tuple(x.casefold() for x in v) for v in values.tolist()]
                if n in m.list_columns else [(v.casefold(),) if v else () for v in values.tolist()]
                for n, values in m.columns.items()]
        per_item = [sum(t, ()) for t in zip(*cols)] if cols else [()] * len(keys)
        names = [v.casefold() for v in m.columns[self.name_column].tolist()] \
            if self.name_column else [""] * len(keys)
        self._text = ["\t".join((k, *v)) for k, v in zip(keys, per_item)]
        self._prefixes = [(k, *_WORD.findall(n)) for k, n in zip(keys, names)]
        self._text[0], self._prefixes[0] = "", ()  # padding: an empty text is never found
        for i in range(1, len(keys)):
            for v in {keys[i], *per_item[i]}:
                self._exact.setdefault(v, []).append(i)

    def search(self, q: str, limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` items matching ``q``: {"item", "id", ...metadata}, best match first."""
        if self.catalogue.item_map is None:
            return self._by_id(q, limit)
        q = q.strip().casefold()
        exact = self._exact.get(q, [])[:limit]
        seen = set(exact)
        prefix: list[int] = []
        anywhere: list[int] = []
        for i, text in enumerate(self._text):
            if len(exact) + len(prefix) >= limit:  # what is left can only rank below these
                break
            if q not in text or i in seen:
                continue
            if any(p.startswith(q) for p in self._prefixes[i]):
                prefix.append(i)
            elif len(anywhere) < limit:
                anywhere.append(i)
        return self.describe((exact + prefix + anywhere)[:limit])

    def _by_id(self, q: str, limit: int) -> list[dict[str, Any]]:
        q = q.strip()
        if not q.isdigit() or not q.isascii():
            raise BadQuery("this model has no item keys or titles (its data had no "
                           "item_map.tsv): search by item id (digits)", loc="query.q")
        count, exact = self.catalogue.item_count, int(q)
        if not 0 < exact < count:
            return []
        # Then the ids that start with the digits typed, shorter (more clicked) first:
        # 1, 10..19, 100..199, ...
        ids, lo, hi = [exact], exact * 10, exact * 10 + 10
        while len(ids) < limit and lo < count:
            ids.extend(range(lo, min(hi, count, lo + limit - len(ids))))
            lo, hi = lo * 10, hi * 10
        return self.describe(ids)

    def describe(self, ids: list[int]) -> list[dict[str, Any]]:
        """Items as the recall's `"return": "items"` names them (key when the map has keys),
        plus their id and metadata."""
        m = self.catalogue.item_map
        if m is None:
            return [{"item": i, "id": i} for i in ids]
        out = []
        for i in ids:
            item: dict[str, Any] = {"item": m.keys[i], "id": i}
            for name, values in m.columns.items():
                item[name] = list(values[i]) if name in m.list_columns else values[i]
            out.append(item)
        return out

    @functools.cached_property
    def filter_field(self) -> tuple[str, list[str]] | None:
        """The column a genre/category selector offers, and its values by item count (most
        first); None when the map has no such column."""
        m = self.catalogue.item_map
        if m is None:
            return None
        candidates = sorted(m.list_columns) + [
            c for c in m.columns if c.casefold() in CATEGORY_COLUMNS and c not in m.list_columns]
        for name in candidates:
            counts: dict[str, int] = {}
            multi = name in m.list_columns
            for v in m.columns[name].tolist()[1:]:
                for x in (v if multi else (v,)):
                    if x:
                        counts[x] = counts.get(x, 0) + 1
            if 0 < len(counts) <= MAX_FILTER_VALUES:
                return name, sorted(counts, key=lambda x: (-counts[x], x))
        return None
