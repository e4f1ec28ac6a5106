"""Turning every failure into a JSON answer with a status that says whose fault it was.

Client mistakes are 4xx with a message naming the field (``hist_item[1][0]: must
be an integer, got string``); Milvus being down is 503; a state the client can
fix (nothing inserted yet, an insert already running) is 409; the service itself
being overloaded (its queue full, or a request waited past QUEUE_WAIT_SECONDS) is a
503 that says so, not Milvus; anything else is a logged 500 carrying the request id,
never a traceback.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Message, Receive, Scope, Send

from itemstore import BuildConflict, CollectionMissing, MilvusUnavailable, ModelMismatch
from service.asgi import HttpMiddleware
from service.domain import BadQuery, InsertRunning, ServiceOverloaded
from service.request_id import request_id_of

log = logging.getLogger("recall.service")

# A 10,000-item history of strings would otherwise produce a 10,000-line answer.
MAX_REPORTED_ERRORS = 20

_JSON_TYPES = {
    bool: "boolean",
    int: "integer",
    float: "number",
    str: "string",
    type(None): "null",
    list: "array",
    dict: "object",
    bytes: "a non-JSON body (send Content-Type: application/json)",
}

_EXPECTED = {
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "list_type": "must be an array",
    "dict_type": "must be a JSON object",
    "model_type": "must be a JSON object",
    "model_attributes_type": "must be a JSON object",
}


def where(loc: tuple[Any, ...]) -> str:
    """('body', 'hist_item', 1, 0) -> 'hist_item[1][0]'; the body itself is 'body'."""
    parts = list(loc[1:]) if loc and loc[0] == "body" else list(loc)
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "body"


def describe(error: dict[str, Any]) -> str:
    """One pydantic/FastAPI error as a short sentence about what is wrong."""
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    if kind in _EXPECTED:
        got = _JSON_TYPES.get(type(value), type(value).__name__)
        return f"{_EXPECTED[kind]}, got {got}"
    if kind == "greater_than_equal":
        return f"must be >= {ctx['ge']}, got {value}"
    if kind == "less_than_equal":
        return f"must be <= {ctx['le']}, got {value}"
    if kind == "too_short":
        return f"must have at least {ctx['min_length']} item(s), got {ctx['actual_length']}"
    if kind == "too_long":
        # pydantic reports the length it saw before stopping, which may be less than the real one.
        return f"must have at most {ctx['max_length']} items"
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "is not a known field"
    if kind == "json_invalid":
        return f"invalid JSON at position {error['loc'][-1]}: {ctx.get('error', 'decode error')}"
    return error.get("msg", kind)


def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = list(exc.errors())
    loc_of = [("body",) if e["type"] == "json_invalid" else tuple(e["loc"]) for e in errors]
    items = [
        {"loc": where(loc), "msg": describe(e), "type": e["type"]}
        for loc, e in zip(loc_of, errors[:MAX_REPORTED_ERRORS])
    ]
    detail = "; ".join(f"{i['loc']}: {i['msg']}" for i in items)
    if len(errors) > MAX_REPORTED_ERRORS:
        detail += f"; and {len(errors) - MAX_REPORTED_ERRORS} more"
    return JSONResponse({"detail": detail, "errors": items}, status_code=422)


def _bad_query(request: Request, exc: BadQuery) -> JSONResponse:
    error = {"loc": exc.loc, "msg": str(exc), "type": "bad_query"}
    return JSONResponse({"detail": f"{exc.loc}: {exc}", "errors": [error]}, status_code=422)


def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    detail = exc.detail
    status = exc.status_code
    if status == 400 and exc.__cause__ is not None:
        # FastAPI answers 400 when json.loads fails with something other than a decode
        # error (e.g. a number longer than Python's 4,300-digit limit): still a bad body.
        status = 422
        detail = f"body: could not be read as JSON: {exc.__cause__}"
    return JSONResponse({"detail": detail}, status_code=status, headers=exc.headers)


def _milvus_unavailable(request: Request, exc: MilvusUnavailable) -> JSONResponse:
    log.warning("Milvus unavailable during %s %s: %s", request.method, request.url.path, exc)
    return JSONResponse(
        {"detail": f"Milvus is unavailable, try again shortly: {exc}"},
        status_code=503,
        headers={"Retry-After": "5"},
    )


def _overloaded(request: Request, exc: ServiceOverloaded) -> JSONResponse:
    log.warning("overloaded during %s %s: %s", request.method, request.url.path, exc)
    return JSONResponse(
        {"detail": f"the recall service is overloaded, try again shortly: {exc}"},
        status_code=503,
        headers={"Retry-After": str(exc.retry_after)},
    )


def _collection_missing(request: Request, exc: CollectionMissing) -> JSONResponse:
    return JSONResponse(
        {"detail": "collection is empty: call /rec/insert_data"}, status_code=409
    )


def _conflict(request: Request, exc: Exception) -> JSONResponse:
    """A state the client can fix or wait out: an insert under way, another model's items."""
    return JSONResponse({"detail": str(exc)}, status_code=409)


def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    rid = request_id_of(request)
    log.error("unhandled error, request_id=%s, %s %s", rid, request.method, request.url.path,
              exc_info=exc)
    return JSONResponse(
        {"detail": "internal error; the request id is in the server log", "request_id": rid},
        status_code=500,
        headers={"X-Request-ID": rid},
    )


class UnexpectedErrors(HttpMiddleware):
    """The last resort for a bug: a logged 500 JSON answer, and the error stops here.

    Registered as a handler for ``Exception``, Starlette's ServerErrorMiddleware would send
    the same answer and then re-raise, so uvicorn would also close the client's connection
    (seen as resets under load). Sits inside RequestIdMiddleware, so the answer carries the id.
    """

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            if started:  # part of an answer is out: nothing valid can follow it
                raise
            await _unexpected(Request(scope), exc)(scope, receive, send)


def install(app: FastAPI) -> None:
    """Register every handler above on ``app``."""
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(MilvusUnavailable, _milvus_unavailable)
    app.add_exception_handler(ServiceOverloaded, _overloaded)
    app.add_exception_handler(BadQuery, _bad_query)
    app.add_exception_handler(CollectionMissing, _collection_missing)
    for conflict in (InsertRunning, BuildConflict, ModelMismatch):
        app.add_exception_handler(conflict, _conflict)
    app.add_middleware(UnexpectedErrors)  # added first: the innermost of our middlewares
