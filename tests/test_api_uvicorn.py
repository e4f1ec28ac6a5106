"""The tutorial's own curl commands against `cd recommend && uvicorn main:app`, a real process.

Only the port differs from the tutorial (a free one instead of 8000) so parallel runs
never collide; the service reads its settings from the environment as users run it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import httpx
import pytest

from config import SERVICE_DIR
from support import free_port

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")

# Verbatim from the original tutorial (README, step "6. curl"), bar the port.
INSERT = """curl -X 'POST'   'http://127.0.0.1:8000/rec/insert_data'   -H 'accept: application/json'   -d ''"""
RECALL = """curl -X 'POST'   'http://127.0.0.1:8000/rec/recall'   -H 'accept: application/json'   -H 'Content-Type: application/json'   -d '{  "top_k": 50,  "hist_item": [[43,23,65,675,3456,8654,123454,54367,234561],[675,3456,8654,123454,76543,1234,9769,5670,65443,123098,34219,234098]]}'"""
COUNT = """curl -X 'POST'   'http://127.0.0.1:8000/rec/count'   -H 'accept: application/json'   -d ''"""
DROP = """curl -X 'POST'   'http://127.0.0.1:8000/qa/drop'   -H 'accept: application/json'   -d ''"""


class Server(NamedTuple):
    base: str  # http://127.0.0.1:<port>
    db: Path  # the Milvus Lite file named by MILVUS_URI


@pytest.fixture(scope="module")
def server(tiny_model, tmp_path_factory) -> Iterator[Server]:
    """`uvicorn main:app` in recommend/, on a free loopback port, with its log kept."""
    config, _ = tiny_model
    tmp = tmp_path_factory.mktemp("uvicorn")
    port = free_port()
    env = {
        **os.environ,
        "MODEL_CONFIG_PATH": str(config),
        "MILVUS_URI": str(tmp / "items.db"),
    }
    env.pop("API_TOKEN", None)
    uvicorn = Path(sys.executable).with_name("uvicorn")
    log = (tmp / "uvicorn.log").open("w")
    proc = subprocess.Popen(
        [str(uvicorn), "main:app", "--port", str(port)],
        cwd=SERVICE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"uvicorn exited:\n{(tmp / 'uvicorn.log').read_text()}")
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"uvicorn did not answer:\n{(tmp / 'uvicorn.log').read_text()}")
            time.sleep(0.2)
        yield Server(base, tmp / "items.db")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def curl(command: str, base: str):
    """Run one tutorial command (through sh, as pasted) against ``base``; its JSON answer."""
    command = command.replace("http://127.0.0.1:8000", base) + " --silent --show-error --fail-with-body"
    done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout)


def test_the_tutorial_commands(server: Server):
    base = server.base
    inserted = curl(INSERT, base)
    assert inserted["status"] == "ok" and inserted["count"] > 0
    assert server.db.exists()  # MILVUS_URI from the environment was used
    assert curl(COUNT, base) == {"count": inserted["count"]}
    assert curl(INSERT, base)["count"] == inserted["count"]  # replaces, never duplicates
    assert curl(COUNT, base) == {"count": inserted["count"]}

    rows = curl(RECALL, base)
    histories = json.loads(RECALL.split("-d '", 1)[1].rstrip("'"))["hist_item"]
    assert len(rows) == 2
    for row, hist in zip(rows, histories):
        assert len(row) == 50 and len(set(row)) == 50
        assert all(isinstance(i, int) and 0 < i <= inserted["count"] for i in row)
        assert not set(row) & set(hist)
    # The second user's clicks are all beyond the tiny catalogue: the popular items.
    popular = httpx.post(f"{base}/rec/recall", json={"top_k": 50, "hist_item": [[10**9]]}).json()
    assert rows[1] == popular[0]
    assert rows[0] != rows[1]

    assert curl(DROP, base) == {"status": "ok"}
    assert curl(COUNT, base) == {"count": 0}
    after = httpx.post(f"{base}/rec/recall", json={"top_k": 5, "hist_item": [[1]]})
    assert after.status_code == 409 and "call /rec/insert_data" in after.json()["detail"]
