"""The one shape our pure-ASGI middlewares share: act on HTTP requests, pass the rest through."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send


class HttpMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware: it costs a task per request and buffers errors).

    Subclasses implement ``handle`` for HTTP requests; lifespan and websocket scopes go
    straight to the app.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.handle(scope, receive, send)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError
