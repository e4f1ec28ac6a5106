"""Micro-batching: concurrent recall requests share one model pass and one Milvus search.

The model and Milvus cost nearly the same for 64 users as for one, so answering
requests one by one wastes most of the machine under load. One worker thread
takes every request waiting in the queue, answers them together, and starts
again. It never waits for a batch to fill: a lone request is answered at once
(no added latency when the service is idle), and under load each pass picks up
what arrived while the previous one ran, so batches grow with the load.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

log = logging.getLogger("recall.batcher")

Q = TypeVar("Q")
R = TypeVar("R")


class BatcherClosed(RuntimeError):
    """The service is shutting down; no new work is taken."""


class MicroBatcher(Generic[Q, R]):
    """Runs ``answer_batch(queries) -> answers`` on one thread, on as many queries as are waiting.

    ``size_of(query)`` is a query's weight (users); one pass takes queries while their
    total stays within ``max_batch`` (a single query larger than that runs alone).
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
    ):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self._answer_batch = answer_batch
        self._max_batch = max_batch
        self._size_of = size_of
        self._shared_errors = shared_errors
        self._queue: queue.SimpleQueue[tuple[Q, Future[R]] | None] = queue.SimpleQueue()
        self._closed = False
        self._held: tuple[Q, Future[R]] | None = None
        self.passes = 0  # batches answered, and the queries in them: queries/passes = mean batch
        self.queries = 0
        # One worker: a second one measured no faster (Milvus Lite serialises searches),
        # and one thread keeps batches as large as the load allows.
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, query: Q) -> Future[R]:
        if self._closed:
            raise BatcherClosed("the service is shutting down")
        future: Future[R] = Future()
        self._queue.put((query, future))
        return future

    def __call__(self, query: Q) -> R:
        """Answer one query (blocking); raises what answering it raised."""
        return self.submit(query).result()

    def close(self, timeout: float = 30.0) -> None:
        """Finish the queries already taken, then stop the worker."""
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout)
        if self.passes:
            log.info("%s: %d queries in %d passes (%.1f per pass)", self._thread.name,
                     self.queries, self.passes, self.queries / self.passes)

    def _next_batch(self) -> list[tuple[Q, Future[R]]] | None:
        """Block for one query, then take whatever else is already waiting (no waiting)."""
        first = self._held or self._queue.get()
        self._held = None
        if first is None:
            return None
        batch, size = [first], self._size_of(first[0])
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return batch
            if item is None:
                self._queue.put(None)  # stop after this batch
                return batch
            weight = self._size_of(item[0])
            if size + weight > self._max_batch:
                self._held = item  # starts the next pass
                return batch
            batch.append(item)
            size += weight

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            live = [(q, f) for q, f in batch if f.set_running_or_notify_cancel()]
            if live:
                self.passes += 1
                self.queries += len(live)
                self._answer(live)

    def _answer(self, batch: list[tuple[Q, Future[R]]]) -> None:
        try:
            answers = self._answer_batch([q for q, _ in batch])
            if len(answers) != len(batch):
                raise RuntimeError(f"{len(answers)} answers for {len(batch)} queries")
        except BaseException as exc:  # noqa: BLE001 - every caller must hear about it
            if len(batch) == 1 or isinstance(exc, self._shared_errors):
                for _, future in batch:
                    future.set_exception(exc)
                return
            log.debug("a batch of %d failed (%s); answering each alone", len(batch), exc)
            for item in batch:
                self._answer([item])
            return
        for (_, future), answer in zip(batch, answers):
            future.set_result(answer)
