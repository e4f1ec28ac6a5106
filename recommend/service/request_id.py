"""A request id on every request, so a 500 seen by a client can be found in the log."""

from __future__ import annotations

import re
import uuid

from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send

from service.asgi import HttpMiddleware

HEADER = "x-request-id"
# A caller's id is reused only if it is short and plain: it ends up in log lines.
_SAFE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class RequestIdMiddleware(HttpMiddleware):
    """Reuse a safe X-Request-ID from the caller or make one; echo it on the response."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        given = dict(scope["headers"]).get(HEADER.encode(), b"").decode("latin-1")
        rid = given if _SAFE.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != HEADER.encode()]
                message["headers"] = headers + [(HEADER.encode(), rid.encode())]
            await send(message)

        await self.app(scope, receive, send_with_id)


def request_id_of(request: Request) -> str:
    """The id set by RequestIdMiddleware (a fresh one if the middleware did not run)."""
    return getattr(request.state, "request_id", None) or uuid.uuid4().hex
