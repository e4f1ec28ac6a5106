"""A real Milvus server for tests, run through milvus/start_server.sh and stop_server.sh.

Session fixture `milvus_server`: starts one server on a free port with its data in a temp
dir, yields a handle with `.uri`, `.stop()` and `.start()` (for outage tests), stops it at
the end. If the server cannot start (e.g. the `milvus` package is missing) the tests that
need it are skipped with the reason, unless MILVUS_SERVER_REQUIRED=1, where they fail.
Wire it in from tests/conftest.py with:  from milvus_server import milvus_server  # noqa: F401
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "milvus"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class MilvusServerProcess:
    """One local Milvus standalone server, controlled through the milvus/ scripts."""

    def __init__(self, base_dir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.env = {
            **os.environ,
            "MILVUS_PORT": str(self.port),
            "MILVUS_DATA_DIR": str(base_dir / "data"),
            "MILVUS_LOG_DIR": str(base_dir / "logs"),
            # The interpreter running the tests has pymilvus and milvus installed.
            "MILVUS_PYTHON": sys.executable,
        }
        self.log_dir = base_dir / "logs"

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self, script: str, timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", str(SCRIPTS / script)], env=self.env, text=True,
                              capture_output=True, timeout=timeout, check=False)

    def start(self, timeout: float = 180) -> None:
        """Start and wait until it answers; RuntimeError with the script's output if not."""
        res = self._run("start_server.sh", timeout)
        if res.returncode != 0:
            raise RuntimeError(f"start_server.sh exit {res.returncode}: "
                               f"{res.stdout.strip()} {res.stderr.strip()}")

    def stop(self, timeout: float = 90) -> None:
        res = self._run("stop_server.sh", timeout)
        if res.returncode != 0:
            raise RuntimeError(f"stop_server.sh exit {res.returncode}: "
                               f"{res.stdout.strip()} {res.stderr.strip()}")


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MilvusServerProcess]:
    """The session's Milvus server (started on first use, stopped at the end)."""
    server = MilvusServerProcess(tmp_path_factory.mktemp("milvus-server"))
    try:
        server.start()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        try:
            server.stop()  # a half-started process must not outlive the session
        finally:
            reason = f"the Milvus server could not start: {exc} (logs: {server.log_dir})"
            if os.environ.get("MILVUS_SERVER_REQUIRED") == "1":
                pytest.fail(reason)
            pytest.skip(reason)
    try:
        yield server
    finally:
        server.stop()
