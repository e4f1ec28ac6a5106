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

from config import Settings, SettingsError, get_settings
from mind.milvus_store import ItemStore, MilvusUnavailable
from mind.user_tower import UserTower
from service import errors
from service.engine import RecallEngine
from service.limits import BodySizeLimit
from service.request_id import RequestIdMiddleware
from service.routes import health, rec
from service.security import ExposureWatch, launch_host, warn_if_exposed

log = logging.getLogger("recall.service")


def _configure_logging() -> None:
    """Show the service's INFO lines beside uvicorn's unless the host app set up logging."""
    if not log.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)


def open_engine(settings: Settings) -> RecallEngine:
    """Load the served model and prepare (not yet require) the Milvus connection."""
    tower = UserTower.load(settings.MODEL_CONFIG_PATH, settings.EPOCH_NUM)
    if tower.dim != settings.VECTOR_DIMENSION:
        raise SettingsError(
            f"VECTOR_DIMENSION={settings.VECTOR_DIMENSION} but the model at "
            f"{settings.MODEL_CONFIG_PATH} has {tower.dim}-d embeddings"
        )

    def open_store() -> ItemStore:
        return ItemStore(
            settings.milvus_uri,
            settings.DEFAULT_COLLECTION,
            dim=settings.VECTOR_DIMENSION,
            token=settings.MILVUS_TOKEN,
            timeout=settings.MILVUS_TIMEOUT,
        )

    return RecallEngine(tower, open_store)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    # A missing or corrupt model is an operator error: fail the start-up loudly.
    engine = await run_in_threadpool(open_engine, settings)
    log.info("model %s epoch %s loaded", settings.MODEL_CONFIG_PATH, engine.tower.epoch)
    try:
        await run_in_threadpool(engine.store)
    except MilvusUnavailable as exc:
        # Milvus down is not fatal: requests answer 503 until it comes back.
        log.warning("Milvus at %s is not reachable yet: %s", settings.milvus_uri, exc)
    warn_if_exposed(settings, launch_host(settings))
    app.state.engine = engine
    try:
        yield
    finally:
        await run_in_threadpool(engine.close)


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
    errors.install(app)
    app.add_middleware(ExposureWatch, settings=settings)
    app.add_middleware(BodySizeLimit, max_body_bytes=settings.MAX_BODY_BYTES)
    app.add_middleware(RequestIdMiddleware)
    app.include_router(rec.build_router(settings))
    app.include_router(health.router)
    return app


app = create_app()

if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host=get_settings().HOST, port=get_settings().PORT)
