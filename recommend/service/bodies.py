"""JSON request bodies read and validated by the route itself, big ones off the event loop.

FastAPI parses and validates a body model on the event loop: for a maximum-size recall (256
users x 1000 ids, ~1 MB) that was ~50 ms during which no other request (not even /healthz) moved.
A route that takes the raw body instead calls ``parse``, which answers exactly as FastAPI would
(the same RequestValidationError, or a 400 carrying its cause, for errors.py to word), and
``parse_async`` runs it on ``PARSER``, one thread, for bodies over ``BIG_BODY_BYTES``: one thread
is the only rival the loop meets for the GIL, however many big bodies arrive at once. At most
``MAX_PARSING`` big bodies wait for it or are being read; beyond that a big body is refused at
once, unread, as the service being overloaded (a flood of 20 maximum-size recalls spent ~40 ms
each of the GIL to be told the recall queue was full).
``openapi_body`` and ``document`` put the model in the OpenAPI schema as the route's request
body, as FastAPI does for a body parameter.

The thread still shares the process's GIL, and decoding and validating a maximum-size body are
two C calls that hold it for ~40 ms together, the event loop waiting meanwhile. So a big body
goes first to a parser process (``start_process``, from the app's lifespan), with a GIL of its
own, when the caller says how to rebuild the model there (``factory``) and which fields are
lists of id lists (``arrays``): a valid body comes back as the other fields and one int64 array
per such field, given to the caller as a list of int64 arrays (a copy of 2 MB, not 256,000
Python ints to unpickle), and the model is built without validating again. A body the process
does not take (invalid, or the process not up) goes to the thread, which says what is wrong.

A body is decoded by orjson (4x faster than json.loads here) and validated; a body that fails
either step is decoded again by json.loads and validated again, and that says what is wrong:
orjson refuses some JSON json.loads reads (NaN, a UTF-8 BOM, deep nesting) and reads integers
beyond 64 bits as floats, so only a body both accept as valid is taken from orjson, and what is
accepted and every message are json.loads's, as before.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import email.message
import itertools
import json
import logging
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

import numpy as np
import orjson
from fastapi import FastAPI, HTTPException
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from service.domain import ServiceOverloaded

M = TypeVar("M", bound=BaseModel)
_REF = "#/components/schemas/{model}"

# A 1-user recall is ~100 bytes and a 128-user one ~20 KB: parsed at once. Over this, the thread.
BIG_BODY_BYTES = 64 * 1024
PARSER = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="body-parser")
# Big bodies parsing or waiting to (4 maximum-size recalls fill the recall queue, MAX_QUEUE_USERS).
MAX_PARSING = 4
_PARSING = threading.BoundedSemaphore(MAX_PARSING)  # a TestClient's loop runs in its own thread
log = logging.getLogger("recall.service")
# A parse in the process taking longer than this means it hangs (stopped, swapped out): the body
# goes to the thread and the process is replaced. A maximum-size body takes ~40 ms.
PARSE_TIMEOUT = 2.0
_process: concurrent.futures.ProcessPoolExecutor | None = None
_process_ready: concurrent.futures.Future | None = None
_process_lock = threading.Lock()
_models: dict[bytes, type[BaseModel]] = {}  # in the parser process: models by factory


def is_json(content_type: str | None) -> bool:
    """FastAPI's rule: application/json or application/*+json; no Content-Type is not JSON."""
    if not content_type:
        return False
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json"))


def parse(model: type[M], body: bytes, content_type: str | None) -> M:
    """``body`` validated as ``model``; raises what FastAPI raises for a body parameter."""
    if not body:
        raise RequestValidationError(
            [{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}])
    if not is_json(content_type):
        return _validate(model, body)  # as bytes, which says "send Content-Type: ..."
    try:
        return model.model_validate(orjson.loads(body), from_attributes=True)
    except (orjson.JSONDecodeError, ValidationError):
        pass  # what is wrong is worked out, and said, from json.loads's reading of the body
    try:
        value = json.loads(body)
    except json.JSONDecodeError as exc:
        raise RequestValidationError(
            [{"type": "json_invalid", "loc": ("body", exc.pos), "msg": "JSON decode error",
              "input": {}, "ctx": {"error": exc.msg}}], body=exc.doc) from exc
    except Exception as exc:  # e.g. a 4,300-digit number, 10,000 levels of nesting
        raise HTTPException(status_code=400, detail="There was an error parsing the body") from exc
    return _validate(model, value)


def _validate(model: type[M], value: Any) -> M:
    try:  # from_attributes as FastAPI validates: it names the error for a non-object
        return model.model_validate(value, from_attributes=True)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors, body=value) from None


