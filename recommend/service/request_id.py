"""A request id on every request, so a 500 seen by a client can be found in the log."""

from __future__ import annotations

import random
import re

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
        rid = given if _SAFE.match(given) else new_request_id()
        scope.setdefault("state", {})["request_id"] = rid

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != HEADER.encode()]
                message["headers"] = headers + [(HEADER.encode(), rid.encode())]
            await send(message)

        await self.app(scope, receive, send_with_id)


def request_id_of(request: Request) -> str:
    """The id set by RequestIdMiddleware (a fresh one if the middleware did not run)."""
    return getattr(request.state, "request_id", None) or new_request_id()


def new_request_id() -> str:
    """32 random hex digits. Not uuid4: its os.urandom call was ~6% of the event loop's time
    under load, and an id to find a log line needs no cryptographic randomness (``random``
    reseeds in a forked worker)."""
    return f"{random.getrandbits(128):032x}"
