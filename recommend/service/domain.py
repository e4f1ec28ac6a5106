"""The service's own failures, free of HTTP (service/errors.py maps them to statuses)."""

from __future__ import annotations


class InsertRunning(RuntimeError):
    """Another /rec/insert_data (or a drop) is changing the collection right now."""


class ServiceOverloaded(RuntimeError):
    """The recall queue is full or a request waited too long in it: retry later (Milvus is fine)."""

    retry_after = 1  # seconds: a queue drains in a few passes


class BadQuery(ValueError):
    """A request the model cannot answer as asked (keys to a model without keys, a filter on a
    field the catalogue lacks): the client's to fix, a 422 naming the field."""

    def __init__(self, message: str, loc: str = "body"):
        super().__init__(message)
        self.loc = loc
