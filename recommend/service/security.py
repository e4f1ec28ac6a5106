"""Who may change the collection, and a warning when the service is open to the network."""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
import sys
from collections.abc import Mapping, Sequence

from fastapi import HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from config import Settings, is_loopback

log = logging.getLogger("recall.service")

# auto_error=False: without a configured token the endpoints stay open, so a missing
# header must not be refused by the scheme itself.
bearer = HTTPBearer(auto_error=False, description="API_TOKEN, when the service has one")


def check_token(request: Request, credentials: HTTPAuthorizationCredentials | None) -> None:
    """401 unless the request carries the configured bearer token (no-op when none is set)."""
    expected: str = request.app.state.settings.API_TOKEN
    if not expected:
        return
    given = credentials.credentials if credentials is not None else ""
    # compare_digest: the time taken must not reveal how much of the token matched.
    if not secrets.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="this endpoint needs Authorization: Bearer <API_TOKEN>",
            headers={"WWW-Authenticate": "Bearer"},
        )


def launch_host(
    settings: Settings,
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> str:
    """Best guess of the address the server binds to.

    The ASGI app is not told its listening address at start-up, so this reads what
    uvicorn reads: ``--host`` on its command line, else UVICORN_HOST, else (for
    ``python main.py``) the HOST setting; uvicorn's own default is 127.0.0.1.
    """
    argv = sys.argv if argv is None else argv
    environ = os.environ if environ is None else environ
    return _option(argv, "--host") or environ.get("UVICORN_HOST") or settings.HOST


def launch_port(settings: Settings, argv: Sequence[str] | None = None,
                environ: Mapping[str, str] | None = None) -> int | None:
    """The TCP port the server will listen on, read as ``launch_host`` reads the host; None
    when it listens on a Unix socket or an inherited descriptor."""
    argv = sys.argv if argv is None else argv
    environ = os.environ if environ is None else environ
    if _option(argv, "--uds") or _option(argv, "--fd"):
        return None
    value = _option(argv, "--port") or environ.get("UVICORN_PORT") or settings.PORT
    return int(value)


def _option(argv: Sequence[str], flag: str) -> str | None:
    """The value of ``flag value`` or ``flag=value`` on a command line."""
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def warn_if_exposed(settings: Settings, host: str) -> bool:
    """Log a warning (and return True) when non-local clients could drop the catalogue."""
    if settings.API_TOKEN or is_loopback(host):
        return False
    log.warning(
        "the service listens on %s without API_TOKEN: anyone who can reach it can "
        "replace or drop the collection; set API_TOKEN (see README, Operating it)",
        host,
    )
    return True


class ExposureWatch:
    """ASGI middleware: warn once if a request arrives on a non-loopback address
    while no token is set (catches launches that launch_host could not see)."""

    def __init__(self, app, settings: Settings) -> None:
        self.app, self.settings, self.warned = app, settings, False
        # Addresses already judged: parsing the address on every request was 5% of the event
        # loop's time under load (a loopback service never warns, so it never stopped).
        self._judged: set[str] = set()

    async def __call__(self, scope, receive, send) -> None:
        server = scope.get("server") if scope["type"] == "http" else None
        if not self.warned and server and server[0] not in self._judged:
            host = str(server[0])
            if len(self._judged) < 64:
                self._judged.add(host)
            # Servers report the socket's IP; a name (TestClient's "testserver") is no socket.
            if _is_ip(host):
                self.warned = warn_if_exposed(self.settings, host)
        await self.app(scope, receive, send)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False
