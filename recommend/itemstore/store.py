"""ItemStore: item vectors (id = item id) in one served Milvus collection, inner-product top-k.

Used by the service and by infer.py. Backends: a path ending in ``.db`` is embedded Milvus
Lite (one process per file, enforced: itemstore.lite_lock); ``http://host:port`` a Milvus
server. Given the ``identity`` of the model whose items it serves, a store writes it into
every collection it builds and refuses (ModelMismatch) to search a collection of another.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from itemstore import fast_search, lite_lock
from itemstore.client import Connection, DataType, MilvusClient, MilvusException
from itemstore.errors import CollectionMissing, ModelMismatch, is_not_found, is_not_loaded
from itemstore.fields import ScalarField
from itemstore.generations import Generations, Heartbeat
from itemstore.identity import Identity, decode, encode, mismatch_message, same_model
from itemstore.names import collection_name_problem
from itemstore.vectors import augment, check_items, check_queries, fit_queries, pad_hits

log = logging.getLogger("itemstore")

# Index types each backend accepts for a FLOAT_VECTOR field.
INDEX_TYPES: dict[str, tuple[str, ...]] = {
    "lite": ("FLAT", "IVF_FLAT", "AUTOINDEX"),
    "server": ("FLAT", "IVF_FLAT", "HNSW", "AUTOINDEX"),
}
# With items stored augmented, IVF_FLAT nlist 256 keeps served recall 1.00 on both backends
# at 7-10x less latency than FLAT (milvus/DEPLOY.md, "Index choice").
DEFAULT_INDEX: dict[str, str] = {"lite": "IVF_FLAT", "server": "IVF_FLAT"}
BUILD_PARAMS: dict[str, dict[str, int]] = {
    "FLAT": {},
    "IVF_FLAT": {"nlist": 256},
    "HNSW": {"M": 16, "efConstruction": 128},
    "AUTOINDEX": {},
}
# Milvus reads only the key its index uses, so one dict serves all types.
DEFAULT_SEARCH_PARAMS: dict[str, int] = {"nprobe": 8, "ef": 64}
# A filtered IVF search looks only in the nprobe lists nearest each query, which may hold fewer
# matching items than asked for; then it searches again in 4x, then 16x as many lists, then in
# every list (Milvus takes the least of nprobe and nlist), which finds all there are.
EVERY_LIST = 65536
WIDER = 4
# Seconds a search trusts the cached served name before re-reading it, so a switch made by
# another process is followed within that bound.
POINTER_TTL = 2.0
MAX_TOP_K = 16384  # Milvus's own limit on limit
# Bytes of vectors per insert request: the server caps a request at 64 MB; Milvus Lite 2.5.1
# slows down sharply on big requests (5k rows ~7k rows/s, 62k rows > 60 s).
_BATCH_BYTES = {"lite": 1 << 20, "server": 16 << 20}
# Milvus Lite's insert time grows with the rows of a request, not only its bytes.
_BATCH_ROWS = {"lite": 4096, "server": 1 << 20}


class ItemStore:
    """Item vectors in one served Milvus collection, searched by inner product."""

    def __init__(self, uri: str, collection: str, dim: int = 64, token: str = "",
                 timeout: float = 10.0, *, identity: Identity | None = None,
                 search_params: Mapping[str, int] | None = None,
                 build_params: Mapping[str, Mapping[str, int]] | None = None) -> None:
        if (problem := collection_name_problem(collection)) is not None:
            raise ValueError(problem)
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0, got {timeout!r}")
        self.conn = Connection(uri, token, float(timeout))
        if self.conn.backend == "lite":
            lite_lock.acquire(uri)  # before pymilvus opens the file (LiteFileBusy)
        self.uri, self.collection, self.dim = uri, collection, dim
        self.token, self.timeout = token, float(timeout)
        self.identity = dict(identity) if identity is not None else None
        self.generations = Generations(self.conn, collection)
        self.search_params = {**DEFAULT_SEARCH_PARAMS, **(search_params or {})}
        self.build_params = {k: dict(v) for k, v in BUILD_PARAMS.items()}
        for k, v in (build_params or {}).items():
            self.build_params[k.upper()] = dict(v)
        self.batch_bytes = _BATCH_BYTES[self.conn.backend]  # an attribute: tests force batches
        self._replace_lock = threading.Lock()
        self._served_cache: str | None = None
        self._served_read_at = 0.0
        self.pointer_ttl = POINTER_TTL
        # Per physical collection (immutable once built): (vector width, model identity).
        self._info: dict[str, tuple[int, dict[str, Any] | None]] = {}
        self.fast_search = True  # False: pymilvus's public search (same answers, slower)

    @property
    def backend(self) -> str:
        """"lite" (embedded Milvus Lite) or "server"."""
        return self.conn.backend

    # ------------------------------------------------------------------ public API
    def replace_items(self, ids: np.ndarray, vectors: np.ndarray,
                      index_type: str | None = None,
                      fields: Sequence[ScalarField] = ()) -> int:
        """Load all items into a fresh collection, then serve it. Returns the count loaded.

        fields: scalar values stored beside each vector (the item's key, its metadata).
        BuildConflict when an earlier insert of another process is still under way.
        """
        ids, vectors = check_items(ids, vectors, self.dim)
        for f in fields:
            f.check(ids.shape[0])
        index = (index_type or DEFAULT_INDEX[self.backend]).upper()
        if index not in INDEX_TYPES[self.backend]:
            raise ValueError(f"index_type {index!r} not supported by the {self.backend} backend; "
                             f"use one of {INDEX_TYPES[self.backend]}")
        gens = self.generations
        with self._replace_lock:
            served = gens.served()
            # A plain collection holding the name (not one of ours) has no generation: the
            # switch replaces it (the upgrade path from the tutorial's own code).
            newest = gens.generation(served) + 1 if served and gens.is_physical(served) else 0
            gen = max(time.time_ns() // 1000, newest)
            physical = gens.physical_name(gen)
            gens.begin(gen)
            try:
                with Heartbeat(gens, gen):
                    gens.cleanup()  # leftovers of builds that failed or were killed
                    self._build(physical, ids, vectors, index, fields)
                    previous = gens.switch(physical)
            except BaseException:
                # Includes KeyboardInterrupt: the new collection is unserved, drop it.
                try:
                    gens.drop_collection(physical)
                except Exception:  # abandoned now: the next clean-up drops it
                    pass
                raise
            finally:
                try:
                    gens.end(gen)
                except Exception:  # the lease ages out instead
                    pass
            self._served_cache, self._served_read_at = physical, time.monotonic()
            try:  # the new items are served: a failed tidy-up is the next build's to finish
                if previous and previous != physical:
                    gens.drop_collection(previous)
                gens.cleanup()
            except Exception as exc:
                log.warning("insert_data: %s is served; clean-up of older collections "
                            "failed and is left to the next insert: %s", physical, exc)
        return int(ids.shape[0])

    def search(self, vectors: np.ndarray, top_k: int, filter: str = ""
               ) -> tuple[np.ndarray, np.ndarray]:
        """Inner-product top_k for every row in one request: ids int64 and scores float32
        [nq, top_k], padded with -1 / -inf where fewer hits exist. ``filter``: a Milvus boolean
        expression on the scalar fields (itemstore.fields.compile_where builds one)."""
        queries = check_queries(vectors, self.dim)
        if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) \
                or not 1 <= top_k <= MAX_TOP_K:
            raise ValueError(f"top_k must be an int in [1, {MAX_TOP_K}], got {top_k!r}")
        top_k = int(top_k)
        params = dict(self.search_params)
        params["ef"] = max(params.get("ef", 0), top_k)  # HNSW refuses ef < top_k
        topks, flat_ids, flat_scores = self._search_served(queries, top_k, params, filter)
        nprobe = params.get("nprobe", 1)
        for wider in (nprobe * WIDER, nprobe * WIDER * WIDER, EVERY_LIST):
            if not filter or not (topks < top_k).any() or nprobe >= EVERY_LIST:
                break
            nprobe = min(wider, EVERY_LIST)
            topks, flat_ids, flat_scores = self._search_served(
                queries, top_k, {**params, "nprobe": nprobe}, filter)
        if flat_ids.size == 0 and not filter:
            raise CollectionMissing(f"collection {self.collection!r} is empty")
        return pad_hits(topks, flat_ids, flat_scores, top_k)

    def count(self) -> int:
        """Number of items served; 0 when the collection is missing or empty."""
        for attempt in range(3):  # resolved again after a switch, or loaded, then counted
            name = self._served(refresh=attempt > 0)
            if name is None:
                return 0
            try:
                rows = self.conn.call(lambda c: c.query(
                    name, filter="", output_fields=["count(*)"], timeout=self.timeout))
            except MilvusException as exc:
                if is_not_found(exc):
                    continue
                if is_not_loaded(exc):
                    self.conn.call(lambda c: c.load_collection(name, timeout=self.timeout))
                    continue
                raise
            return int(rows[0]["count(*)"]) if rows else 0
        return 0  # the served name points at a collection that is gone

    def served_identity(self) -> dict[str, Any] | None:
        """The model identity of the served collection (CollectionMissing if none is served)."""
        name = self._served(refresh=True)
        if name is None:
            raise CollectionMissing(f"collection {self.collection!r} does not exist")
        return self._describe(name)[1]

    def check_model(self) -> None:
        """ModelMismatch unless the served collection holds this store's model's items."""
        name = self._served(refresh=True)
        if name is None:
            raise CollectionMissing(f"collection {self.collection!r} does not exist")
        self._check_identity(name)

    def drop(self) -> None:
        """Drop the served collection and any leftovers; no error if missing.
        BuildConflict while another process is loading it."""
        with self._replace_lock:
            self._served_cache = None
            self.generations.drop_all()

    def ping(self) -> bool:
        """True if Milvus answers within the timeout."""
        try:
            self.generations.names()  # cheapest call both backends implement
            return True
        except Exception:
            return False

    def is_loaded(self) -> bool:
        """True if the served collection exists and is loaded for search."""
        name = self._served(refresh=True)
        if name is None:
            return False
        try:
            state = self.conn.call(lambda c: c.get_load_state(name, timeout=self.timeout))
        except MilvusException:
            return False
        return "loaded" == str(state.get("state", "")).rsplit(".", 1)[-1].lower() \
            or getattr(state.get("state"), "name", "") == "Loaded"

    def close(self) -> None:
        """Release the connection (a later call reconnects)."""
        self.conn.reset()

    # ------------------------------------------------------------------ internals
    def _served(self, refresh: bool = False) -> str | None:
        """The physical collection to search, cached for pointer_ttl seconds."""
        now = time.monotonic()
        if self._served_cache is not None and not refresh \
                and now - self._served_read_at < self.pointer_ttl:
            return self._served_cache
        self._served_cache = self.generations.served()
        self._served_read_at = now
        return self._served_cache

    def _describe(self, name: str) -> tuple[int, dict[str, Any] | None]:
        """(vector width, model identity) of ``name``, cached: a built collection never changes."""
        info = self._info.get(name)
        if info is None:
            desc = self.conn.call(lambda c: c.describe_collection(name, timeout=self.timeout))
            dims = [int(f.get("params", {}).get("dim", 0)) for f in desc.get("fields", [])
                    if f.get("name") == "embedding"]
            info = (dims[0] if dims else self.dim, decode(str(desc.get("description", ""))))
            if len(self._info) > 64:  # names of long-gone collections
                self._info.clear()
            self._info[name] = info
        return info

    def _check_identity(self, name: str) -> None:
        if self.identity is None:
            return
        served = self._describe(name)[1]
        if not same_model(served, self.identity):
            raise ModelMismatch(mismatch_message(served, self.identity))

    def _search_served(self, queries: np.ndarray, top_k: int, params: dict[str, int],
                       filter: str = "") -> fast_search.Hits:
        """One search of the served collection; if another writer dropped it since it was
        resolved, resolve again once (the switch happened first, so the new one is there)."""
        for attempt in range(2):
            name = self._served(refresh=attempt > 0)
            if name is None:
                break
            try:
                self._check_identity(name)
                return self._search_once(name, queries, top_k, params, filter)
            except MilvusException as exc:
                if is_not_loaded(exc):  # e.g. a Lite file reopened after a restart
                    self.conn.call(lambda c: c.load_collection(name, timeout=self.timeout))
                    return self._search_once(name, queries, top_k, params, filter)
                if not is_not_found(exc):
                    raise
        raise CollectionMissing(f"collection {self.collection!r} does not exist")

    def _search_once(self, name: str, queries: np.ndarray, top_k: int,
                     params: dict[str, int], filter: str = "") -> fast_search.Hits:
        q = fit_queries(queries, self._describe(name)[0])
        return self.conn.call(lambda c: fast_search.search(c, name, q, top_k, params,
                                                           self.timeout, self.fast_search,
                                                           filter))

    def _build(self, physical: str, ids: np.ndarray, vectors: np.ndarray, index: str,
               fields: Sequence[ScalarField] = ()) -> None:
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False,
                                            description=encode(self.identity))
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=self.dim + 1)
        for f in fields:
            schema.add_field(f.name, **f.schema())
        self.conn.call(lambda c: c.create_collection(physical, schema=schema, timeout=self.timeout))
        # Streamed in bounded chunks: the augmented copy of one chunk at a time, never the table.
        max_sq = float(np.einsum("ij,ij->i", vectors, vectors, dtype=np.float64).max())
        row_bytes = (self.dim + 1) * 4 + 16 + sum(f.schema()["max_length"] for f in fields)
        per_batch = max(1, min(self.batch_bytes // row_bytes, _BATCH_ROWS[self.backend]))
        for start in range(0, ids.shape[0], per_batch):
            chunk = augment(vectors[start:start + per_batch], max_sq)
            stop = start + per_batch
            self._insert_batch(physical, ids[start:stop], chunk,
                               {f.name: f.values[start:stop] for f in fields})
        # Flush seals the segments so the index covers every row before we load.
        self.conn.call(lambda c: c.flush(physical, timeout=max(self.timeout, 120.0)))
        idx = MilvusClient.prepare_index_params()
        params = dict(self.build_params.get(index, {}))
        if "nlist" in params:
            # k-means wants >= 39 rows per list; a small catalogue gets fewer lists.
            params["nlist"] = max(1, min(int(params["nlist"]), ids.shape[0] // 39))
        idx.add_index("embedding", index_type=index, metric_type="IP", params=params)
        # Building an index over ~370k rows takes longer than one request's timeout.
        slow = max(self.timeout, 600.0)
        self.conn.call(lambda c: c.create_index(physical, idx, timeout=slow))
        self.conn.call(lambda c: c.load_collection(physical, timeout=slow))

    def _insert_batch(self, physical: str, ids: np.ndarray, vectors: np.ndarray,
                      scalars: Mapping[str, Sequence] | None = None) -> None:
        rows = [{"id": int(i), "embedding": v} for i, v in zip(ids.tolist(), vectors)]
        for name, values in (scalars or {}).items():
            for row, value in zip(rows, values):
                row[name] = list(value) if isinstance(value, tuple) else value
        self.conn.call(lambda c: c.insert(physical, rows, timeout=max(self.timeout, 60.0)))
