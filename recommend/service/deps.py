"""Typed dependencies the routes ask for."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials

from config import Settings
from service.engine import RecallEngine
from service.security import bearer, check_token


# Plain lookups: async so FastAPI runs them on the event loop, not via a thread-pool hop.
async def get_engine(request: Request) -> RecallEngine:
    return request.app.state.engine


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def require_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    check_token(request, credentials)


EngineDep = Annotated[RecallEngine, Depends(get_engine)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
TokenDep = Depends(require_token)
