"""Reliability of the HTTP surface against a real `uvicorn main:app` process on Milvus Lite.

What tests/test_api.py already proves through TestClient (each 422 message, 401s, 413 with
TestClient) is not repeated; this module adds what needs a real server socket or volume:
* a schemathesis fuzz of every operation from the live OpenAPI schema: zero 5xx, every 4xx
  with a message, the collection untouched (no token was sent);
* the hand battery that only a real process meets: 10,000-level nesting, ragged arrays,
  10,000 users, a 100,000-item history, NaN/Infinity, bytes that are not UTF-8, form bodies;
  a Content-Length of 10 GB and a chunked body that never ends get 413 without being read;
  after each one the service answers the next good request exactly as before;
* security: default bind 127.0.0.1, no field names a file path, the start-up warning;
* a 10-second load of 16 concurrent clients with zero errors (`make reliability`: 60 s).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator

import httpx
import pytest

from reliability_support import Service, fuzz, listening_addresses, raw_http, run_load

TOKEN = "reliability-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
USERS = [[5, 17, 3], [40, 2], [1, 2, 3, 4, 5, 6, 7, 8], [399, 250], [123], [77, 78, 79, 80]]
GOOD = {"top_k": 20, "hist_item": USERS}


class Running:
    def __init__(self, service: Service, baseline: list[list[int]], count: int) -> None:
        self.service, self.baseline, self.count = service, baseline, count
        self.http = service.client(timeout=30)

    def still_answers(self) -> None:
        """The process is up and the good request gets exactly the answer it got at the start."""
        assert self.service.alive(), self.service.log()[-3000:]
        r = self.http.post("/rec/recall", json=GOOD)
        assert r.status_code == 200, r.text
        assert r.json() == self.baseline
        assert self.http.post("/rec/count").json() == {"count": self.count}


@pytest.fixture(scope="module")
def running(tiny_model, tmp_path_factory) -> Iterator[Running]:
    """One service (default limits, a token) with the tiny model's catalogue loaded."""
    tmp = tmp_path_factory.mktemp("reliability_http")
    service = Service(tmp, {"MODEL_CONFIG_PATH": str(tiny_model[0]),
                            "MILVUS_URI": str(tmp / "items.db"), "API_TOKEN": TOKEN})
    service.start()
    try:
        with service.client(timeout=120) as c:
            inserted = c.post("/rec/insert_data", headers=AUTH)
            assert inserted.status_code == 200, inserted.text
            baseline = c.post("/rec/recall", json=GOOD)
            assert baseline.status_code == 200, baseline.text
        run = Running(service, baseline.json(), inserted.json()["count"])
        yield run
        run.http.close()
    finally:
        service.stop()


# ------------------------------------------------------------------ fuzz
def test_fuzz_every_operation_from_the_openapi_schema_gets_no_5xx(running):
    report = fuzz(running.service.base, max_cases=150, seed=7)
    print("fuzz:", report["cases"], "cases", json.dumps(report["per_operation"]))
    assert report["server_errors_5xx"] == 0, json.dumps(report["server_error_examples"], indent=1)
    assert report["transport_error_count"] == 0, report["transport_errors"]
    assert report["answers_4xx_without_message_count"] == 0, report["answers_4xx_without_message"]
    # Every operation was exercised, recall with both accepted and refused bodies.
    assert set(report["per_operation"]) == set(report["operations"]) >= {
        "POST /rec/recall", "POST /rec/insert_data", "POST /rec/count", "POST /qa/drop",
        "POST /rec/drop", "GET /healthz", "GET /readyz"}
    recall = report["per_operation"]["POST /rec/recall"]
    assert recall.get("200", 0) > 0 and recall.get("422", 0) > 0, recall
    assert report["cases"] >= 100
    # No token was sent: the mutating operations refused every generated request.
    for op in ("POST /rec/insert_data", "POST /qa/drop", "POST /rec/drop"):
        assert set(report["per_operation"][op]) == {"401"}, report["per_operation"][op]
    running.still_answers()


