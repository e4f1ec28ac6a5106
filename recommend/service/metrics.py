"""Prometheus metrics at GET /metrics: HTTP requests and latency by route and status, recall
batches and the queue, Milvus search latency and errors, the served model and its item count.

With PROMETHEUS_MULTIPROC_DIR set (an empty directory, before the workers start), every
uvicorn worker writes its figures there and /metrics reports the sum over all of them
(prometheus_client's multiprocess mode); unset, it reports this process only.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.asgi import HttpMiddleware

_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

REQUESTS = Counter("recall_http_requests_total", "HTTP requests answered",
                   ["route", "method", "status"])
LATENCY = Histogram("recall_http_request_seconds", "Time to answer an HTTP request",
                    ["route", "method", "status"], buckets=_SECONDS)
BATCH_QUERIES = Histogram("recall_batch_requests", "Recall requests answered in one pass",
                          buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
BATCH_USERS = Histogram("recall_batch_users", "Users answered in one pass",
                        buckets=(1, 4, 16, 64, 128, 256, 512, 1024))
PASS_SECONDS = Histogram("recall_batch_seconds", "Time of one pass (model and search)",
                         buckets=_SECONDS)
QUEUE_WAIT = Histogram("recall_queue_wait_seconds", "Time a recall request waited for its pass",
                       buckets=_SECONDS)
QUEUE_USERS = Gauge("recall_queue_users", "Users waiting for a recall pass",
                    multiprocess_mode="livesum")
SEARCH_SECONDS = Histogram("recall_milvus_search_seconds", "Milvus search calls", buckets=_SECONDS)
SEARCH_ERRORS = Counter("recall_milvus_search_errors_total", "Milvus search calls that failed",
                        ["error"])
MODEL = Gauge("recall_model_info", "The served model (value 1)", ["epoch", "run", "items_sha256"],
              multiprocess_mode="max")
ITEMS = Gauge("recall_items", "Items in the served collection (at the last scrape)",
              multiprocess_mode="max")


def record_pass(tickets: Sequence[Any], seconds: float) -> None:
    """MicroBatcher's on_pass hook: one pass's size, time and each request's queue wait."""
    BATCH_QUERIES.observe(len(tickets))
    BATCH_USERS.observe(sum(t.weight for t in tickets))
    PASS_SECONDS.observe(seconds)
    for t in tickets:
        QUEUE_WAIT.observe(t.started_at - t.queued_at)


def timed_search(search: Any) -> Any:
    """``search`` with its latency and failures counted."""
    def wrapped(vectors: Any, k: int, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return search(vectors, k, **kwargs)
        except Exception as exc:
            SEARCH_ERRORS.labels(type(exc).__name__).inc()
            raise
        finally:
            SEARCH_SECONDS.observe(time.perf_counter() - t0)
    return wrapped


def describe_model(identity: dict[str, Any]) -> None:
    MODEL.labels(str(identity.get("epoch")), str(identity.get("run_id")),
                 str(identity.get("items_sha256"))[:12]).set(1)


class HttpMetrics(HttpMiddleware):
    """Counts every answer by route template (unknown paths as "other", to bound the labels)."""

    def __init__(self, app: ASGIApp, routes: set[str]) -> None:
        super().__init__(app)
        self.routes = routes

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        t0 = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope["path"] if scope["path"] in self.routes else "other"
            labels = (route, scope["method"], str(status))
            REQUESTS.labels(*labels).inc()
            LATENCY.labels(*labels).observe(time.perf_counter() - t0)


# A scrape counts the items at most this often, and waits at most ITEMS_WAIT for Milvus: a hung
# Milvus must not make every scrape take MILVUS_TIMEOUT (the gauge keeps its last value).
ITEMS_EVERY, ITEMS_WAIT = 10.0, 1.0


async def metrics_endpoint(request: Request) -> Response:
    engine = getattr(request.app.state, "engine", None)
    if engine is not None:
        QUEUE_USERS.set(engine.queued_users)
        if not hasattr(request.app.state, "items_count"):  # per app: its loop, its engine
            request.app.state.items_count = {"at": -float("inf"), "pending": None}
        await _refresh_items(engine, request.app.state.items_count)
    registry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def process_ended() -> None:
    """With several workers: this worker's live gauges leave the sum the others answer."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(os.getpid())


async def _refresh_items(engine: Any, _items: dict[str, Any]) -> None:
    """Set ITEMS from one count at a time, started at most every ITEMS_EVERY seconds."""
    pending = _items["pending"]
    if pending is None and time.monotonic() - _items["at"] >= ITEMS_EVERY:
        _items["at"] = time.monotonic()
        pending = _items["pending"] = asyncio.get_running_loop().run_in_executor(
            None, engine.count)
    if pending is None:
        return
    try:
        ITEMS.set(await asyncio.wait_for(asyncio.shield(pending), ITEMS_WAIT))
    except asyncio.TimeoutError:
        return  # still counting: the next scrape takes its answer
    except Exception:  # noqa: BLE001 - Milvus down must not hide the other figures
        pass
    _items["pending"] = None


def route_paths(app: Any) -> set[str]:
    """Every path the app serves (routers included), the allowed values of the route label."""
    return {path for path, _ in app.openapi()["paths"].items()} | {"/metrics"}
