"""Micro-batching: concurrent recall requests share one model pass and one Milvus search.

The model and Milvus cost nearly the same for 64 users as for one, so answering
requests one by one wastes most of the machine under load. One worker thread
takes every request waiting in the queue, answers them together, and starts
again. It never waits for a batch to fill: a lone request is answered at once
(no added latency when the service is idle), and under load each pass picks up
what arrived while the previous one ran, so batches grow with the load.

Under overload it stays fair and says so: the queue is bounded (``max_queued``
users; beyond it ``submit`` raises QueueFull), with a quarter of it kept for small
queries (at most a quarter of a pass), so a few clients sending maximum-size queries
cannot fill it; a query is not answered after waiting ``max_wait`` seconds
(QueueTimeout); a pass only mixes queries of a similar search depth; a pass takes
every compatible query that fits, passing over those that do not; and a pass led by a
query that fills it alone is followed by one led by the oldest smaller query, so small
requests never queue behind a stream of maximum-size ones.

Passes may overlap (``workers`` > 1): a pass holds the turn to form the next batch only
until its exclusive stage ends (the model's forward: the answer calls ``release_turn``), so
while one pass waits for Milvus the next one forms its batch and runs the model; at most
``workers`` passes are in flight. With one worker a pass ends before the next begins.

Paced (``pace``), the next pass also waits, holding the turn, until the pass in flight is about
to end its search (the recent passes' times say when): it then takes every query that arrived
meanwhile, and its model runs while that search ends. Unpaced, it starts as soon as the turn is
free and takes the few queries that came during one forward: with 16 one-user clients, passes of
~5 users, each paying for a whole Milvus search (which costs about as much for 16 users).
One pass at a time, paced, a pass waits (at most GATHER_SHARE of a pass) for as many users to
queue after the last pass ended as it held: the clients it answered, back with their next
requests. Unpaced, 16 one-user clients split into two cohorts of 8 that alternate, each cohort
a pass of its own; paced, one pass holds all 16 (measured: 8.0 users a pass unpaced, 15.8 paced).
"""

from __future__ import annotations

import collections
import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

from service.domain import ServiceOverloaded

log = logging.getLogger("recall.batcher")

# The running pass's way to hand the turn on (release_turn), per worker thread.
_pass = threading.local()

Q = TypeVar("Q")
R = TypeVar("R")

# Depths up to this batch together whatever their ratio (their searches are cheap anyway).
SHALLOW_DEPTH = 64
# Weight of the latest pass in the running means of a pass's two stages (pacing).
STAGE_SMOOTHING = 0.2
# One pass at a time, paced: the longest a pass waits for the users the last pass answered to
# come back, as a share of a pass's mean time (each user it gathers saves them a pass of their own).
GATHER_SHARE = 0.6


class BatcherClosed(RuntimeError):
    """The service is shutting down; no new work is taken."""


class QueueFull(ServiceOverloaded):
    """Taking this query would put more than ``max_queued`` users in the queue."""


class QueueTimeout(ServiceOverloaded):
    """The query waited longer than ``max_wait`` seconds before a pass could take it."""


def release_turn() -> None:
    """Called by an answer once its exclusive stage is done: the next pass may form its batch.
    A no-op outside a pass, or when already called."""
    release = getattr(_pass, "release", None)
    if release is not None:
        _pass.release = None
        release()


def depths_compatible(a: int, b: int) -> bool:
    """Whether two search depths may share a pass: within a factor of 2 (or both shallow).

    The pass searches every vector to the deepest query's depth, so a shallow query next
    to a deep one would pay for the deep one's search and merge.
    """
    return max(a, b) <= 2 * max(min(a, b), SHALLOW_DEPTH)


class Ticket(Future):  # type: ignore[type-arg]
    """A query's future, with when it was queued and when a pass took it (monotonic)."""

    def __init__(self, query: object, weight: int, depth: int) -> None:
        super().__init__()
        self.query, self.weight, self.depth = query, weight, depth
        self.queued_at = time.monotonic()
        self.started_at: float | None = None