# ------------------------------------------------------------------ hand battery
NEST = 10_000
BATTERY = [
    ("array nested 10,000 deep", b"[" * NEST + b"]" * NEST, "application/json",
     "could not be read as JSON"),
    ("hist_item nested 10,000 deep", b'{"hist_item": ' + b"[" * NEST + b"]" * NEST + b"}",
     "application/json", "could not be read as JSON"),
    ("objects nested 10,000 deep", b'{"a":' * NEST + b"1" + b"}" * NEST, "application/json",
     "could not be read as JSON"),
    ("ragged: an array among ids", json.dumps({"hist_item": [[1, [2, [3]]], [4]]}).encode(),
     "application/json", "hist_item[0][1]: must be an integer, got array"),
    ("ragged: an object among rows", json.dumps({"hist_item": [[1], {"a": 1}]}).encode(),
     "application/json", "hist_item[1]: must be an array, got object"),
    ("10,000 users", json.dumps({"hist_item": [[1, 2]] * 10_000}).encode(), "application/json",
     "hist_item: must have at most 256 items"),
    ("a 100,000-item history", json.dumps({"hist_item": [list(range(1, 100_001))]}).encode(),
     "application/json", "hist_item[0]: must have at most 1000 items"),
    ("NaN as an id", b'{"hist_item": [[1, NaN]]}', "application/json",
     "hist_item[0][1]: must be an integer, got number"),
    ("Infinity as top_k", b'{"top_k": Infinity, "hist_item": [[1]]}', "application/json",
     "top_k: must be an integer, got number"),
    ("id of 30 digits", b'{"hist_item": [[1' + b"0" * 29 + b"]]}", "application/json",
     "hist_item[0][0]: must be <= 9223372036854775807"),
    ("bytes that are not UTF-8", b'{"hist_item": [[1]], "x": "\xff\xfe"}', "application/json",
     "could not be read as JSON"),
    ("a NUL after the JSON", b'{"hist_item": [[1]]}\x00', "application/json", "invalid JSON"),
    ("a form body", b"hist_item=1&top_k=5", "application/x-www-form-urlencoded",
     "send Content-Type: application/json"),
    ("a multipart body", b"--b\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\n1\r\n--b--",
     "multipart/form-data; boundary=b", "send Content-Type: application/json"),
    ("no content type", b'{"hist_item": [[1]]}', None, "send Content-Type: application/json"),
]


@pytest.mark.parametrize(("body", "content_type", "says"), [b[1:] for b in BATTERY],
                         ids=[b[0] for b in BATTERY])
def test_hand_battery_gets_4xx_with_a_message_and_the_service_stays_correct(
        running, body, content_type, says):
    headers = {"Content-Type": content_type} if content_type else {}
    r = running.http.post("/rec/recall", content=body, headers=headers)
    assert 400 <= r.status_code < 500, r.text[:500]
    assert says in r.json()["detail"], r.text[:500]
    running.still_answers()


