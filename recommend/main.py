"""The recall service: click histories in, candidate item ids out.

    cd recommend && uvicorn main:app            # http://127.0.0.1:8000/docs
    cd recommend && python main.py              # the same, binding HOST:PORT from the settings

Settings come from the environment (config.py). This module only assembles:
the lifespan opens the model and the Milvus client once; the routes live in
service/routes/.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from config import Settings, get_settings
from service import bodies, errors, metrics, protocol
from service.limits import BodySizeLimit
from service.request_id import RequestIdMiddleware
from service.routes import health, page, rec
from service.security import ExposureWatch, launch_host, launch_port, warn_if_exposed
from service.startup import (
    KNOWN_START_ERRORS,
    OneLineStartErrors,
    check_port_free,
    end_the_supervisor,
    keep_python_signal_handlers,
    open_engine,
    started_by_uvicorn,
)

log = logging.getLogger("recall.service")


# Importing paddle puts a handler of this format on the root logger (paddle.distributed's
# get_logger(name="root")): not the host app's logging, so it must not silence ours.
_PADDLE_ROOT_FORMAT = "[%(asctime)-15s] [%(levelname)8s] %(filename)s:%(lineno)s - %(message)s"


def _configure_logging() -> None:
    """Show the service's INFO lines beside uvicorn's unless the host app set up logging."""
    host = [h for h in logging.getLogger().handlers
            if getattr(h.formatter, "_fmt", None) != _PADDLE_ROOT_FORMAT]
    if not log.handlers and not host:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False  # not once more through paddle's root handler


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    # A missing or corrupt model, or a Lite file another process has open, is an operator
    # error: fail the start-up, in one line when the message says it all.
    try:
        if started_by_uvicorn():
            check_port_free(launch_host(settings), launch_port(settings))
        engine = await run_in_threadpool(open_engine, settings)
    except KNOWN_START_ERRORS as exc:
        app.state.start_error = f"{type(exc).__name__}: {exc}"
        if started_by_uvicorn():
            end_the_supervisor()
        raise
    warn_if_exposed(settings, launch_host(settings))
    app.state.engine = engine
    bodies.start_process()  # parses big bodies with a GIL of its own (service.bodies)
    try:
        yield
    finally:
        bodies.stop_process()
        await run_in_threadpool(engine.close)
        metrics.process_ended()


def create_app(settings: Settings | None = None) -> FastAPI:
    """The FastAPI app for ``settings`` (default: from the environment)."""
    settings = settings or get_settings()
    _configure_logging()
    app = FastAPI(
        title="MIND + Milvus product recall",
        summary="A shopper's click history in, candidate product ids out.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    protocol.install(protocol.Limits(
        max_header_bytes=settings.MAX_HEADER_BYTES, header_timeout=settings.HEADER_TIMEOUT,
        body_timeout=settings.BODY_TIMEOUT, max_connections=settings.MAX_CONNECTIONS))
    errors.install(app)
    app.add_middleware(ExposureWatch, settings=settings)
    app.add_middleware(BodySizeLimit, max_body_bytes=settings.MAX_BODY_BYTES)
    recall_router = rec.build_router(settings)
    app.include_router(recall_router)
    bodies.document(app, recall_router.body_models)
    app.include_router(health.router)
    app.include_router(page.build_router(settings))  # the demo page, GET /demo
    app.add_route("/metrics", metrics.metrics_endpoint, include_in_schema=False)
    app.add_middleware(RequestIdMiddleware)
    app.add_middleware(metrics.HttpMetrics, routes=metrics.route_paths(app))
    app.add_middleware(OneLineStartErrors)
    return app


app = create_app()
keep_python_signal_handlers()

if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host=get_settings().HOST, port=get_settings().PORT)