async def parse_async(model: type[M], body: bytes, content_type: str | None,
                      factory: Callable[[], type[M]] | None = None,
                      arrays: Sequence[str] = ()) -> M:
    """``parse``, off the event loop when the body is big (ServiceOverloaded if the parser is
    busy): in the parser process when ``factory`` (a picklable callable returning ``model``) is
    given and the process is up, else on the parser thread. Fields named in ``arrays`` (lists of
    id lists) may then come back as lists of int64 arrays."""
    if len(body) <= BIG_BODY_BYTES:
        return parse(model, body, content_type)
    if not _PARSING.acquire(blocking=False):
        raise ServiceOverloaded(f"{MAX_PARSING} large request bodies are already being read "
                                f"(at most {MAX_PARSING})")
    try:
        loop = asyncio.get_running_loop()
        pool, ready = _process, _process_ready
        if (factory is not None and pool is not None and ready is not None and ready.done()
                and is_json(content_type)):
            try:
                got = await asyncio.wait_for(
                    loop.run_in_executor(pool, _parse_valid, factory, body, tuple(arrays)),
                    PARSE_TIMEOUT)
            except (BrokenProcessPool, asyncio.TimeoutError) as exc:
                why = "died" if isinstance(exc, BrokenProcessPool) else \
                    f"did not answer within {PARSE_TIMEOUT:g} s"
                replace_process(pool, why)
                got = None
            if got is not None:
                fields, packed = got
                for name, (flat, lengths) in packed.items():
                    fields[name] = np.split(flat, np.cumsum(lengths)[:-1]) if len(lengths) else []
                return model.model_construct(**fields)
        return await loop.run_in_executor(PARSER, parse, model, body, content_type)
    finally:
        _PARSING.release()


def _parse_valid(factory: Callable[[], type[BaseModel]], body: bytes, arrays: tuple[str, ...]
                 ) -> tuple[dict[str, Any], dict[str, tuple[np.ndarray, np.ndarray]]] | None:
    """In the parser process: a valid body's fields, ``arrays`` as (flat int64, lengths);
    None for a body that is not valid (the thread then works out what is wrong)."""
    key = pickle.dumps(factory)
    model = _models.get(key)
    if model is None:
        model = _models[key] = factory()
    try:
        parsed = model.model_validate(orjson.loads(body), from_attributes=True)
    except (orjson.JSONDecodeError, ValidationError):
        return None
    fields = {name: getattr(parsed, name) for name in type(parsed).model_fields
              if name not in arrays}
    packed = {}
    for name in arrays:
        rows = getattr(parsed, name)
        if any(len(r) and isinstance(r[0], str) for r in rows):  # keys: sent back as they are
            fields[name] = rows
            continue
        lengths = np.fromiter(map(len, rows), np.int64, len(rows))
        flat = np.fromiter(itertools.chain.from_iterable(rows), np.int64, int(lengths.sum()))
        packed[name] = (flat, lengths)
    return fields, packed


def _ready() -> bool:
    return True


def _exit_with(parent: int) -> None:
    """In the parser process: exit once ``parent`` is gone (a SIGKILLed service leaves its
    executor no chance to stop it, and the process would wait on its queue for ever)."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def start_process() -> None:
    """Start the parser process (spawned: the service has threads), importing in the background;
    big bodies go to the thread until it is ready. Idempotent."""
    global _process, _process_ready
    with _process_lock:
        if _process is None:
            _process = concurrent.futures.ProcessPoolExecutor(
                max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                initializer=_exit_with, initargs=(os.getpid(),))
            with _main_script_hidden():  # the process starts at this first submit
                _process_ready = _process.submit(_ready)


def replace_process(pool: concurrent.futures.ProcessPoolExecutor, why: str) -> None:
    """Replace ``pool`` once, however many parses found it broken or hung at the same time."""
    with _process_lock:
        if _process is not pool:
            return  # another request replaced it already
    log.warning("the body parser process %s; starting another", why)
    stop_process()
    start_process()


def stop_process() -> None:
    """Stop the parser process (killed first if it does not answer), its pool shut down with
    every resource released (no "leaked semaphore" warnings at exit)."""
    global _process, _process_ready
    with _process_lock:
        pool, _process, _process_ready = _process, None, None
    if pool is None:
        return
    for proc in list(getattr(pool, "_processes", {}).values()):
        if proc.is_alive():
            try:
                os.kill(proc.pid, signal.SIGKILL)  # a stopped or busy parser ends here too
            except ProcessLookupError:
                pass
    pool.shutdown(wait=True, cancel_futures=True)


@contextlib.contextmanager
def _main_script_hidden() -> Iterator[None]:
    """Spawn runs the parent's main script again in the child (as __mp_main__): under
    `python main.py` that was the whole service, paddle included (411 MB instead of ~58 MB).
    The child needs only this module, so the script is hidden from spawn while it starts."""
    main = sys.modules.get("__main__")
    path = None
    if main is not None and getattr(main, "__spec__", None) is None:
        path = main.__dict__.pop("__file__", None)
    try:
        yield
    finally:
        if path is not None:
            main.__file__ = path  # type: ignore[union-attr]


def openapi_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` documenting ``model`` as the required JSON request body (``document``
    adds the schema it refers to)."""
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"content": {"application/json": {"schema": ref}}, "required": True}}


def document(app: FastAPI, models: Sequence[type[BaseModel]]) -> None:
    """Add the schemas of ``models`` to ``app``'s OpenAPI components, where FastAPI puts the
    body models of the routes that take them as parameters."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schemas = generate().setdefault("components", {}).setdefault("schemas", {})
            for model in models:
                schemas[model.__name__] = model.model_json_schema(ref_template=_REF)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
