"""pymilvus, imported safely, and one connection per store with its failures classified.

pymilvus reads MILVUS_URI when it is first imported and refuses to import at all unless it
is http(s)://. Ours may name a Milvus Lite file, so it is hidden for the import only and put
back: callers keep reading their own settings.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from itemstore.errors import MilvusUnavailable, is_not_found, is_not_loaded, is_unavailable


@contextmanager
def _lite_uri_hidden() -> Iterator[None]:
    value = os.environ.get("MILVUS_URI")
    hide = value is not None and not value.startswith(("http://", "https://"))
    if hide:
        del os.environ["MILVUS_URI"]
    try:
        yield
    finally:
        if hide:
            os.environ["MILVUS_URI"] = value  # type: ignore[assignment]


with _lite_uri_hidden():
    from pymilvus import DataType, MilvusClient, MilvusException

__all__ = ["Connection", "DataType", "MilvusClient", "MilvusException", "backend_of"]

T = TypeVar("T")
log = logging.getLogger("itemstore")


def lite_server_key(uri: str) -> str:
    """The key pymilvus files the Milvus Lite server of the file ``uri`` under: its real path."""
    return str(Path(uri).absolute().resolve())


def replace_dead_lite_child(uri: str, key: str | None = None) -> bool:
    """If the Milvus Lite server that pymilvus started for the file ``uri`` has died, forget it
    (which reaps it) so that the next client starts a new one on the same file, the data being
    in the file; True if it had died. pymilvus keeps the dead one's socket for ever otherwise.
    ``key``: lite_server_key(uri), when the caller keeps it (resolving costs ~5% of a pass)."""
    try:
        from milvus_lite.server_manager import server_manager_instance as manager
    except ImportError:  # pragma: no cover - Lite is in requirements.txt
        return False
    path = key or lite_server_key(uri)
    proc = getattr(manager._servers.get(path), "_p", None)
    if proc is None or proc.poll() is None:
        return False
    log.warning("the Milvus Lite server for %s exited (code %s); starting another", uri,
                proc.returncode)
    manager.release_server(path)
    return True


def backend_of(uri: str) -> str:
    """"lite" for a path ending in .db, "server" for http(s)://host:port."""
    if uri.endswith(".db"):
        return "lite"
    if uri.startswith(("http://", "https://", "tcp://", "grpc://")):
        return "server"
    raise ValueError(f"uri {uri!r}: expected a path ending in .db (Milvus Lite) "
                     "or http://host:port (server)")


class Connection:
    """A MilvusClient opened on first use and redialled after a connection failure."""

    def __init__(self, uri: str, token: str, timeout: float) -> None:
        self.uri, self.token, self.timeout = uri, token, timeout
        self.backend = backend_of(uri)
        self._lite_key = lite_server_key(uri) if self.backend == "lite" else None
        self._client: MilvusClient | None = None
        self._lock = threading.Lock()

    def client(self) -> MilvusClient:
        with self._lock:
            # Checked even without a client: a call that failed before the death was visible
            # has dropped it already, and a new client would dial the dead child's socket.
            if self.backend == "lite" and replace_dead_lite_child(self.uri, self._lite_key) \
                    and self._client is not None:
                self._close(self._client)
                self._client = None
            if self._client is None:
                try:
                    # dedicated: our own channel, so closing it on failure cannot break
                    # another client in the process that happens to use the same address.
                    self._client = MilvusClient(uri=self.uri, token=self.token,
                                                timeout=self.timeout, dedicated=True)
                except Exception as exc:  # pymilvus raises several types for a dead address
                    raise MilvusUnavailable(f"cannot connect to Milvus at {self.uri}: {exc}") from exc
            return self._client

    def reset(self, failed: MilvusClient | None = None) -> None:
        """Forget the connection so the next call dials again (the server may be back).

        With ``failed``: only if that is still the current client, so a thread whose call
        failed on an old connection never closes the new one another thread just opened.
        """
        with self._lock:
            if failed is not None and self._client is not failed:
                return
            client, self._client = self._client, None
        if client is not None:
            self._close(client)

    @staticmethod
    def _close(client: MilvusClient) -> None:
        try:
            client.close()
        except Exception:  # already broken; nothing more to release
            pass

    def call(self, fn: Callable[[MilvusClient], T]) -> T:
        """Run one client call, turning connection failures into MilvusUnavailable."""
        client = self.client()
        t0 = time.monotonic()
        try:
            return fn(client)
        except MilvusException as exc:
            if is_not_found(exc) or is_not_loaded(exc) or not is_unavailable(exc):
                raise
            self.reset(client)
            raise self._unavailable(exc, t0) from exc
        except Exception as exc:
            # An unrecognised failure of a server we can no longer reach is still an outage.
            if not (is_unavailable(exc) or not self.server_reachable()):
                raise
            self.reset(client)
            raise self._unavailable(exc, t0) from exc

    def _unavailable(self, exc: BaseException, t0: float) -> MilvusUnavailable:
        return MilvusUnavailable(f"Milvus at {self.uri} failed after "
                                 f"{time.monotonic() - t0:.1f}s: {exc}")

    def server_reachable(self) -> bool:
        """Does the server's port accept a TCP connection? (Always True for Milvus Lite.)"""
        if self.backend != "server":
            return True
        address = urlsplit(self.uri if "://" in self.uri else f"tcp://{self.uri}")
        try:
            with socket.create_connection((address.hostname or "127.0.0.1", address.port or 19530),
                                          timeout=min(self.timeout, 1.0)):
                return True
        except OSError:
            return False
