"""The service's own failures, free of HTTP (service/errors.py maps them to statuses)."""

from __future__ import annotations


class InsertRunning(RuntimeError):
    """Another /rec/insert_data (or a drop) is changing the collection right now."""


class ServiceOverloaded(RuntimeError):
    """The recall queue is full or a request waited too long in it: retry later (Milvus is fine)."""

    retry_after = 1  # seconds: a queue drains in a few passes
