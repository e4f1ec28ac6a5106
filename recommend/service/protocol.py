"""Connection-level limits uvicorn lacks: header size (431), header and body read timeouts
(408, then close), and a bound on open connections (503).

`uvicorn main:app` gives the app no say over the server's protocol (uvicorn picks its protocol
class before it imports the app), so ``install`` wraps the parser callbacks of uvicorn's
httptools protocol, the one it uses when httptools is installed (requirements.txt), in place.
With ``--http h11`` only h11's own head limit applies (``--h11-max-incomplete-event-size``, which
bounds an incomplete head only: README, "Protocol limits").
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("recall.service")

_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large",
            503: b"Service Unavailable"}


@dataclass
class Limits:
    max_header_bytes: int = 16384
    header_timeout: float = 5.0
    body_timeout: float = 10.0
    max_connections: int = 512


LIMITS = Limits()
_open: set[Any] = set()  # guarded connections of this process


# How long a refused client may go on sending before its connection is closed: closing with
# its request unread makes the kernel answer a reset, which can destroy the answer unread.
LINGER_SECONDS = 1.0


def refuse(transport: asyncio.Transport, status: int, detail: str, proto: Any = None) -> None:
    """A JSON error answer written straight to the socket, then close: at once, or (given the
    connection's ``proto``) after the client stops sending or LINGER_SECONDS, what it still
    sends read and dropped, so it reads the answer instead of a reset."""
    body = json.dumps({"detail": detail}).encode()
    transport.write(b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                    b"connection: close\r\n\r\n%s" % (status, _REASONS[status], len(body), body))
    if proto is None or not transport.can_write_eof():
        transport.close()
        return
    proto._guard_refused = True
    transport.write_eof()
    _cancel(proto)
    proto._guard_timer = proto.loop.call_later(LINGER_SECONDS, transport.close)


def _timer(proto: Any, seconds: float, what: str) -> None:
    _cancel(proto)
    proto._guard_timer = proto.loop.call_later(seconds, _timed_out, proto, what, seconds)


def _cancel(proto: Any) -> None:
    timer = getattr(proto, "_guard_timer", None)
    if timer is not None:
        timer.cancel()
        proto._guard_timer = None


def _timed_out(proto: Any, what: str, seconds: float) -> None:
    if proto.transport.is_closing():
        return
    cycle = getattr(proto, "cycle", None)
    if cycle is not None and cycle.response_started:
        proto.transport.close()  # nothing valid can be added to an answer under way
        return
    refuse(proto.transport, 408, f"the request {what} did not arrive within {seconds:g} s", proto)


def install(limits: Limits) -> None:
    """Enforce ``limits`` on every connection uvicorn's httptools protocol accepts from now on."""
    global LIMITS
    LIMITS = limits
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # no httptools: uvicorn runs h11 and its own limits
        return
    if getattr(HttpToolsProtocol, "_guarded", False):
        return
    made, lost, data = (HttpToolsProtocol.connection_made, HttpToolsProtocol.connection_lost,
                        HttpToolsProtocol.data_received)
    begin, headers_done, complete = (HttpToolsProtocol.on_message_begin,
                                     HttpToolsProtocol.on_headers_complete,
                                     HttpToolsProtocol.on_message_complete)

    def connection_made(self: Any, transport: asyncio.Transport) -> None:
        made(self, transport)
        if len(_open) >= LIMITS.max_connections:
            refuse(transport, 503, f"the recall service is overloaded: {len(_open)} connections "
                   f"are open (MAX_CONNECTIONS={LIMITS.max_connections})", self)
            return
        _open.add(self)
        self._guard_head, self._guard_tail = 0, b""
        self._guard_in_head = True
        _timer(self, LIMITS.header_timeout, "headers")  # also: connected and silent

    def connection_lost(self: Any, exc: Exception | None) -> None:
        _open.discard(self)
        _cancel(self)
        lost(self, exc)

    def data_received(self: Any, chunk: bytes) -> None:
        if getattr(self, "_guard_refused", False):
            return  # answered and closing: read and dropped
        if getattr(self, "_guard_in_head", False):
            # The blank line ending the head may straddle two reads: look across the seam.
            seen = self._guard_tail + chunk
            end = seen.find(b"\r\n\r\n")
            self._guard_head += len(chunk) if end < 0 else end + 4 - len(self._guard_tail)
            self._guard_tail = seen[-3:]
            if self._guard_head > LIMITS.max_header_bytes:
                refuse(self.transport, 431, f"request headers are larger than the limit of "
                       f"{LIMITS.max_header_bytes} bytes (MAX_HEADER_BYTES)", self)
                return
        data(self, chunk)

    def on_message_begin(self: Any) -> None:
        begin(self)
        if not self._guard_in_head:  # the next request on a kept-alive connection
            self._guard_in_head, self._guard_head, self._guard_tail = True, 0, b""
            _timer(self, LIMITS.header_timeout, "headers")

    def on_headers_complete(self: Any) -> None:
        self._guard_in_head = False
        _timer(self, LIMITS.body_timeout, "body")
        headers_done(self)
        # httptools reports a chunked body's trailer fields through on_header too, and uvicorn
        # appends them to the list it gave the app as scope["headers"]: from here on they go
        # to a list nobody reads, so a trailer can never pose as a header (Authorization).
        self.headers = list(self.headers)

    def on_message_complete(self: Any) -> None:
        _cancel(self)
        complete(self)

    for name, fn in (("connection_made", connection_made), ("connection_lost", connection_lost),
                     ("data_received", data_received), ("on_message_begin", on_message_begin),
                     ("on_headers_complete", on_headers_complete),
                     ("on_message_complete", on_message_complete)):
        setattr(HttpToolsProtocol, name, fn)
    HttpToolsProtocol._guarded = True
