"""What can go wrong with the item store, and how a Milvus error is recognised.

pymilvus does not promise stable error types, so failures are classified by code and text;
an unrecognised failure of a server whose port is closed still counts as an outage
(itemstore.connection).
"""

from __future__ import annotations


class MilvusUnavailable(RuntimeError):
    """Milvus cannot be reached or did not answer within the timeout."""


class CollectionMissing(LookupError):
    """The served collection does not exist or holds no items."""


class ModelMismatch(RuntimeError):
    """The served collection holds the items of another model (or version) than the caller's."""


class BuildConflict(RuntimeError):
    """Another process is building or switching this collection right now."""


class LiteFileBusy(RuntimeError):
    """Another process has the Milvus Lite file open (Milvus Lite serves one process a file)."""


# gRPC status codes / Milvus error codes meaning "the collection is not there".
_NOT_FOUND_CODES = {100, 4}
_NOT_LOADED_CODE = 101

_UNAVAILABLE_MARKERS = (
    "unavailable", "deadline", "timeout", "timed out", "fail connecting",
    "connection refused", "failed to connect", "connect failed", "socket closed",
    "server unavailable", "not ready",
    # another thread's failed call closed the shared connection under this one
    # (pymilvus then also says "should create connection first")
    "closed channel", "channel closed", "should create connection first",
    # the proxy's own deadline passed (e.g. collections still loading after a restart):
    # "proxy TaskCondition context Done", "context deadline exceeded"
    "context done",
)


def _message(exc: BaseException) -> str:
    return str(getattr(exc, "message", exc)).lower()


def is_not_found(exc: BaseException) -> bool:
    msg = _message(exc)
    return getattr(exc, "code", None) in _NOT_FOUND_CODES or "not found" in msg or "not exist" in msg


def is_not_loaded(exc: BaseException) -> bool:
    return getattr(exc, "code", None) == _NOT_LOADED_CODE or "not loaded" in _message(exc)


def is_unavailable(exc: BaseException) -> bool:
    """Connection-level failures (as opposed to a bad request)."""
    text = f"{type(exc).__name__} {exc}".lower()
    return any(m in text for m in _UNAVAILABLE_MARKERS)
