"""The tutorial's four endpoints (plus /rec/drop).

Routes are plain ``def``: FastAPI runs them in its thread pool, so a long
insert_data or a Milvus call never blocks the event loop. /rec/recall is the
exception: it only queues the request for the engine's recall batcher and awaits
the answer, so a waiting request holds no thread. It reads its body itself
(service.bodies: a big one is parsed and validated off the event loop) and writes
its answer with orjson (~1 ms for 256 x 1000 ids, against ~40 ms for json.dumps).
"""

import functools
from types import SimpleNamespace
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from config import Settings
from service import bodies
from service.deps import EngineDep, TokenDep
from service.engine import RecallEngine
from service.schemas import (
    CountResponse,
    ErrorResponse,
    InsertResponse,
    RecallResponse,
    StatusResponse,
    ValidationErrorResponse,
    recall_request_model,
)

_UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorResponse, "description": "Milvus is unreachable, or the service is "
          "overloaded (the message says which; Retry-After says when to retry)"}
}
_AUTH: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "API_TOKEN is set and the bearer token is wrong"}
}
_CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorResponse, "description": "Another insert_data is running"}
}


def build_router(settings: Settings) -> APIRouter:
    """The endpoints, with this service's request limits in their schemas."""
    router = APIRouter(tags=["recall"])
    RecallRequest = recall_request_model(settings)
    # How the body parser process builds the same model (the settings stay here).
    rebuild = functools.partial(recall_request_model, SimpleNamespace(
        MAX_BATCH_USERS=settings.MAX_BATCH_USERS, MAX_HISTORY_LEN=settings.MAX_HISTORY_LEN,
        MAX_TOP_K=settings.MAX_TOP_K))

    @router.post(
        "/rec/insert_data",
        response_model=InsertResponse,
        summary="Load every item embedding of the served model into Milvus",
        description="Re-running replaces the data (never duplicates it); recall keeps "
        "answering from the old data until the new data is complete.",
        dependencies=[TokenDep],
        responses={**_AUTH, **_CONFLICT, **_UNAVAILABLE},
    )
    def insert_data(engine: EngineDep) -> InsertResponse:
        result = engine.insert_data()
        return InsertResponse(count=result.count, seconds=result.seconds)

    @router.post(
        "/rec/recall",
        response_model=RecallResponse,
        summary="Recall items for a batch of click histories (by item ids or item keys)",
        description=(
            "One row per user, best first, at most `top_k` items: ids for rows of ids, keys for "
            'rows of keys, or item objects with score, interest and metadata (`"return": '
            '"items"`). `where` keeps only items whose metadata matches. History items the '
            "model does not know are ignored; a user left with none gets the most popular items. "
            f"Limits: {settings.MAX_BATCH_USERS} users, {settings.MAX_HISTORY_LEN} ids per "
            f"history, top_k <= {settings.MAX_TOP_K}, body <= {settings.MAX_BODY_BYTES} bytes."
        ),
        responses={
            409: {"model": ErrorResponse, "description": "Nothing inserted yet, or the "
                  "collection holds another model's items"},
            413: {"model": ErrorResponse, "description": "Body larger than MAX_BODY_BYTES"},
            422: {"model": ValidationErrorResponse, "description": "What is wrong, and where"},
            **_UNAVAILABLE,
        },
        openapi_extra=bodies.openapi_body(RecallRequest),
    )
    async def recall(request: Request) -> Response:
        # No Depends: solving one was ~10% of the event loop's time per request under load.
        engine: RecallEngine = request.app.state.engine
        body: Any = await bodies.parse_async(RecallRequest, await request.body(),
                                             request.headers.get("content-type"),
                                             factory=rebuild, arrays=("hist_item",))
        catalogue = engine.catalogue
        histories = body.hist_item
        keys = bool(histories) and len(histories[0]) > 0 and isinstance(histories[0][0], str)
        if keys:
            histories = catalogue.ids_of(histories)
        expr, allowed = catalogue.where(body.where)
        items = body.return_ == "items"
        rows = await engine.recall_async(histories, body.top_k, body.exclude_history,
                                         where=expr, allowed=allowed, details=items,
                                         diversity=body.diversity)
        # Plain lists need no pydantic encoding pass.
        return Response(orjson.dumps(catalogue.answer(rows, keys, items)),
                        media_type="application/json")

    @router.post(
        "/rec/count",
        response_model=CountResponse,
        summary="Number of items in the collection (0 when empty or missing)",
        responses=_UNAVAILABLE,
    )
    def count(engine: EngineDep) -> CountResponse:
        return CountResponse(count=engine.count())

    def drop(engine: EngineDep) -> StatusResponse:
        engine.drop()
        return StatusResponse()

    for path in ("/qa/drop", "/rec/drop"):
        router.add_api_route(
            path,
            drop,
            methods=["POST"],
            response_model=StatusResponse,
            summary="Drop the collection and its data",
            dependencies=[TokenDep],
            responses={**_AUTH, **_CONFLICT, **_UNAVAILABLE},
            operation_id=f"drop_{path.strip('/').replace('/', '_')}",
        )
    router.body_models = [RecallRequest]  # type: ignore[attr-defined]  # for bodies.document
    return router