def test_a_body_read_by_the_parser_process_gets_the_answers_of_small_requests(running):
    """A body past 64 KiB is decoded and validated in the service's parser process; its users
    get exactly what they get in requests of 8 users (parsed on the event loop)."""
    hist = [[(u * 13 + i * 7) % 399 + 1 for i in range(60)] for u in range(256)]
    body = json.dumps({"top_k": 20, "hist_item": hist}).encode()
    assert len(body) > 64 * 1024
    r = running.http.post("/rec/recall", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text[:500]
    small = []
    for lo in range(0, len(hist), 8):
        part = running.http.post("/rec/recall", json={"top_k": 20, "hist_item": hist[lo:lo + 8]})
        assert part.status_code == 200, part.text
        small += part.json()
    assert r.json() == small
    running.still_answers()


HEAD = (b"POST /rec/recall HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n")
LIMIT = 1024 * 1024  # the default MAX_BODY_BYTES


def test_a_declared_10_gb_body_gets_413_before_any_of_it_is_sent(running):
    head = HEAD + b"Content-Length: 10000000000\r\n\r\n"
    answer = raw_http(running.service.port, head, iter([]), timeout=10)
    assert answer.status == 413 and answer.sent == 0
    assert f"limit of {LIMIT} bytes" in json.loads(answer.body)["detail"]
    assert answer.headers.get("connection") == "close"
    running.still_answers()


def test_an_endless_chunked_body_gets_413_once_past_the_limit(running):
    chunk = b"10000\r\n" + b" " * 0x10000 + b"\r\n"  # 64 KiB chunks, forever

    def endless() -> Iterator[bytes]:
        while True:
            yield chunk

    cap = 256 << 20
    answer = raw_http(running.service.port, HEAD + b"Transfer-Encoding: chunked\r\n\r\n",
                      endless(), timeout=30, max_send=cap)
    assert answer.status == 413
    assert f"limit of {LIMIT} bytes" in json.loads(answer.body)["detail"]
    # The answer came while the client was still sending: the server stopped reading near the
    # limit (what went beyond it sits in the kernel's socket buffers), not at our cap.
    assert answer.sent < cap // 4, answer.sent
    running.still_answers()


# ------------------------------------------------------------------ security
def test_the_default_bind_is_loopback_only(running):
    # Started as the tutorial does, without --host: only 127.0.0.1 listens on the port.
    assert listening_addresses(running.service.port) == {"0100007F"}


def test_no_request_field_can_name_a_file_path(running, tmp_path):
    targets = {name: tmp_path / f"{name}.target" for name in
               ("MODEL_CONFIG_PATH", "MILVUS_URI", "path", "db", "file", "uri")}
    paths = {name: str(p) for name, p in targets.items()}
    # Recall refuses every field it does not know, naming it.
    r = running.http.post("/rec/recall", json={"hist_item": [[1]], **paths})
    assert r.status_code == 422
    assert all(f"{name}: is not a known field" in r.json()["detail"] for name in paths)
    # The only strings a request holds are item keys, `return`'s choice and `where`'s values
    # (looked up in the catalogue, never opened): no field is a name of anything else.
    schema = running.http.get("/openapi.json").json()["components"]["schemas"]["RecallRequest"]

    def strings(node, at=""):
        if isinstance(node, dict):
            found = {at} if node.get("type") == "string" else set()
            return found.union(*(strings(v, f"{at}/{k}") for k, v in node.items()))
        if isinstance(node, list):
            return set().union(*(strings(v, f"{at}/{i}") for i, v in enumerate(node)))
        return set()

    assert strings(schema) == {"/properties/hist_item/items/anyOf/1/items",
                               "/properties/return",
                               "/properties/where/anyOf/0/additionalProperties/items"}
    # Bodyless endpoints ignore bodies, query strings and headers that name paths.
    for path in ("/rec/insert_data", "/rec/count"):
        r = running.http.post(path, json=paths, params=paths,
                              headers={**AUTH, "X-Milvus-Uri": paths["MILVUS_URI"]})
        assert r.status_code == 200, r.text
        assert r.json()["count"] == running.count
    assert not any(p.exists() for p in targets.values())
    assert list(tmp_path.iterdir()) == []
    running.still_answers()


def test_start_up_warns_when_exposed_without_a_token(tiny_model, tmp_path, monkeypatch, caplog):
    """The lifespan reads uvicorn's --host: 0.0.0.0 without API_TOKEN is logged (no socket bound)."""
    from fastapi.testclient import TestClient

    import main
    from config import Settings

    caplog.set_level(logging.WARNING, logger="recall.service")
    base = {"MODEL_CONFIG_PATH": str(tiny_model[0]), "MILVUS_URI": str(tmp_path / "w.db")}
    monkeypatch.setattr(sys, "argv", ["uvicorn", "main:app", "--host", "0.0.0.0"])
    with TestClient(main.create_app(Settings.from_env(base))):
        pass
    assert "listens on 0.0.0.0 without API_TOKEN" in caplog.text
    caplog.clear()
    with TestClient(main.create_app(Settings.from_env({**base, "API_TOKEN": TOKEN}))):
        pass
    monkeypatch.setattr(sys, "argv", ["uvicorn", "main:app"])
    with TestClient(main.create_app(Settings.from_env(base))):
        pass
    assert "without API_TOKEN" not in caplog.text


# ------------------------------------------------------------------ load
def valid_rows(request: dict, rows: object) -> bool:
    """A 200 answer: one non-empty row of distinct ids per user, none from the history."""
    if not isinstance(rows, list) or len(rows) != len(request["hist_item"]):
        return False
    for row, hist in zip(rows, request["hist_item"]):
        if not row or len(row) > request["top_k"] or len(set(row)) != len(row) or set(row) & set(hist):
            return False
    return True


LOAD_BODIES = [{"top_k": 50, "hist_item": [h]} for h in USERS] + [GOOD]


@pytest.mark.slow
def test_16_concurrent_clients_for_10_seconds_get_no_error(running):
    report = run_load(running.service.base, LOAD_BODIES, clients=16, seconds=10,
                      valid=valid_rows, timeout=30)
    print("load:", json.dumps(report))
    assert report["errors"] == 0, report["error_kinds"]
    assert report["requests"] >= 16 * 5, report
    running.still_answers()
    assert httpx.get(f"{running.service.base}/readyz", timeout=10).status_code == 200
