"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from service.deps import EngineDep
from service.schemas import ReadyResponse, StatusResponse

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=StatusResponse, summary="The process is up")
async def healthz() -> StatusResponse:
    # async: answered on the event loop, with no hop to the thread pool and back (each hop
    # waits for the GIL, which the recall workers hold much of the time under load)
    return StatusResponse()


@router.get(
    "/readyz",
    response_model=ReadyResponse,
    summary="Model loaded, Milvus reachable, collection loaded",
    responses={503: {"model": ReadyResponse, "description": "Not ready; `checks` says why"}},
)
def readyz(engine: EngineDep) -> JSONResponse:
    checks = engine.readiness()
    ready = all(v.startswith("ok") for k, v in checks.items() if k != "insert_data")
    body = ReadyResponse(ready=ready, checks=checks).model_dump()
    return JSONResponse(body, status_code=200 if ready else 503)
