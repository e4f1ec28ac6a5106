"""service.bodies: /rec/recall's own body reading answers exactly as FastAPI's body parameter did,
and a big body is parsed and validated on the parser thread, not on the event loop.

Two routes on one real FastAPI app with the service's error handlers, one taking the request
model as a FastAPI body parameter, the other reading the raw body through bodies.parse_async,
get the same bodies (the 422 cases of test_api.py and the hand battery of
test_reliability_http.py, small and padded past BIG_BODY_BYTES) and must answer alike.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from pydantic import field_validator

from config import Settings
from service import bodies, errors
from service.schemas import recall_request_model
from test_api import BAD_BODIES
from test_reliability_http import BATTERY

Model = recall_request_model(Settings.from_env({}))
# How the parser process builds the same model (the default limits: 256 users, 1000 ids, 1000).
FACTORY = functools.partial(recall_request_model, SimpleNamespace(
    MAX_BATCH_USERS=256, MAX_HISTORY_LEN=1000, MAX_TOP_K=1000))


def _app() -> FastAPI:
    app = FastAPI()
    errors.install(app)

    @app.post("/fastapi")
    def by_fastapi(body: Model) -> dict:  # type: ignore[valid-type]
        return body.model_dump()

    @app.post("/ours", openapi_extra=bodies.openapi_body(Model))
    async def ours(request: Request) -> dict:
        body = await bodies.parse_async(Model, await request.body(),
                                        request.headers.get("content-type"),
                                        factory=FACTORY, arrays=("hist_item",))
        return {**body.model_dump(exclude={"hist_item"}),
                "hist_item": [list(map(int, r)) for r in body.hist_item]}

    bodies.document(app, [Model])
    return app


CASES = [(json.dumps(b).encode(), "application/json") for b, _ in BAD_BODIES] + [
    (body, ctype) for _, body, ctype, _ in BATTERY] + [
    (b'{"top_k": 7, "hist_item": [[1, 2], [3]], "exclude_history": false}', "application/json"),
    (b'{"hist_item": [[18446744073709551616]]}', "application/json"),  # orjson: a float
    (b'{"hist_item": [[1e400]]}', "application/json"),
    (b'\xef\xbb\xbf{"hist_item": [[1]]}', "application/json"),  # a UTF-8 BOM
    (b'{"hist_item": [[1]], "hist_item": [[2]]}', "application/json"),
    (b'{"hist_item": [[1]]}', "application/vnd.api+json"),
    (b"", "application/json"),
    (b'{"hist_item": [["\\ud800"]]}', "application/json"),
]


@pytest.fixture(scope="module")
def client() -> TestClient:
    """The app, with the parser process up (as the service's lifespan starts it)."""
    bodies.start_process()
    assert bodies._process_ready.result(60)
    yield TestClient(_app())
    bodies.stop_process()


@pytest.mark.parametrize("big", [False, True], ids=["small", "past BIG_BODY_BYTES"])
@pytest.mark.parametrize(("body", "ctype"), CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_answers_as_a_fastapi_body_parameter_does(client, body, ctype, big):
    if big:  # leading whitespace is still the same JSON document
        body = b" " * (bodies.BIG_BODY_BYTES + 1) + body if body else body
    headers = {"Content-Type": ctype} if ctype else {}
    want = client.post("/fastapi", content=body, headers=headers)
    got = client.post("/ours", content=body, headers=headers)
    assert (got.status_code, got.json()) == (want.status_code, want.json())
    assert want.status_code in (200, 422)


def test_a_maximum_size_body_is_accepted_as_it_was():
    hist = [[(u * 1000 + i) % 400_000 + 1 for i in range(1000)] for u in range(256)]
    raw = json.dumps({"top_k": 1000, "hist_item": hist}).encode()
    assert len(raw) > bodies.BIG_BODY_BYTES
    parsed = bodies.parse(Model, raw, "application/json")
    assert parsed.hist_item == hist and parsed.top_k == 1000


def test_big_bodies_are_validated_on_the_parser_thread_small_ones_at_once():
    import asyncio

    seen: list[str] = []

    class Watched(Model):  # type: ignore[valid-type, misc]
        @field_validator("hist_item")
        @classmethod
        def where(cls, value):
            seen.append(threading.current_thread().name)
            return value

    small = b'{"hist_item": [[1, 2]]}'
    big = json.dumps({"hist_item": [list(range(1, 1001))] * 20}).encode()
    assert len(big) > bodies.BIG_BODY_BYTES >= len(small)

    async def both() -> None:
        await bodies.parse_async(Watched, small, "application/json")
        await bodies.parse_async(Watched, big, "application/json")

    asyncio.run(both())
    assert seen[0] == threading.current_thread().name
    assert seen[1].startswith("body-parser")


def test_a_valid_big_body_is_parsed_in_the_parser_process(client):
    import asyncio
    import os

    import numpy as np

    hist = [[(u * 7 + i) % 5000 + 1 for i in range(1000)] for u in range(20)] + [[9]]
    raw = json.dumps({"top_k": 9, "hist_item": hist}).encode()
    assert len(raw) > bodies.BIG_BODY_BYTES

    async def parse():
        return await bodies.parse_async(Model, raw, "application/json", factory=FACTORY,
                                        arrays=("hist_item",))

    parsed = asyncio.run(parse())
    # Arrays only come from the process; the thread's model holds Python lists.
    assert all(isinstance(r, np.ndarray) and r.dtype == np.int64 for r in parsed.hist_item)
    assert [r.tolist() for r in parsed.hist_item] == hist
    assert parsed.top_k == 9 and parsed.exclude_history is True
    assert bodies._process.submit(os.getpid).result(30) != os.getpid()


def test_the_schema_documents_the_body_as_fastapi_did(client):
    schema = client.get("/openapi.json").json()
    assert (schema["paths"]["/ours"]["post"]["requestBody"]
            == schema["paths"]["/fastapi"]["post"]["requestBody"])
    assert schema["components"]["schemas"][Model.__name__]["properties"]["hist_item"]["maxItems"] == 256


def test_past_max_parsing_big_bodies_a_big_body_is_refused_unread_as_overload():
    import asyncio

    from service.domain import ServiceOverloaded

    held, go = threading.Event(), threading.Event()

    class Slow(Model):  # type: ignore[valid-type, misc]
        @field_validator("hist_item")
        @classmethod
        def hold(cls, value):
            held.set()
            assert go.wait(10)
            return value

    big = json.dumps({"hist_item": [list(range(1, 1001))] * 20}).encode()

    async def flood() -> list:
        loop = asyncio.get_running_loop()
        busy = [asyncio.ensure_future(bodies.parse_async(Slow, big, "application/json"))
                for _ in range(bodies.MAX_PARSING)]
        await loop.run_in_executor(None, held.wait, 10)  # the first is on the parser thread
        with pytest.raises(ServiceOverloaded, match=f"{bodies.MAX_PARSING} large request bodies"):
            await bodies.parse_async(Slow, big, "application/json")
        small = await bodies.parse_async(Model, b'{"hist_item": [[1]]}', "application/json")
        go.set()
        return [small, *await asyncio.gather(*busy)]

    done = asyncio.run(flood())
    assert done[0].hist_item == [[1]] and all(len(d.hist_item) == 20 for d in done[1:])
    # The parser is free again: a big body is read.
    assert len(asyncio.run(bodies.parse_async(Model, big, "application/json")).hist_item) == 20


def test_the_parser_process_exits_when_its_service_is_killed(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    script = ("import os, sys, time\n"
              "from service import bodies\n"
              "bodies.start_process()\n"
              "bodies._process_ready.result(60)\n"
              "print(bodies._process.submit(os.getpid).result(30), flush=True)\n"
              "time.sleep(60)\n")
    service_dir = Path(__file__).resolve().parents[1] / "recommend"
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=service_dir,
                            stdout=subprocess.PIPE, text=True)
    try:
        child = int(proc.stdout.readline())
        os.kill(proc.pid, signal.SIGKILL)  # no shutdown code runs
        proc.wait(10)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not Path(f"/proc/{child}").exists(), "the parser process outlived its service"
    finally:
        if proc.poll() is None:
            proc.kill()


def _parser_pid() -> int:
    bodies.start_process()
    assert bodies._process_ready.result(60)
    return bodies._process.submit(os.getpid).result(30)


BIG = b" " * (bodies.BIG_BODY_BYTES + 1) + b'{"hist_item": [[1, 2, 3]], "top_k": 5}'


def test_a_stopped_parser_costs_one_timeout_and_is_replaced():
    """SIGSTOP the parser process: a big body is parsed on the thread after PARSE_TIMEOUT (was:
    waiting 46.7 s median) and the next one goes to a new process."""
    stopped = _parser_pid()
    os.kill(stopped, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        got = asyncio.run(bodies.parse_async(Model, BIG, "application/json",
                                             factory=FACTORY, arrays=("hist_item",)))
        took = time.monotonic() - t0
        assert list(map(list, got.hist_item)) == [[1, 2, 3]]
        assert bodies.PARSE_TIMEOUT <= took < bodies.PARSE_TIMEOUT + 3, took
        assert _parser_pid() != stopped
        assert not Path(f"/proc/{stopped}").exists() or \
            Path(f"/proc/{stopped}/stat").read_text().split()[2] == "Z"
    finally:
        try:
            os.kill(stopped, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_a_parser_that_dies_under_four_parses_is_restarted_once(caplog):
    dead = _parser_pid()

    async def four():
        loop = asyncio.get_running_loop()
        loop.call_later(0.01, os.kill, dead, signal.SIGKILL)
        return await asyncio.gather(*(bodies.parse_async(
            Model, BIG, "application/json", factory=FACTORY, arrays=("hist_item",))
            for _ in range(bodies.MAX_PARSING)))

    with caplog.at_level(logging.WARNING, logger="recall.service"):
        answers = asyncio.run(four())
    assert [list(map(list, a.hist_item)) for a in answers] == [[[1, 2, 3]]] * 4
    restarts = [m for m in caplog.messages if "starting another" in m]
    assert len(restarts) <= 1, restarts  # 0 if every parse was done before the kill
    assert _parser_pid() != dead


def test_the_parser_process_of_a_python_script_service_imports_only_what_parsing_needs(
        tmp_path):
    """`python main.py`: spawn used to run the script again in the child (paddle and all); and
    stopping the process leaves no leaked semaphores."""
    script = tmp_path / "main_like.py"
    script.write_text("import os, sys\n"
                      "import paddle  # noqa: F401  (as main.py imports it)\n"
                      "from service import bodies\n"
                      "if __name__ == '__main__':\n"
                      "    bodies.start_process()\n"
                      "    bodies._process_ready.result(120)\n"
                      "    pid = bodies._process.submit(os.getpid).result(30)\n"
                      "    maps = open(f'/proc/{pid}/maps').read()\n"
                      "    print('paddle in child:', 'libpaddle' in maps or 'paddle/base' in maps)\n"
                      "    bodies.stop_process()\n")
    service_dir = Path(__file__).resolve().parents[1] / "recommend"
    done = subprocess.run([sys.executable, str(script)], cwd=service_dir, capture_output=True,
                          text=True, timeout=180, env={**os.environ, "PYTHONPATH": str(service_dir)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "paddle in child: False" in done.stdout, done.stdout
    assert "leaked semaphore" not in done.stderr, done.stderr[-2000:]
