"""Start-up: open the engine, check the collection against the model, and say in one line
why a start failed when the reason is known (another process on the Lite file, no trained
model, a bad setting) instead of the traceback uvicorn would print."""

from __future__ import annotations

import errno
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from config import Settings, SettingsError
from itemstore import BuildConflict, LiteFileBusy, MilvusUnavailable
from itemstore.generations import HEARTBEAT_SECONDS, LEASE_SECONDS
from mind.checkpoint import CheckpointError
from mind.config import ConfigError
from service import metrics
from service.engine import RecallEngine

log = logging.getLogger("recall.service")

class PortBusy(OSError):
    """The port the server is to listen on is taken (found before anything else is opened)."""


# Errors whose message names the cause and the fix.
KNOWN_START_ERRORS = (LiteFileBusy, SettingsError, ConfigError, CheckpointError, FileNotFoundError,
                      PortBusy)


def started_by_uvicorn() -> bool:
    """A server process (the uvicorn command, or `python main.py`), not a test's TestClient."""
    first = Path(sys.argv[0]).name if sys.argv else ""
    return first in ("uvicorn", "main.py") or sys.argv[0].endswith("uvicorn/__main__.py")


def check_port_free(host: str, port: int | None) -> None:
    """PortBusy if ``host:port`` is taken. uvicorn binds only after the app has started, so a
    second service on the port would otherwise fail on what it opens first (the Lite file,
    held by the first service) and name the wrong cause."""
    if port is None or multiprocessing.parent_process() is not None:
        return  # a --workers child: the supervisor has bound the socket already
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise PortBusy(f"port {port} on {host} is in use: another service runs there; stop "
                           f"it or choose another port (uvicorn main:app --port {port + 1})"
                           ) from None


def end_the_supervisor() -> None:
    """In a `uvicorn --workers N` child that cannot start: stop the other workers and the
    supervisor, which would otherwise stop them and exit 0 (a supervisor of its own, such as
    systemd, then sees success). Killed, it exits 137."""
    parent = multiprocessing.parent_process()
    if parent is None or parent.pid is None:
        return
    for child in _children(parent.pid):
        if child != os.getpid():
            try:
                os.kill(child, signal.SIGTERM)
            except ProcessLookupError:
                pass
    log.error("start-up failed in a worker: ending the uvicorn supervisor (pid %d) with it",
              parent.pid)
    os.kill(parent.pid, signal.SIGKILL)


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def keep_python_signal_handlers() -> None:
    """Paddle installs C-level handlers (SIGTERM among them) when imported; in a uvicorn
    worker that import comes after uvicorn's own handlers, so SIGTERM printed a C++ trace and
    killed the worker without a graceful shutdown. Drop Paddle's, put Python's back."""
    if threading.current_thread() is not threading.main_thread():
        return
    import paddle

    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    paddle.disable_signal_handler()
    for sig, handler in handlers.items():
        if handler is not None:
            signal.signal(sig, handler)


def open_engine(settings: Settings) -> RecallEngine:
    """The engine, its collection checked against its model (and loaded if AUTO_INSERT)."""
    engine = RecallEngine.open(settings, on_pass=metrics.record_pass)
    engine.search = metrics.timed_search(engine.search)
    metrics.describe_model(engine.tower.identity())
    log.info("model %s epoch %s loaded", settings.MODEL_CONFIG_PATH, engine.tower.epoch)
    if not engine.store.ping():  # not fatal: requests answer 503 until Milvus is back
        log.warning("Milvus at %s is not reachable yet; answering 503 until it is",
                    settings.milvus_uri)
        return engine
    try:
        state = engine.collection_state()
    except MilvusUnavailable as exc:
        log.warning("cannot check the collection yet: %s", exc)
        return engine
    if state != "ok" and settings.AUTO_INSERT:
        auto_insert(engine, state)
    elif state != "ok":
        log.warning("not ready: %s (or start with AUTO_INSERT=1)", state)
    return engine


def auto_insert(engine: RecallEngine, state: str) -> None:
    """Load this model's items at start-up. While another replica's build is under way, wait
    for it (it may be loading this very model) rather than fail: a start-up that fails is
    restarted, and would find the same build, a crash loop. Still busy after a lease's
    lifetime: start not ready (/readyz says why)."""
    deadline = time.monotonic() + LEASE_SECONDS + 2 * HEARTBEAT_SECONDS
    while True:
        log.info("AUTO_INSERT: %s; loading this model's items", state)
        try:
            result = engine.insert_data()
        except BuildConflict as exc:
            if time.monotonic() > deadline:
                log.warning("AUTO_INSERT gave up, not ready: %s", exc)
                return
            log.info("AUTO_INSERT waits: %s", exc)
            time.sleep(HEARTBEAT_SECONDS)
            state = engine.collection_state()
            if state == "ok":
                log.info("AUTO_INSERT: another replica loaded this model's items")
                return
            continue
        log.info("AUTO_INSERT: %d items loaded in %.1f s", result.count, result.seconds)
        return


class OneLineStartErrors:
    """Replaces the traceback of a failed start-up with the error's own message, for the
    errors in KNOWN_START_ERRORS (the lifespan leaves it in app.state.start_error)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def short_send(message: Message) -> None:
            known = getattr(scope["app"].state, "start_error", None)
            if message["type"] == "lifespan.startup.failed" and known:
                message = {**message, "message": known}
            await send(message)

        await self.app(scope, receive, short_send)
