"""The one Milvus module: item vectors in, inner-product top-k out.

Used by the service (recommend/main.py) and by infer.py. Backends:
  * a path ending in ``.db``  -> embedded Milvus Lite (milvus-lite 2.5.1, C++ core);
  * ``http://host:port``      -> a Milvus server (milvus/start_server.sh, compose, Helm).

Replacing the items never disturbs searches: ``replace_items`` builds a fresh *physical*
collection ``<name>__v<generation>`` (insert, flush, index, load) and only then switches the
served name to it, then drops the old one.
  * Server: the served name is a Milvus alias, switched atomically with alter_alias, so any
    client that searches ``<name>`` follows it.
  * Milvus Lite 2.5.1 implements neither aliases nor rename_collection (its gRPC answers
    UNIMPLEMENTED), so the switch is a pointer: a tiny collection ``<name>__served`` whose
    row with the highest generation names the served physical collection. Appending a row is
    one atomic insert; older rows are deleted afterwards. Only this module reads the pointer.
A crash midway leaves only an unpointed ``<name>__v*`` collection, dropped on the next replace.
Items are stored with one extra coordinate (``_augment``) so that every stored vector has the
same norm; queries get a 0 there, so scores are the plain inner products. This is what lets the
default IVF_FLAT index keep recall on trained embeddings (milvus/DEPLOY.md, "Index choice").
One replace at a time per collection (the service serialises them; a lock here does too).
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import urlsplit

import numpy as np

# pymilvus reads MILVUS_URI when it is imported and refuses to import at all unless it is
# http(s)://. Ours may name a Milvus Lite file (design.md §5); callers read it themselves and
# pass the URI explicitly, so hide a file path from pymilvus.
_env_uri = os.environ.get("MILVUS_URI", "")
if _env_uri and not _env_uri.startswith(("http://", "https://")):
    os.environ.pop("MILVUS_URI")

from pymilvus import DataType, MilvusClient, MilvusException  # noqa: E402

# Fast search path: the raw SearchResults protobuf read straight into numpy. pymilvus 2.6's
# public search() builds a Python Hit dict per hit (25,600 for a 128-user request), which was
# most of the client time. These are pymilvus internals (pinned 2.6.17 in requirements.txt);
# if an upgrade moves them, search() falls back to the public call (same answers, slower).
try:  # pragma: no cover - exercised through search()
    import grpc as _grpc
    from pymilvus.client import ts_utils as _ts_utils
    from pymilvus.client.call_context import _api_level_md
    from pymilvus.client.prepare import Prepare as _Prepare
    from pymilvus.client.utils import check_status as _check_status
    _FAST_SEARCH = True
except ImportError:  # pragma: no cover
    _FAST_SEARCH = False

__all__ = ["MilvusUnavailable", "CollectionMissing", "ItemStore", "DEFAULT_INDEX", "INDEX_TYPES"]

T = TypeVar("T")


class MilvusUnavailable(RuntimeError):
    """Milvus cannot be reached or did not answer within the timeout."""


class CollectionMissing(LookupError):
    """The served collection does not exist or holds no items."""


# Index types each backend accepts for a FLOAT_VECTOR field.
INDEX_TYPES: dict[str, tuple[str, ...]] = {
    "lite": ("FLAT", "IVF_FLAT", "AUTOINDEX"),
    "server": ("FLAT", "IVF_FLAT", "HNSW", "AUTOINDEX"),
}
# Measured on the trained full catalogue (367,982 MIND item embeddings, 64-d) with the interest
# vectors of 1,024 held-out users, recall of the served (merged) top-50 against exact search
# (milvus/DEPLOY.md, "Index choice"). With items stored augmented (_augment), IVF_FLAT nlist 256
# keeps recall 1.00 on both backends at 7-10x less latency than FLAT; Milvus Lite ignores nprobe
# and refuses HNSW / IVF_SQ8. FLAT stays selectable (index_type="FLAT").
DEFAULT_INDEX: dict[str, str] = {"lite": "IVF_FLAT", "server": "IVF_FLAT"}
# Build parameters. nlist 256 builds in ~20 s on the server; nlist 1024 took 420 s there, for no
# gain at equal recall.
BUILD_PARAMS: dict[str, dict[str, int]] = {
    "FLAT": {},
    "IVF_FLAT": {"nlist": 256},
    "HNSW": {"M": 16, "efConstruction": 128},
    "AUTOINDEX": {},
}
# Search-time knobs. Milvus reads only the key its index uses, so one dict serves all types.
# nprobe 8 of 256 lists: recall 1.00 on the server (nprobe 4: 0.9999, 2: 0.9993).
DEFAULT_SEARCH_PARAMS: dict[str, int] = {"nprobe": 8, "ef": 64}

# Milvus Lite: seconds a search trusts the cached pointer before re-reading it (one query).
POINTER_TTL = 2.0

_MAX_TOP_K = 16384  # Milvus's own limit on limit
# Bytes of vectors per insert request. The server caps a request at 64 MB; 16 MB leaves room
# for encoding. Milvus Lite 2.5.1 slows down sharply on big requests (measured: 5k rows at
# ~7k rows/s, 20k rows at ~3.7k rows/s, 62k rows > 60 s), so it gets ~3.8k 64-d rows a batch.
_BATCH_BYTES = {"lite": 1 << 20, "server": 16 << 20}
_PHYSICAL = "__v"
_POINTER = "__served"
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,200}$")
# gRPC status codes / Milvus error codes meaning "the collection is not there".
_NOT_FOUND_CODES = {100, 4}
_NOT_LOADED_CODE = 101


def _is_not_found(exc: MilvusException) -> bool:
    msg = str(getattr(exc, "message", exc)).lower()
    return getattr(exc, "code", None) in _NOT_FOUND_CODES or "not found" in msg or "not exist" in msg


def _is_not_loaded(exc: MilvusException) -> bool:
    msg = str(getattr(exc, "message", exc)).lower()
    return getattr(exc, "code", None) == _NOT_LOADED_CODE or "not loaded" in msg


def _is_unavailable(exc: BaseException) -> bool:
    """Connection-level failures (as opposed to a bad request)."""
    text = f"{type(exc).__name__} {exc}".lower()
    markers = ("unavailable", "deadline", "timeout", "timed out", "fail connecting",
               "connection refused", "failed to connect", "connect failed", "socket closed",
               "server unavailable", "not ready",
               # another thread's failed call closed the shared connection under this one
               # (pymilvus then also says "should create connection first")
               "closed channel", "channel closed", "should create connection first",
               # the proxy's own deadline passed (e.g. collections still loading after a
               # restart): "proxy TaskCondition context Done", "context deadline exceeded"
               "context done")
    return any(m in text for m in markers)


def _augment(vectors: np.ndarray) -> np.ndarray:
    """Items as stored: [x, sqrt(M^2 - |x|^2)] with M the largest norm, so every stored
    vector has norm M (the MIPS-to-nearest-neighbour transform: Bachrach et al., RecSys 2014;
    Neyshabur & Srebro, ICML 2015). Queries get a 0 appended, so q'.x' = q.x: scores and the
    exact order are unchanged, but inner product on equal-norm vectors is a cosine, which IVF
    and HNSW search well. Without it, trained MIND embeddings (norms 0.014 .. 4.8, median
    0.023) defeat them: IVF_FLAT recall@50 0.59, see milvus/DEPLOY.md "Index choice"."""
    v = vectors.astype(np.float32, copy=False)
    sq = np.einsum("ij,ij->i", v, v, dtype=np.float64)
    extra = np.sqrt(np.maximum(sq.max(initial=0.0) - sq, 0.0)).astype(np.float32)
    return np.ascontiguousarray(np.hstack([v, extra[:, None]]))


class ItemStore:
    """Item vectors (id = item id) in one served Milvus collection, searched by inner product."""

    def __init__(self, uri: str, collection: str, dim: int = 64, token: str = "",
                 timeout: float = 10.0, *, search_params: Mapping[str, int] | None = None,
                 build_params: Mapping[str, Mapping[str, int]] | None = None) -> None:
        if not _NAME_RE.match(collection) or _PHYSICAL in collection or collection.endswith(_POINTER):
            raise ValueError(f"collection name {collection!r}: letters, digits, '_' only, "
                             f"not containing {_PHYSICAL!r} nor ending in {_POINTER!r}")
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0, got {timeout!r}")
        if uri.endswith(".db"):
            self._backend = "lite"
        elif uri.startswith(("http://", "https://", "tcp://", "grpc://")):
            self._backend = "server"
        else:
            raise ValueError(f"uri {uri!r}: expected a path ending in .db (Milvus Lite) "
                             "or http://host:port (server)")
        self.uri, self.collection, self.dim = uri, collection, dim
        self.token, self.timeout = token, float(timeout)
        self.search_params = {**DEFAULT_SEARCH_PARAMS, **(search_params or {})}
        self.build_params = {k: dict(v) for k, v in BUILD_PARAMS.items()}
        for k, v in (build_params or {}).items():
            self.build_params[k.upper()] = dict(v)
        # Bytes of vectors per insert request; an attribute so tests can force many batches.
        self.batch_bytes = _BATCH_BYTES[self._backend]
        self._client: MilvusClient | None = None
        self._client_lock = threading.Lock()
        self._replace_lock = threading.Lock()
        # Lite only: the physical collection being served, cached so searches cost one request;
        # re-read after pointer_ttl seconds (or at once if the cached one is gone), so a replace
        # made through another ItemStore is followed within that bound.
        self._served_cache: str | None = None
        self._served_read_at = 0.0
        self.pointer_ttl = POINTER_TTL
        # Vector width of each served collection (dim, or dim + 1 if stored augmented).
        self._vector_dims: dict[str, int] = {}
        # The numpy-reading search path (False: pymilvus's public search; same answers).
        self.fast_search = True

    # ------------------------------------------------------------------ plumbing
    @property
    def backend(self) -> str:
        """"lite" (embedded Milvus Lite) or "server"."""
        return self._backend

    def _connect(self) -> MilvusClient:
        with self._client_lock:
            if self._client is None:
                try:
                    # dedicated: our own channel, so closing it on failure cannot break
                    # another client in the process that happens to use the same address.
                    self._client = MilvusClient(uri=self.uri, token=self.token,
                                                timeout=self.timeout, dedicated=True)
                except Exception as exc:  # pymilvus raises several types for a dead address
                    raise MilvusUnavailable(f"cannot connect to Milvus at {self.uri}: {exc}") from exc
            return self._client

    def _reset(self, failed: MilvusClient | None = None) -> None:
        """Forget the connection so the next call dials again (the server may be back).

        With ``failed``: only if that is still the current client, so a thread whose call
        failed on an old connection never closes the new one another thread just opened.
        """
        with self._client_lock:
            if failed is not None and self._client is not failed:
                return
            client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # already broken; nothing more to release
                pass

    def _call(self, fn: Callable[[MilvusClient], T]) -> T:
        """Run one client call, turning connection failures into MilvusUnavailable."""
        client = self._connect()
        t0 = time.monotonic()
        try:
            return fn(client)
        except MilvusException as exc:
            if _is_not_found(exc) or _is_not_loaded(exc) or not _is_unavailable(exc):
                raise
            self._reset(client)
            raise MilvusUnavailable(f"Milvus at {self.uri} failed after "
                                    f"{time.monotonic() - t0:.1f}s: {exc}") from exc
        except Exception as exc:
            # Errors are recognised by their text, which pymilvus does not promise to keep:
            # an unrecognised failure of a server we can no longer reach is still an outage.
            if not (_is_unavailable(exc) or not self._server_reachable()):
                raise
            self._reset(client)
            raise MilvusUnavailable(f"Milvus at {self.uri} failed after "
                                    f"{time.monotonic() - t0:.1f}s: {exc}") from exc

    def _server_reachable(self) -> bool:
        """Does the server's port accept a TCP connection? (Always True for Milvus Lite.)"""
        if self._backend != "server":
            return True
        address = urlsplit(self.uri if "://" in self.uri else f"tcp://{self.uri}")
        try:
            with socket.create_connection((address.hostname or "127.0.0.1", address.port or 19530),
                                          timeout=min(self.timeout, 1.0)):
                return True
        except OSError:
            return False

    def _names(self) -> list[str]:
        return self._call(lambda c: c.list_collections(timeout=self.timeout))

    def _physical_names(self) -> list[str]:
        prefix = self.collection + _PHYSICAL
        return [n for n in self._names() if n.startswith(prefix) and n[len(prefix):].isdigit()]

    @staticmethod
    def _generation(physical: str) -> int:
        return int(physical.rsplit(_PHYSICAL, 1)[1])

    # ------------------------------------------------------------------ served name
    def _served(self, refresh: bool = False) -> str | None:
        """Name to search: the alias itself (server; Milvus resolves it, no extra request) or
        the physical collection the pointer names (Lite, cached)."""
        if self._backend == "server":
            return self.collection
        now = time.monotonic()
        if self._served_cache is not None and not refresh \
                and now - self._served_read_at < self.pointer_ttl:
            return self._served_cache
        self._served_cache = self._lite_pointer()
        self._served_read_at = now
        return self._served_cache

    def _alias_target(self) -> str | None:
        """Physical collection behind the alias (server), None if there is no such alias."""
        # Scan our physical collections' aliases instead of describe_alias, whose "not found"
        # pymilvus logs as an ERROR with a traceback on every call.
        for name in self._physical_names():
            info = self._call(lambda c, n=name: c.list_aliases(collection_name=n,
                                                               timeout=self.timeout))
            if self.collection in info.get("aliases", []):
                return name
        return None

    def _lite_pointer(self) -> str | None:
        pointer = self.collection + _POINTER
        if pointer not in self._names():
            return None
        rows = self._call(lambda c: c.query(pointer, filter="id >= 0", output_fields=["target"],
                                            timeout=self.timeout))
        if not rows:
            return None
        return max(rows, key=lambda r: r["id"])["target"]

    def _lite_point_to(self, physical: str) -> None:
        pointer = self.collection + _POINTER
        if pointer not in self._names():
            schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("id", DataType.INT64, is_primary=True)
            schema.add_field("target", DataType.VARCHAR, max_length=256)
            # Milvus requires a vector field in every collection; this one is never searched.
            schema.add_field("unused", DataType.FLOAT_VECTOR, dim=2)
            idx = MilvusClient.prepare_index_params()
            idx.add_index("unused", index_type="FLAT", metric_type="L2")
            self._call(lambda c: c.create_collection(pointer, schema=schema, index_params=idx,
                                                     timeout=self.timeout))
        gen = self._generation(physical)
        row = {"id": gen, "target": physical, "unused": [0.0, 0.0]}
        self._call(lambda c: c.insert(pointer, [row], timeout=self.timeout))
        self._served_cache = physical
        self._served_read_at = time.monotonic()
        # Older pointer rows are history now; the highest generation already wins.
        self._call(lambda c: c.delete(pointer, filter=f"id < {gen}", timeout=self.timeout))

    # ------------------------------------------------------------------ public API
    def replace_items(self, ids: np.ndarray, vectors: np.ndarray,
                      index_type: str | None = None) -> int:
        """Load all items into a fresh collection, then serve it. Returns the count loaded."""
        ids, vectors = self._check_items(ids, vectors)
        index = (index_type or DEFAULT_INDEX[self._backend]).upper()
        if index not in INDEX_TYPES[self._backend]:
            raise ValueError(f"index_type {index!r} not supported by the {self._backend} backend; "
                             f"use one of {INDEX_TYPES[self._backend]}")
        with self._replace_lock:
            served_physical = self._served_physical()
            # Leftovers of a replace that failed or was killed: never served, safe to drop.
            for name in self._physical_names():
                if name != served_physical:
                    self._drop_collection(name)
            gen = max(time.time_ns() // 1000,
                      self._generation(served_physical) + 1 if served_physical else 0)
            physical = f"{self.collection}{_PHYSICAL}{gen}"
            try:
                self._build(physical, ids, vectors, index)
                self._switch(physical)
            except BaseException:
                # Includes KeyboardInterrupt: the new collection is unpointed, drop it.
                try:
                    self._drop_collection(physical)
                except Exception:  # the next replace drops it instead
                    pass
                raise
            if served_physical and served_physical != physical:
                self._drop_collection(served_physical)
        return int(ids.shape[0])

    def search(self, vectors: np.ndarray, top_k: int) -> tuple[np.ndarray, np.ndarray]:
        """Inner-product top_k for every row in one request: ids int64 and scores float32
        [nq, top_k], padded with -1 / -inf where fewer hits exist."""
        queries = self._check_queries(vectors)
        if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) \
                or not 1 <= top_k <= _MAX_TOP_K:
            raise ValueError(f"top_k must be an int in [1, {_MAX_TOP_K}], got {top_k!r}")
        top_k = int(top_k)
        params = dict(self.search_params)
        params["ef"] = max(params.get("ef", 0), top_k)  # HNSW refuses ef < top_k
        topks, flat_ids, flat_scores = self._search_served(queries, top_k, params)
        nq = queries.shape[0]
        if flat_ids.size == 0:
            raise CollectionMissing(f"collection {self.collection!r} is empty")
        if flat_ids.size == nq * top_k and (topks == top_k).all():
            return (flat_ids.reshape(nq, top_k),
                    flat_scores.reshape(nq, top_k))
        out_ids = np.full((nq, top_k), -1, dtype=np.int64)
        out_scores = np.full((nq, top_k), -np.inf, dtype=np.float32)
        # Row i holds topks[i] hits, consecutive in the flat arrays (row-major = mask order).
        mask = np.arange(top_k)[None, :] < np.minimum(topks, top_k)[:, None]
        keep = np.concatenate([np.arange(int(t)) < top_k for t in topks]) \
            if (topks > top_k).any() else slice(None)
        out_ids[mask] = flat_ids[keep]
        out_scores[mask] = flat_scores[keep]
        return out_ids, out_scores

    def count(self) -> int:
        """Number of items served; 0 when the collection is missing or empty."""
        name = self._served()
        if name is None:
            return 0
        try:
            rows = self._call(lambda c: c.query(name, filter="", output_fields=["count(*)"],
                                                timeout=self.timeout))
        except MilvusException as exc:
            if _is_not_found(exc):
                self._served_cache = None
                return 0
            if _is_not_loaded(exc):
                self._call(lambda c: c.load_collection(name, timeout=self.timeout))
                return self.count()
            raise
        return int(rows[0]["count(*)"]) if rows else 0

    def drop(self) -> None:
        """Drop the served collection (alias and physical) and any leftovers; no error if missing."""
        with self._replace_lock:
            if self._backend == "server":
                if self._alias_target():
                    self._call(lambda c: c.drop_alias(self.collection, timeout=self.timeout))
            else:
                self._served_cache = None
                self._drop_collection(self.collection + _POINTER)
            for name in self._physical_names():
                self._drop_collection(name)
            # A plain collection of that name (made before this module, or by hand).
            self._drop_collection(self.collection)

    def ping(self) -> bool:
        """True if Milvus answers within the timeout."""
        try:
            self._names()  # cheapest call both backends implement (Lite lacks GetVersion)
            return True
        except (MilvusUnavailable, MilvusException):
            return False

    def is_loaded(self) -> bool:
        """True if the served collection exists and is loaded for search."""
        name = self._served(refresh=True)
        if name is None:
            return False
        try:
            state = self._call(lambda c: c.get_load_state(name, timeout=self.timeout))
        except MilvusException:
            return False
        return "loaded" == str(state.get("state", "")).rsplit(".", 1)[-1].lower() \
            or getattr(state.get("state"), "name", "") == "Loaded"

    def close(self) -> None:
        """Release the connection (a later call reconnects)."""
        self._reset()

    # ------------------------------------------------------------------ internals
    def _served_physical(self) -> str | None:
        """The physical collection currently served (None if nothing is)."""
        if self._backend == "server":
            target = self._alias_target()
            if target:
                return target
            return self.collection if self.collection in self._names() else None
        return self._served(refresh=True)

    def _search_served(self, queries: np.ndarray, top_k: int, params: dict[str, int]
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(hits per query, ids, scores) of one search of the served collection, flat."""
        def run(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            q = self._fit_queries(name, queries)
            return self._call(lambda c: self._raw_search(c, name, q, top_k, params))

        name = self._served()
        if name is None:
            raise CollectionMissing(f"collection {self.collection!r} does not exist")
        try:
            return run(name)
        except MilvusException as exc:
            if _is_not_loaded(exc):  # e.g. a Lite file reopened after a restart
                self._call(lambda c: c.load_collection(name, timeout=self.timeout))
                return run(name)
            if not _is_not_found(exc):
                if name in self._vector_dims and self._vector_dims.pop(name) != \
                        self._vector_dim(name):
                    # The alias now points at a collection of the other layout (e.g. one
                    # built by an older version of this module): retry once with its width.
                    return run(name)
                raise
            if self._backend == "server":  # the alias is resolved by Milvus: nothing to refresh
                raise CollectionMissing(f"collection {self.collection!r} does not exist") from exc
        # The cached Lite target was replaced by another ItemStore on the same file.
        name = self._served(refresh=True)
        if name is None:
            raise CollectionMissing(f"collection {self.collection!r} does not exist")
        try:
            return run(name)
        except MilvusException as exc:
            if _is_not_found(exc):
                raise CollectionMissing(f"collection {self.collection!r} does not exist") from exc
            raise

    def _vector_dim(self, name: str) -> int:
        """Width of the vector field of ``name`` (cached: one describe per served name)."""
        dim = self._vector_dims.get(name)
        if dim is None:
            info = self._call(lambda c: c.describe_collection(name, timeout=self.timeout))
            dims = [int(f.get("params", {}).get("dim", 0)) for f in info.get("fields", [])
                    if f.get("name") == "embedding"]
            dim = dims[0] if dims else self.dim
            if len(self._vector_dims) > 64:  # names of long-gone collections
                self._vector_dims.clear()
            self._vector_dims[name] = dim
        return dim

    def _fit_queries(self, name: str, queries: np.ndarray) -> np.ndarray:
        """Queries as the served collection stores vectors: dim, or dim + 1 (a zero
        appended: the MIPS-to-angular transform of _augment, which leaves every inner
        product unchanged)."""
        if self._vector_dim(name) == self.dim + 1:
            out = np.zeros((queries.shape[0], self.dim + 1), dtype=np.float32)
            out[:, :self.dim] = queries
            return out
        return queries

    def _public_search(self, client: MilvusClient, name: str, queries: np.ndarray, top_k: int,
                       search_params: dict[str, Any], started: float | None = None
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """pymilvus's MilvusClient.search, within what is left of the timeout."""
        timeout = self.timeout - (time.monotonic() - started if started is not None else 0.0)
        if timeout <= 0.05:
            raise MilvusException(message=f"search of {name} timed out after {self.timeout}s")
        hits = client.search(name, data=queries, limit=top_k, anns_field="embedding",
                             search_params=search_params, output_fields=[], timeout=timeout)
        topks = np.array([len(row) for row in hits], dtype=np.int64)
        ids = np.array([h["id"] for row in hits for h in row], dtype=np.int64)
        scores = np.array([h["distance"] for row in hits for h in row], dtype=np.float32)
        return topks, ids, scores

    def _raw_search(self, client: MilvusClient, name: str, queries: np.ndarray, top_k: int,
                    params: Mapping[str, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One Search request; the answer read from its protobuf into numpy arrays (no
        per-hit Python objects). Same request as MilvusClient.search builds."""
        search_params = {"metric_type": "IP", "params": dict(params)}
        if not _FAST_SEARCH or not self.fast_search:
            return self._public_search(client, name, queries, top_k, search_params)
        conn = client._get_connection()
        context = client._generate_call_context()
        kwargs: dict[str, Any] = {}
        use_default = _ts_utils.construct_guarantee_ts(name, kwargs, conn.server_address,
                                                       context.get_db_name())
        request = _Prepare.search_requests_with_expr(
            collection_name=name, anns_field="embedding", param=search_params, limit=top_k,
            data=queries, ids=None, expr="", partition_names=None, output_fields=[],
            round_decimal=-1, use_default_consistency=use_default, expr_params={}, **kwargs)
        started = time.monotonic()
        try:
            response = conn._stub.Search(request, timeout=self.timeout,
                                         metadata=_api_level_md(context))
            _check_status(response.status)
        except MilvusException as exc:
            if _is_not_found(exc) or _is_not_loaded(exc):
                raise
            # Anything else (a server restarting, a proxy timeout, a bad parameter): let
            # pymilvus's own search handle it - its retries within the timeout, its
            # connection recovery and its error messages - exactly as before this fast path.
            return self._public_search(client, name, queries, top_k, search_params, started)
        except _grpc.RpcError:
            return self._public_search(client, name, queries, top_k, search_params, started)
        res = response.results
        topks = np.array(res.topks, dtype=np.int64)
        ids = np.array(res.ids.int_id.data, dtype=np.int64)
        scores = np.array(res.scores, dtype=np.float32)
        return topks, ids, scores

    def _build(self, physical: str, ids: np.ndarray, vectors: np.ndarray, index: str) -> None:
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=self.dim + 1)
        self._call(lambda c: c.create_collection(physical, schema=schema, timeout=self.timeout))
        vectors = _augment(vectors)
        per_batch = max(1, self.batch_bytes // (vectors.shape[1] * 4 + 16))
        for start in range(0, ids.shape[0], per_batch):
            self._insert_batch(physical, ids[start:start + per_batch],
                               vectors[start:start + per_batch])
        # Flush seals the segments so the index covers every row before we load.
        self._call(lambda c: c.flush(physical, timeout=max(self.timeout, 120.0)))
        idx = MilvusClient.prepare_index_params()
        params = dict(self.build_params.get(index, {}))
        if "nlist" in params:
            # k-means wants >= 39 rows per list; a small catalogue gets fewer lists.
            params["nlist"] = max(1, min(int(params["nlist"]), ids.shape[0] // 39))
        idx.add_index("embedding", index_type=index, metric_type="IP", params=params)
        # Building an index over ~370k rows takes longer than one request's timeout.
        slow = max(self.timeout, 600.0)
        self._call(lambda c: c.create_index(physical, idx, timeout=slow))
        self._call(lambda c: c.load_collection(physical, timeout=slow))

    def _insert_batch(self, physical: str, ids: np.ndarray, vectors: np.ndarray) -> None:
        rows = [{"id": int(i), "embedding": v} for i, v in zip(ids.tolist(), vectors)]
        self._call(lambda c: c.insert(physical, rows, timeout=max(self.timeout, 60.0)))

    def _switch(self, physical: str) -> None:
        if self._backend == "lite":
            self._lite_point_to(physical)
            return
        if self._alias_target():
            self._call(lambda c: c.alter_alias(physical, self.collection, timeout=self.timeout))
            return
        if self.collection in self._names():
            # A plain collection already holds the name (made before this module): it must go
            # before the alias can take the name; searches fail for that moment only.
            self._drop_collection(self.collection)
        self._call(lambda c: c.create_alias(physical, self.collection, timeout=self.timeout))

    def _drop_collection(self, name: str) -> None:
        if name in self._names():
            self._call(lambda c: c.drop_collection(name, timeout=self.timeout))

    def _check_items(self, ids: np.ndarray, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ids = np.asarray(ids)
        vectors = np.asarray(vectors)
        if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"ids must be a 1-D integer array, got shape {ids.shape} {ids.dtype}")
        if ids.size == 0:
            raise ValueError("no items to load: ids is empty")
        if vectors.ndim != 2 or vectors.shape != (ids.shape[0], self.dim):
            raise ValueError(f"vectors must have shape ({ids.shape[0]}, {self.dim}) to match ids, "
                             f"got {vectors.shape}")
        if vectors.dtype != np.float32:
            raise ValueError(f"vectors must be float32, got {vectors.dtype}")
        if ids.min() < 0 or (ids.dtype == np.uint64 and ids.max() > np.iinfo(np.int64).max):
            raise ValueError("ids must be >= 0 and fit in int64")
        if np.unique(ids).size != ids.size:
            raise ValueError("ids must be unique")
        if not np.isfinite(vectors).all():
            raise ValueError("vectors contain NaN or infinity")
        return ids.astype(np.int64, copy=False), np.ascontiguousarray(vectors)

    def _check_queries(self, vectors: np.ndarray) -> np.ndarray:
        q = np.asarray(vectors)
        if q.ndim != 2 or q.shape[1] != self.dim or q.shape[0] == 0:
            raise ValueError(f"query vectors must have shape (nq >= 1, {self.dim}), got {q.shape}")
        if not np.issubdtype(q.dtype, np.floating):
            raise ValueError(f"query vectors must be floating point, got {q.dtype}")
        q = q.astype(np.float32, copy=False)
        if not np.isfinite(q).all():
            raise ValueError("query vectors contain NaN or infinity")
        return q
