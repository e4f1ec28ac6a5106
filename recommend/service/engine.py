"""The service's work, free of HTTP: load the catalogue, recall, count, drop, readiness.

Blocking calls (paddle, Milvus) run in FastAPI's thread pool, so this class is
written for concurrent callers: the model runs one batch at a time (paddle's
eager mode is not documented as thread-safe), searches run in parallel, and one
writer at a time changes the collection.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from mind.milvus_store import ItemStore, MilvusUnavailable
from mind.retrieval import recall
from mind.user_tower import UserTower
from service.errors import InsertRunning

log = logging.getLogger("recall.service")


@dataclass(frozen=True)
class InsertResult:
    count: int
    seconds: float


class _SerialTower:
    """A UserTower whose forward pass is taken by one thread at a time."""

    def __init__(self, tower: UserTower, lock: threading.Lock):
        self._tower, self._lock = tower, lock
        self.item_count = tower.item_count

    def interests(self, histories: Sequence[Sequence[int]]) -> np.ndarray:
        with self._lock:
            return self._tower.interests(histories)

    def known_items(self, history: Sequence[int]) -> np.ndarray:
        return self._tower.known_items(history)

    def popular_items(self, n: int) -> np.ndarray:
        return self._tower.popular_items(n)


class RecallEngine:
    """One model and one Milvus collection, shared by all requests."""

    def __init__(self, tower: UserTower, open_store: Callable[[], ItemStore]):
        self.tower = tower
        self._open_store = open_store
        self._store: ItemStore | None = None
        self._store_lock = threading.Lock()
        self._model_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._serial_tower = _SerialTower(tower, self._model_lock)
        self.inserting = False

    def store(self) -> ItemStore:
        """The Milvus client, opened on first use so the service starts even when Milvus
        is down and picks it up once it answers. Raises MilvusUnavailable meanwhile."""
        if self._store is None:
            with self._store_lock:
                if self._store is None:
                    self._store = self._open_store()
                    log.info("Milvus connected (%s backend)", self._store.backend)
        return self._store

    def insert_data(self) -> InsertResult:
        """Load every item embedding of the served model; the store swaps atomically."""
        if not self._write_lock.acquire(blocking=False):
            raise InsertRunning("an insert_data is already running; try again when it finishes")
        try:
            self.inserting = True
            start = time.perf_counter()
            store = self.store()
            with self._model_lock:
                ids, vectors = self.tower.item_embeddings()
            count = store.replace_items(ids, vectors)
            seconds = time.perf_counter() - start
            log.info("insert_data: %d items in %.2f s", count, seconds)
            return InsertResult(count=int(count), seconds=round(seconds, 3))
        finally:
            self.inserting = False
            self._write_lock.release()

    def recall(
        self, histories: Sequence[Sequence[int]], top_k: int, exclude_history: bool = True
    ) -> list[list[int]]:
        """Up to top_k item ids per user, best first (see mind.retrieval.recall)."""
        return recall(self._serial_tower, self.store().search, histories, top_k, exclude_history)

    def count(self) -> int:
        return int(self.store().count())

    def drop(self) -> None:
        if not self._write_lock.acquire(blocking=False):
            raise InsertRunning("an insert_data is running; drop after it finishes")
        try:
            self.store().drop()
            log.info("collection dropped")
        finally:
            self._write_lock.release()

    def readiness(self) -> dict[str, str]:
        """Each check "ok" or why not: model, Milvus reachable, collection loaded."""
        checks = {"model": f"ok (epoch {getattr(self.tower, 'epoch', '?')})"}
        try:
            store = self.store()
            if not store.ping():
                raise MilvusUnavailable("Milvus did not answer a ping")
            checks["milvus"] = f"ok ({store.backend})"
            if store.count() > 0 and store.is_loaded():
                checks["collection"] = "ok"
            else:
                checks["collection"] = "collection is empty: call /rec/insert_data"
        except MilvusUnavailable as exc:
            checks["milvus"] = f"unreachable: {exc}"
            checks["collection"] = "unknown: Milvus is unreachable"
        if self.inserting:
            checks["insert_data"] = "running"
        return checks

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
