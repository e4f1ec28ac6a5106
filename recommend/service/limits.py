"""Refuse request bodies over MAX_BODY_BYTES before they are parsed.

A declared Content-Length over the limit is refused without reading a byte; a body
without one (chunked) is read only up to the limit. Accepted bodies (at most the
limit, 1 MiB by default) are buffered and handed on unchanged. A declared body of up
to DRAIN_BYTES is read and discarded before the 413: a client such as urllib that
sends the whole body before reading would otherwise meet a reset, not the answer. FastAPI's own
``max_body_size`` is not used because it answers with plain text, while every
error of this service is JSON ``{"detail": ...}``.
"""

from __future__ import annotations

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.asgi import HttpMiddleware


# Beyond this a declared body is refused unread (reading 10 GB to be polite is no defence).
DRAIN_BYTES = 64 * 1024 * 1024


def too_large_message(limit: int) -> str:
    return f"request body is larger than the limit of {limit} bytes (MAX_BODY_BYTES)"


class BodySizeLimit(HttpMiddleware):
    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        super().__init__(app)
        self.limit = max_body_bytes

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            if int(declared) <= DRAIN_BYTES:
                await _discard_body(receive)
            await self._refuse(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._refuse(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # later calls wait for the disconnect, as usual

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = JSONResponse({"detail": too_large_message(self.limit)}, status_code=413,
                                headers={"Connection": "close"})
        await response(scope, receive, send)


async def _discard_body(receive: Receive) -> None:
    """Read the request body to its end (the protocol's BODY_TIMEOUT bounds how long)."""
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return
