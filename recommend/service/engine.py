"""The service's work, free of HTTP: load the catalogue, recall, count, drop, readiness.

Written for concurrent callers: recall requests are queued and answered together,
one model pass and one Milvus search per batch (service.batcher); the model runs
one batch at a time (paddle's eager mode is not documented as thread-safe), but up to
PASSES_IN_FLIGHT passes of a lane overlap: while one waits for Milvus, the next runs the
model and the one before merges; one writer at a time changes the collection.

Two lanes, each a batcher with its own worker and queue: heavy queries (users x search depth
over HEAVY_COST, such as 256 users x 1000 clicks with top_k 1000, a pass of ~1 s) have one to
themselves, so an ordinary recall never waits for such a pass to end; it only shares the model
(its forward pass: histories are cut to the model's maxlen, so ~as long as any 256-user pass)
and Milvus with it. Milvus Lite answers one search at a time, so the heavy lane searches in
calls of at most HEAVY_HITS_PER_CALL hits (16 vectors x 2,000): an ordinary search waits for one
of those (measured <= 40 ms), not for a whole heavy search (2 s beside a 1,024 x 2,000 one); and
decoding a small answer never holds the GIL, the event loop's, for long (~50 ms for 2 M hits).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from config import MILVUS_MAX_NQ, Settings, SettingsError
from itemstore import CollectionMissing, ItemStore, MilvusUnavailable, ModelMismatch
from mind.retrieval import RecallQuery, Recalled, recall_many
from mind.user_tower import UserTower
from service.batcher import MicroBatcher, Ticket, release_turn
from service.catalogue import Catalogue
from service.domain import InsertRunning, ServiceOverloaded

log = logging.getLogger("recall.service")


@dataclass(frozen=True)
class InsertResult:
    count: int
    seconds: float


# Queries costing more than this (users x search depth) go to the heavy lane: ~256 users x 256.
HEAVY_COST = 64 * 1024
# A search taking this share of QUEUE_WAIT_SECONDS is Milvus being slow (a pass takes ~5-100 ms):
# a queue wait behind such searches, even several short of the whole wait (a server catching up
# after a stall), is Milvus's doing, not overload.
SLOW_SEARCH_SHARE = 0.25
# Hits (query vectors x depth) per Milvus search call of the heavy lane.
HEAVY_HITS_PER_CALL = 32 * 1024


def search_depth(query: RecallQuery) -> int:
    """Hits per interest vector the query needs: top_k, plus its history when left out
    (an upper bound of recall_many's figure, cheap enough to take on the event loop)."""
    extra = max(map(len, query.histories), default=0) if query.exclude_history else 0
    return query.top_k + extra


def query_cost(query: RecallQuery) -> int:
    """What a query adds to a pass: users x search depth (hits per interest vector)."""
    return len(query.histories) * search_depth(query)


def chunked_search(search: Callable, max_hits: int) -> Callable:
    """``search`` that splits a request of more than ``max_hits`` hits into several calls
    (each vector's hits are its own: the answer is the same)."""
    def chunked(vectors: np.ndarray, k: int):
        rows = max(1, max_hits // k)
        if len(vectors) <= rows:
            return search(vectors, k)
        parts = [search(vectors[lo:lo + rows], k) for lo in range(0, len(vectors), rows)]
        return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    return chunked


class _SerialTower:
    """A UserTower whose forward pass is taken by one thread at a time."""

    def __init__(self, tower: UserTower, lock: threading.Lock):
        self._tower, self._lock = tower, lock
        self.item_count = tower.item_count

    def interests(self, histories: Sequence[Sequence[int]]) -> np.ndarray:
        with self._lock:
            vectors = self._tower.interests(histories)
        release_turn()  # the model is free: the lane's next pass may start while this one searches
        return vectors

    def known_items(self, history: Sequence[int]) -> np.ndarray:
        return self._tower.known_items(history)

    def popular_items(self, n: int, allowed: np.ndarray | None = None) -> np.ndarray:
        return self._tower.popular_items(n, allowed)


class RecallEngine:
    """One model and one Milvus collection, shared by all requests."""

    def __init__(self, tower: UserTower, store: ItemStore, max_batch_users: int = 256,
                 max_queue_users: int | None = None, queue_wait: float = 2.0,
                 on_pass: Callable[[Sequence[Ticket], float], None] | None = None,
                 passes_in_flight: int = 1, pace_passes: bool = False, diversity: float = 0.0,
                 category_column: str = ""):
        self.tower = tower
        self.catalogue = Catalogue(getattr(tower, "catalogue", None), tower.item_count)
        # The controllable merge's lambda when a request names none, and its category column
        # (the model config's runner.merge_lambda and merge_category).
        self.diversity, self.category_column = diversity, category_column
        if diversity:
            self.catalogue.categories(category_column)  # a catalogue without any fails the start
        # The store connects on first use and redials after a failure, so the service
        # starts while Milvus is down and picks it up once it answers.
        self.store = store
        self._model_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._serial_tower = _SerialTower(tower, self._model_lock)
        self.search = self._timed_search(store.search)  # open() wraps it again for metrics
        self.inserting = False
        self._count_pool = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="count")
        # A recall waits at most queue_wait (QUEUE_WAIT_SECONDS) for a pass to take it, then
        # gets a 503 saying the service is overloaded; once taken, however many Milvus calls
        # the pass makes (reconnect, then search, each bounded by the store's timeout), at
        # most recall_deadline (MILVUS_TIMEOUT), then a 503 saying Milvus is slow.
        self.recall_deadline = store.timeout
        self.queue_wait = queue_wait
        self._milvus_failed_at = -float("inf")  # when a pass last failed for Milvus
        # worker thread -> (its lane, since when its search runs); lane -> when a search
        # outlasting a share of a turn ended.
        self._searching_since: dict[int, tuple[str, float]] = {}
        self._slow_search_ended: dict[str, float] = {}
        # Concurrent recall requests share one model pass and one search, up to
        # max_batch_users users (MAX_BATCH_USERS keeps that within Milvus's nq limit), and
        # only with requests of a similar search depth (top_k + history to leave out); heavy
        # ones in a lane of their own. Each lane queues at most max_queue_users users.
        self._recall_batcher, self._heavy_batcher = (MicroBatcher(
            functools.partial(self._answer_recalls, max_hits=max_hits),
            max_batch=max_batch_users,
            size_of=lambda q: len(q.histories),
            depth_of=search_depth,
            shared_errors=(MilvusUnavailable, CollectionMissing, ModelMismatch),
            name=name,
            max_queued=max_queue_users,
            max_wait=queue_wait,
            on_pass=on_pass,
            workers=passes_in_flight,
            pace=pace_passes,
        ) for name, max_hits in (("recall-batcher", None),
                                 ("recall-batcher-heavy", HEAVY_HITS_PER_CALL)))

    @classmethod
    def open(cls, settings: Settings,
             on_pass: Callable[[Sequence[Ticket], float], None] | None = None) -> RecallEngine:
        """The served model (MODEL_CONFIG_PATH, EPOCH_NUM) and its Milvus collection.

        Raises if the model is missing, corrupt or of another VECTOR_DIMENSION.
        """
        tower = UserTower.load(settings.MODEL_CONFIG_PATH, settings.EPOCH_NUM)
        runner = tower.config.runner
        if settings.TOWER_RUNTIME == "inference":
            # Only the forward pass moves to Paddle Inference: items, popularity and identity
            # stay the checkpoint's, so collections built by either runtime serve both.
            from mind.inference_tower import served_by_inference

            tower = served_by_inference(tower)
            log.info("user tower on Paddle Inference: %s", tower.runtime.export_dir)
        if settings.MAX_BATCH_USERS * tower.num_interests > MILVUS_MAX_NQ:
            # A full pass searches every user's K interest vectors in one request.
            raise SettingsError(
                f"MAX_BATCH_USERS={settings.MAX_BATCH_USERS} x {tower.num_interests} interests "
                f"of the model exceeds Milvus's {MILVUS_MAX_NQ} query vectors per search"
            )
        if tower.dim != settings.VECTOR_DIMENSION:
            raise SettingsError(
                f"VECTOR_DIMENSION={settings.VECTOR_DIMENSION} but the model at "
                f"{settings.MODEL_CONFIG_PATH} has {tower.dim}-d embeddings"
            )
        store = ItemStore(
            settings.milvus_uri,
            settings.DEFAULT_COLLECTION,
            dim=settings.VECTOR_DIMENSION,
            token=settings.MILVUS_TOKEN,
            timeout=settings.MILVUS_TIMEOUT,
            # Recorded with every collection this service builds, and checked before every
            # answer: user vectors of one model are never paired with another's items.
            identity=tower.identity(),
        )
        return cls(tower, store, max_batch_users=settings.MAX_BATCH_USERS,
                   max_queue_users=settings.MAX_QUEUE_USERS,
                   queue_wait=settings.QUEUE_WAIT_SECONDS, on_pass=on_pass,
                   passes_in_flight=settings.passes_in_flight, pace_passes=settings.PACE_PASSES,
                   diversity=runner.merge_lambda, category_column=runner.merge_category)

    def insert_data(self) -> InsertResult:
        """Load every item embedding of the served model; the store swaps atomically."""
        if not self._write_lock.acquire(blocking=False):
            raise InsertRunning("an insert_data is already running; try again when it finishes")
        try:
            self.inserting = True
            start = time.perf_counter()
            with self._model_lock:
                ids, vectors = self.tower.item_embeddings()
            count = self.store.replace_items(ids, vectors,
                                             fields=self.catalogue.scalar_fields())
            seconds = time.perf_counter() - start
            log.info("insert_data: %d items in %.2f s", count, seconds)
            return InsertResult(count=int(count), seconds=round(seconds, 3))
        finally:
            self.inserting = False
            self._write_lock.release()

    async def recall_async(
        self, histories: Sequence[Sequence[int]], top_k: int, exclude_history: bool = True,
        where: str = "", allowed: np.ndarray | None = None, details: bool = False,
        diversity: float | None = None,
    ) -> list[list[int]] | list[Recalled]:
        """Up to top_k items per user, best first (mind.retrieval.recall_many), awaiting the
        batcher without holding a thread. where/allowed: a filter and the items it admits
        (Catalogue.where); details: answer a ``Recalled`` (ids, scores, interests) per user;
        diversity: the controllable merge's lambda (None: the engine's default)."""
        diversity = self.diversity if diversity is None else diversity
        if diversity:
            self.catalogue.categories(self.category_column)  # BadQuery before queueing
        lane, ticket = self._submit(RecallQuery(histories, top_k, exclude_history, where,
                                                allowed, details, diversity))
        waiter = asyncio.wrap_future(ticket)
        # Given up on (a 503 at the deadline), its answer may still come: read it, unlogged.
        waiter.add_done_callback(lambda f: f.cancelled() or f.exception())
        while True:
            done, _ = await asyncio.wait({waiter}, timeout=self._keep_waiting(lane, ticket))
            if done:
                try:
                    return waiter.result()
                except ServiceOverloaded as exc:
                    raise self._blame(lane, exc) from None

    def _submit(self, query: RecallQuery) -> tuple[MicroBatcher, Ticket]:
        """Queue ``query`` in its lane."""
        lane = self._heavy_batcher if query_cost(query) > HEAVY_COST else self._recall_batcher
        return lane, lane.submit(query)

    def _keep_waiting(self, lane: MicroBatcher, ticket: Ticket) -> float:
        """Seconds to wait for ``ticket`` before checking again; raises once it is too late.

        Queued past queue_wait: the service is overloaded. Queued for MILVUS_TIMEOUT behind a
        pass running for longer, or taken and unanswered after it: Milvus is slow.
        """
        if ticket.done():
            return 0
        now = time.monotonic()
        started = ticket.started_at
        if started is None:
            stuck = lane.pass_started
            waited = now - ticket.queued_at
            if (stuck is not None and min(now - stuck, waited) >= self.recall_deadline
                    and ticket.cancel()):
                raise self._late()
            if waited >= self.queue_wait and ticket.cancel():
                # Waiting on a slow pass, or right after Milvus failed, is Milvus's doing,
                # not a long queue: say so, with the Milvus message.
                raise self._blame(lane, ServiceOverloaded(
                    f"waited {waited:.1f} s for a turn (QUEUE_WAIT_SECONDS={self.queue_wait:g}); "
                    f"{lane.queued_users} users queued"))
            # Taken just now, or still queued: check again at the earlier of both limits.
            return max(0.01, min(self.queue_wait - waited, self.recall_deadline))
        left = started + self.recall_deadline - now
        if left <= 0:
            raise self._late()
        return left

    @property
    def queued_users(self) -> int:
        return self._recall_batcher.queued_users + self._heavy_batcher.queued_users

    def _late(self) -> MilvusUnavailable:
        return MilvusUnavailable(
            f"no answer within {self.recall_deadline:g} s (MILVUS_TIMEOUT): "
            f"Milvus at {self.store.uri} is slow or unreachable"
        )

    def _timed_search(self, search: Callable) -> Callable:
        """``search`` that records since when each lane's Milvus search is under way."""
        def timed(vectors, k, **kwargs):
            lane, me = threading.current_thread().name, threading.get_ident()
            start = time.monotonic()
            self._searching_since[me] = (lane, start)
            try:
                return search(vectors, k, **kwargs)
            finally:
                self._searching_since.pop(me, None)
                if time.monotonic() - start >= self.queue_wait * SLOW_SEARCH_SHARE:
                    self._slow_search_ended[lane] = time.monotonic()
        return timed

    def _blame(self, lane: MicroBatcher, exc: ServiceOverloaded) -> Exception:
        """A queue wait that a failed or slow Milvus caused is Milvus's 503, not overload:
        Milvus failed a pass lately, or the lane's search outlasted a turn (under way, or it just
        ended: the batcher expires its queue only after such a pass, e.g. the first after a restart)."""
        now = time.monotonic()
        since = min((t for name, t in list(self._searching_since.values()) if name == lane.name),
                    default=None)
        slow = self.queue_wait * SLOW_SEARCH_SHARE
        if (now - self._milvus_failed_at < 2 * self.recall_deadline
                or now - self._slow_search_ended.get(lane.name, -float("inf")) < self.queue_wait
                or (since is not None and now - since >= slow)):
            return self._late()
        return exc

    def _answer_recalls(self, queries: Sequence[RecallQuery], max_hits: int | None = None
                        ) -> list:
        unknown = [0] * len(queries)  # per query: history ids the tower does not know
        answers: list = [None] * len(queries)
        # One search carries one filter: the queries of a pass are answered per filter.
        groups: dict[str, list[int]] = {}
        for i, q in enumerate(queries):
            groups.setdefault(q.where, []).append(i)
        try:
            for expr, members in groups.items():
                search = functools.partial(self.search, filter=expr) if expr else self.search
                if max_hits is not None:
                    search = chunked_search(search, max_hits)
                got: list[int] = []
                categories = (self.catalogue.categories(self.category_column)
                              if any(queries[i].diversity for i in members) else None)
                part = recall_many(self._serial_tower, search, [queries[i] for i in members],
                                   unknown=got, categories=categories)
                for i, answer, n in zip(members, part, got, strict=True):
                    answers[i] = answer
                    unknown[i] = n
        except MilvusUnavailable:
            self._milvus_failed_at = time.monotonic()
            raise
        for query, n in zip(queries, unknown):
            if n:  # ignored ids are a client's stale or foreign catalogue: worth seeing
                log.info("recall: %d of the request's %d history ids are not in the catalogue "
                         "(ids 1..%d) and were ignored", n, sum(map(len, query.histories)),
                         self.tower.item_count - 1)
        return answers

    def count(self) -> int:
        """The items served, within MILVUS_TIMEOUT in all: a count makes several Milvus calls
        (the served name, then the count), each bounded by it (18.4 s seen in an outage)."""
        future = self._count_pool.submit(self.store.count)
        try:
            return int(future.result(timeout=self.recall_deadline))
        except concurrent.futures.TimeoutError:
            raise self._late() from None

    def drop(self) -> None:
        if not self._write_lock.acquire(blocking=False):
            raise InsertRunning("an insert_data is running; drop after it finishes")
        try:
            self.store.drop()
            log.info("collection dropped")
        finally:
            self._write_lock.release()

    def readiness(self) -> dict[str, str]:
        """Each check "ok" or why not: model, Milvus reachable, collection loaded and
        holding this model's items."""
        checks = {"model": f"ok (epoch {getattr(self.tower, 'epoch', '?')})"}
        try:
            if not self.store.ping():
                raise MilvusUnavailable(f"no answer from {self.store.uri}")
            checks["milvus"] = f"ok ({self.store.backend})"
            checks["collection"] = self.collection_state()
        except MilvusUnavailable as exc:
            checks["milvus"] = f"unreachable: {exc}"
            checks["collection"] = "unknown: Milvus is unreachable"
        if self.inserting:
            checks["insert_data"] = "running"
        return checks

    def collection_state(self) -> str:
        """"ok", or what is wrong with the served collection and how to fix it."""
        try:
            self.store.check_model()
        except CollectionMissing:
            return "collection is empty: call /rec/insert_data"
        except ModelMismatch as exc:
            return str(exc)
        if self.store.count() > 0 and self.store.is_loaded():
            return "ok"
        return "collection is empty: call /rec/insert_data"

    def close(self) -> None:
        self._recall_batcher.close()
        self._heavy_batcher.close()
        self._count_pool.shutdown(wait=False, cancel_futures=True)
        self.store.close()