class MicroBatcher(Generic[Q, R]):
    """Runs ``answer_batch(queries) -> answers`` on one thread, on as many queries as are waiting.

    ``size_of(query)`` is a query's weight (users); one pass takes queries while their
    total stays within ``max_batch`` (a single query larger than that runs alone).
    ``depth_of(query)`` is its search depth; a pass only takes queries whose depth is
    compatible with the depth of the query leading it (``depths_compatible``).
    When a pass fails with one of ``shared_errors`` (e.g. Milvus is down), every caller
    in it gets that error at once: retrying them one by one would only multiply the
    wait. Any other failure of a pass of several queries retries each query alone, so
    one query that breaks something cannot fail the others.
    """

    def __init__(
        self,
        answer_batch: Callable[[Sequence[Q]], Sequence[R]],
        max_batch: int,
        size_of: Callable[[Q], int] = lambda q: 1,
        shared_errors: tuple[type[BaseException], ...] = (),
        name: str = "micro-batcher",
        depth_of: Callable[[Q], int] = lambda q: 0,
        max_queued: int | None = None,
        max_wait: float | None = None,
        on_pass: Callable[[Sequence[Ticket], float], None] | None = None,
        workers: int = 1,
        pace: bool = False,
    ):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self._answer_batch = answer_batch
        self._max_batch = max_batch
        self._size_of, self._depth_of = size_of, depth_of
        self._shared_errors = shared_errors
        self.max_queued, self.max_wait = max_queued, max_wait
        self._on_pass = on_pass  # (tickets, seconds) after each pass, for metrics
        self.name = name  # also its worker thread's
        self._pending: collections.deque[Ticket] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._after_full_pass = False
        self.queued_users = 0
        # Queries up to small_weight users always find room: big ones may fill the queue
        # only up to max_queued - reserved.
        self.small_weight = max(1, max_batch // 4)
        self.reserved = 0 if max_queued is None else max_queued // 4
        self._running: dict[int, float] = {}  # worker thread -> monotonic start of its pass
        # Pacing: worker thread -> when its pass handed the turn on, and running means of the
        # two stages (seconds): to the hand-over (batch and model), and after it (search, merge).
        self.pace = pace and workers > 1
        # One pass at a time, paced: when the last pass ended, its users, a pass's mean seconds.
        self.gather = pace and workers == 1
        self._last_end, self._last_users, self._pass_s = 0.0, 0, None
        self._released: dict[int, float] = {}
        self._exclusive_s: float | None = None
        self._rest_s: float | None = None
        self.passes = 0  # batches answered, and the queries in them: queries/passes = mean batch
        self.queries = 0
        # Who forms the next batch: held from forming one until the pass's exclusive stage ends.
        self._turn = threading.Semaphore(1)
        self._threads = [threading.Thread(target=self._run, name=name, daemon=True)
                         for _ in range(workers)]
        for thread in self._threads:
            thread.start()

    @property
    def pass_started(self) -> float | None:
        """When the oldest pass running now started (monotonic), None when none runs."""
        with self._cond:
            return min(self._running.values(), default=None)

    def submit(self, query: Q) -> Ticket:
        ticket = Ticket(query, self._size_of(query), self._depth_of(query))
        with self._cond:
            if self._closed:
                raise BatcherClosed("the service is shutting down")
            self._forget_finished()
            if self.max_queued is not None and self._pending:
                if self.queued_users + ticket.weight > self.max_queued:
                    raise QueueFull(f"{self.queued_users} users are already waiting "
                                    f"(at most {self.max_queued})")
                big = sum(t.weight for t in self._pending if t.weight > self.small_weight)
                if ticket.weight > self.small_weight and \
                        big + ticket.weight > self.max_queued - self.reserved:
                    raise QueueFull(
                        f"{big} users of large requests are already waiting (at most "
                        f"{self.max_queued - self.reserved}; the rest of the {self.max_queued} "
                        f"is kept for requests of at most {self.small_weight} users)")
            self._pending.append(ticket)
            self.queued_users += ticket.weight
            self._cond.notify()
        return ticket

    def __call__(self, query: Q) -> R:
        """Answer one query (blocking); raises what answering it raised."""
        return self.submit(query).result()

    def close(self, timeout: float = 30.0) -> None:
        """Finish the queries already queued, then stop the worker."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if self.passes:
            log.info("%s: %d queries in %d passes (%.1f per pass)", self.name,
                     self.queries, self.passes, self.queries / self.passes)

    def _expire(self, now: float) -> None:
        """Fail the queries that waited past ``max_wait`` (caller holds the lock)."""
        if self.max_wait is None:
            return
        for t in self._pending:
            waited = now - t.queued_at
            if waited > self.max_wait and t.set_running_or_notify_cancel():
                t.set_exception(QueueTimeout(f"waited {waited:.1f} s in the queue "
                                             f"(at most {self.max_wait:g} s)"))
        self._forget_finished()

    def _forget_finished(self) -> None:
        """Drop queued queries that expired or whose callers gave up (caller holds the lock)."""
        if any(t.done() for t in self._pending):
            self._pending = collections.deque(t for t in self._pending if not t.done())
            self.queued_users = sum(t.weight for t in self._pending)

    def _lead(self) -> Ticket:
        """The oldest query; after a pass one query filled alone, the oldest smaller one."""
        if self._after_full_pass:
            for t in self._pending:
                if t.weight < self._max_batch:
                    return t
        return self._pending[0]

    def _next_batch(self) -> list[Ticket] | None:
        """Block for one query, then take what else is waiting and fits (no waiting)."""
        with self._cond:
            while not self._pending and not self._closed:
                self._cond.wait()
            self._expire(time.monotonic())
            if self.pace and self._pending and self._wait_for_pace():
                self._expire(time.monotonic())
            if self.gather and self._pending and self._wait_to_gather():
                self._expire(time.monotonic())
            if not self._pending:
                return None if self._closed else []
            lead = self._lead()
            batch, size = [lead], lead.weight
            for t in self._pending:
                if t is lead or not depths_compatible(lead.depth, t.depth):
                    continue  # another depth: waits for a pass of its own kind
                if size + t.weight > self._max_batch:
                    continue  # too big for what is left: it leads a later pass (the oldest)
                batch.append(t)
                size += t.weight
            taken = set(map(id, batch))
            self._pending = collections.deque(t for t in self._pending if id(t) not in taken)
            self.queued_users -= size
            self._after_full_pass = lead.weight >= self._max_batch
            return batch

    def _ready_at(self) -> float | None:
        """When the next pass should start its model: as the earliest search in flight is
        expected to end, less one model stage; None when no pass is past its model stage or the
        stages are not measured yet (caller holds the lock)."""
        if not self._released or self._rest_s is None or self._exclusive_s is None:
            return None
        return min(self._released.values()) + self._rest_s - self._exclusive_s

    def _wait_for_pace(self) -> bool:
        """Hold the batch open until ``_ready_at``, a pass ends, the queue fills a pass, or the
        batcher closes; whether it waited at all (caller holds the lock)."""
        waited = False
        while not self._closed:
            ready = self._ready_at()
            left = None if ready is None else ready - time.monotonic()
            if left is None or left <= 0 or self.queued_users >= self._max_batch:
                return waited
            self._cond.wait(left)
            waited = True
        return waited

    def _wait_to_gather(self) -> bool:
        """Hold the batch open until as many users queued since the last pass ended as it held
        (its clients, back with their next requests), the queue fills a pass, GATHER_SHARE of a
        pass's mean time has passed since the last one ended, or the batcher closes; whether it
        waited at all (caller holds the lock). A lone request after an idle spell waits not."""
        if self._pass_s is None:
            return False
        deadline = self._last_end + GATHER_SHARE * self._pass_s
        waited = False
        while not self._closed:
            back = sum(t.weight for t in self._pending if t.queued_at >= self._last_end)
            left = deadline - time.monotonic()
            if left <= 0 or back >= self._last_users or self.queued_users >= self._max_batch:
                return waited
            self._cond.wait(left)
            waited = True
        return waited

    def _hand_on(self, me: int) -> None:
        """The running pass's exclusive stage is over: note when, and free the turn."""
        with self._cond:
            self._released[me] = time.monotonic()
        self._turn.release()

    def _measure(self, me: int, started: float) -> None:
        """Fold the pass that just ended into the stage means, and wake a pacing batch
        (caller holds the lock)."""
        end = time.monotonic()
        released = self._released.pop(me, end)
        mix = lambda mean, x: x if mean is None else mean + STAGE_SMOOTHING * (x - mean)  # noqa: E731
        self._exclusive_s = mix(self._exclusive_s, released - started)
        self._rest_s = mix(self._rest_s, end - released)
        self._pass_s = mix(self._pass_s, end - started)
        self._last_end = end
        self._cond.notify_all()

    def _run(self) -> None:
        me = threading.get_ident()
        while True:
            self._turn.acquire()
            batch = self._next_batch()
            live = [t for t in batch or () if t.set_running_or_notify_cancel()]
            if not live:
                self._turn.release()
                if batch is None:
                    return
                continue
            now = time.monotonic()
            for t in live:
                t.started_at = now
            with self._cond:
                self._running[me] = now
                self.passes += 1
                self.queries += len(live)
            _pass.release = functools.partial(self._hand_on, me)
            try:
                self._answer(live)
            finally:
                release_turn()  # the answer did not, or failed before it could
                with self._cond:
                    del self._running[me]
                    self._last_users = sum(t.weight for t in live)
                    self._measure(me, now)
            if self._on_pass is not None:
                self._on_pass(live, time.monotonic() - now)

    def _answer(self, batch: list[Ticket]) -> None:
        try:
            answers = self._answer_batch([t.query for t in batch])
            if len(answers) != len(batch):
                raise RuntimeError(f"{len(answers)} answers for {len(batch)} queries")
        except BaseException as exc:  # noqa: BLE001 - every caller must hear about it
            if len(batch) == 1 or isinstance(exc, self._shared_errors):
                for t in batch:
                    t.set_exception(exc)
                return
            log.debug("a batch of %d failed (%s); answering each alone", len(batch), exc)
            for t in batch:
                self._answer([t])
            return
        for t, answer in zip(batch, answers):
            t.set_result(answer)
