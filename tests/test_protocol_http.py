"""Protocol hardening against a real `uvicorn main:app` process (started as the tutorial does):
a huge header gets 431, a client trickling its headers at 1 byte/s is cut off within 10 s, a
50 MB POST from urllib reads the 413 (no reset), and /metrics moves after a request."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from reliability_support import Service, raw_http


@pytest.fixture(scope="module")
def service(tiny_model, tmp_path_factory) -> Iterator[Service]:
    tmp = tmp_path_factory.mktemp("protocol_http")
    svc = Service(tmp, {"MODEL_CONFIG_PATH": str(tiny_model[0]), "MILVUS_URI": str(tmp / "i.db"),
                        "AUTO_INSERT": "1"})
    svc.start()
    yield svc
    svc.stop()


def test_a_64_kb_header_gets_431_and_the_service_still_answers(service):
    head = (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 65536 + b"\r\n\r\n")
    answer = raw_http(service.port, head, iter([]), timeout=10)
    assert answer.status == 431
    assert "MAX_HEADER_BYTES" in json.loads(answer.body)["detail"]
    with service.client() as c:
        assert c.get("/healthz", headers={"X-Normal": "b" * 4000}).status_code == 200


@pytest.mark.slow
def test_headers_sent_at_1_byte_per_second_are_cut_off_within_10_s(service):
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", service.port), timeout=15) as sock:
        closed = False
        for byte in b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"z" * 30:
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            sock.settimeout(1.0)
            try:
                got = sock.recv(4096)
            except TimeoutError:
                continue
            assert b"408" in got.split(b"\r\n")[0] or got == b"", got
            closed = True
            break
    assert closed and time.monotonic() - t0 < 10


@pytest.mark.slow
def test_a_50_mb_urllib_post_reads_the_413(service):
    body = b"[" + b"1," * (25 * 1024 * 1024) + b"1]"
    request = urllib.request.Request(f"{service.base}/rec/recall", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=30)
    assert caught.value.code == 413
    assert "MAX_BODY_BYTES" in json.loads(caught.value.read())["detail"]


def _sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample line of Prometheus text, 0 when absent."""
    want = [f'{k}="{v}"' for k, v in labels.items()]
    for line in text.splitlines():
        if line.startswith(name + ("{" if labels else " ")) and all(w in line for w in want):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_are_prometheus_text_and_move_after_a_recall(service):
    with service.client() as c:
        before = c.get("/metrics").text
        assert c.post("/rec/recall", json={"top_k": 5, "hist_item": [[1, 2, 3]]}).status_code == 200
        r = c.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    after = r.text
    for name in ("recall_http_requests_total", "recall_http_request_seconds_bucket",
                 "recall_batch_users_bucket", "recall_batch_requests_bucket",
                 "recall_queue_wait_seconds_bucket", "recall_queue_users",
                 "recall_milvus_search_seconds_bucket", "recall_model_info", "recall_items"):
        assert name in after, name
    route = {"route": "/rec/recall", "method": "POST", "status": "200"}
    assert (_sample(after, "recall_http_requests_total", **route)
            == _sample(before, "recall_http_requests_total", **route) + 1)
    assert (_sample(after, "recall_milvus_search_seconds_count")
            > _sample(before, "recall_milvus_search_seconds_count"))
    assert _sample(after, "recall_items") == service_items(service)
    assert 'epoch="0"' in after


def service_items(service: Service) -> float:
    with service.client() as c:
        return float(c.post("/rec/count").json()["count"])


def _head(path: str, length: int, extra: bytes = b"") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\n").encode() + extra


def test_a_head_whose_blank_line_arrives_in_the_next_read_is_not_too_large(service):
    """The head ends `\\r\\n` in one read and `\\r\\n` + a 40 KB body in the next: only the head
    counts towards MAX_HEADER_BYTES (was: 431)."""
    body = b'{"top_k": 5, "hist_item": [[1, 2, 3]]' + b" " * 40_000 + b"}"

    def rest():
        time.sleep(0.3)  # its own read on the server side
        yield b"\r\n" + body

    answer = raw_http(service.port, _head("/rec/recall", len(body)), rest(), timeout=20)
    assert answer.status == 200, answer.body


def test_a_body_that_stops_arriving_gets_408_within_the_body_timeout(tiny_model, tmp_path):
    svc = Service(tmp_path, {"MODEL_CONFIG_PATH": str(tiny_model[0]),
                             "MILVUS_URI": str(tmp_path / "i.db"), "BODY_TIMEOUT": "1.5"})
    svc.start()
    try:
        t0 = time.monotonic()
        answer = raw_http(svc.port, _head("/rec/recall", 1000) + b"\r\n", iter([b'{"top_k"']),
                          timeout=10)
        assert answer.status == 408 and "body did not arrive within 1.5 s" in answer.body.decode()
        assert 1.4 < time.monotonic() - t0 < 5
    finally:
        svc.stop()


def test_silent_headers_get_a_408_answer_not_a_bare_close(service):
    with socket.create_connection(("127.0.0.1", service.port), timeout=15) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and nothing more
        t0 = time.monotonic()
        got = b""
        while b"\r\n\r\n" not in got:
            chunk = sock.recv(4096)
            assert chunk, f"closed without an answer after {time.monotonic() - t0:.1f} s"
            got += chunk
    assert got.split(b"\r\n")[0] == b"HTTP/1.1 408 Request Timeout"
    assert time.monotonic() - t0 < 10


def test_past_max_connections_new_clients_read_a_json_503_and_are_not_reset(tiny_model,
                                                                            tmp_path):
    svc = Service(tmp_path, {"MODEL_CONFIG_PATH": str(tiny_model[0]),
                             "MILVUS_URI": str(tmp_path / "i.db"), "MAX_CONNECTIONS": "8",
                             "HEADER_TIMEOUT": "20"})
    svc.start()
    idle = [socket.create_connection(("127.0.0.1", svc.port), timeout=10) for _ in range(8)]
    try:
        time.sleep(0.5)
        statuses = []
        body = b" " * 200_000  # still being sent when the 503 is written: no reset may eat it
        for _ in range(20):
            answer = raw_http(svc.port, _head("/rec/recall", len(body)) + b"\r\n",
                              (body[i:i + 8192] for i in range(0, len(body), 8192)), timeout=10)
            statuses.append(answer.status)
            assert "MAX_CONNECTIONS=8" in json.loads(answer.body)["detail"]
        assert statuses == [503] * 20
    finally:
        for sock in idle:
            sock.close()
    time.sleep(0.5)
    with svc.client() as c:  # the idle ones gone, the service answers again
        assert c.get("/healthz").status_code == 200
    svc.stop()


def test_a_token_sent_only_in_a_chunked_trailer_does_not_authorise(tiny_model, tmp_path):
    svc = Service(tmp_path, {"MODEL_CONFIG_PATH": str(tiny_model[0]),
                             "MILVUS_URI": str(tmp_path / "i.db"), "API_TOKEN": "t" * 24})
    svc.start()
    try:
        for path in ("/qa/drop", "/rec/drop", "/rec/insert_data"):
            head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
                    "Trailer: Authorization\r\n\r\n").encode()
            trailer = b"0\r\nAuthorization: Bearer " + b"t" * 24 + b"\r\n\r\n"
            answer = raw_http(svc.port, head, iter([trailer]), timeout=20)
            assert answer.status == 401, (path, answer.status, answer.body)
        with svc.client() as c:  # the header itself still authorises
            r = c.post("/qa/drop", headers={"Authorization": "Bearer " + "t" * 24})
            assert r.status_code == 200
    finally:
        svc.stop()
