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
