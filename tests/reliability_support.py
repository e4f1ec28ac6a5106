"""Reliability helpers shared by tests/test_reliability_*.py and bench/reliability.py.

* `Service`: `cd recommend && uvicorn main:app --port N` as a real process (settings from the
  environment, as users run it), with graceful stop and SIGKILL.
* `Traffic`: N client threads posting recall (and count) requests in a loop, recording the
  start time, latency, status and body of every answer; `summary()` gives percentiles.
* `fuzz`: schemathesis cases generated from the live service's OpenAPI schema (every
  operation, positive and negative data) sent over HTTP; a status histogram and every 5xx.
* `raw_http`: a raw socket request for bodies no well-behaved client would send.

Every network call has a timeout; nothing here mocks Milvus or the model.
"""

from __future__ import annotations

import collections
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from config import Settings

REPO = Path(__file__).resolve().parents[1]
SERVICE_DIR = REPO / "recommend"
# Settings a caller's shell may carry that must not leak into a service under test: every
# setting the service reads (from its own model, so a new one cannot be missed) and uvicorn's.
_SERVICE_VARS = (*Settings.model_fields, "UVICORN_HOST", "PROMETHEUS_MULTIPROC_DIR")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Service:
    """One `uvicorn main:app` process on a free loopback port, started as the tutorial does."""

    def __init__(self, workdir: Path, env: dict[str, str], name: str = "service",
                 args: Sequence[str] = ()) -> None:
        self.workdir, self.name, self.args = workdir, name, list(args)
        self.env = {k: v for k, v in os.environ.items() if k not in _SERVICE_VARS}
        self.env.update(env)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / f"{name}.log"
        self.starts = 0

    def start(self, timeout: float = 120) -> None:
        """Start and wait until /healthz answers (RuntimeError with the log if it does not)."""
        self.starts += 1
        uvicorn = Path(sys.executable).with_name("uvicorn")
        with self.log_path.open("a") as log:
            log.write(f"--- start {self.starts}\n")
            log.flush()
            # No --host: the service's default bind (uvicorn's 127.0.0.1) is part of what is tested.
            self.proc = subprocess.Popen(
                [str(uvicorn), "main:app", "--port", str(self.port), *self.args],
                cwd=SERVICE_DIR, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.proc.returncode}:\n{self.log()[-4000:]}")
            try:
                if httpx.get(f"{self.base}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"{self.name} did not answer in {timeout} s:\n{self.log()[-4000:]}")
            time.sleep(0.2)

    def stop(self, timeout: float = 30) -> float:
        """SIGTERM (uvicorn's graceful shutdown); SIGKILL after ``timeout``. Returns seconds taken."""
        if self.proc is None or self.proc.poll() is not None:
            return 0.0
        t0 = time.monotonic()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError(f"{self.name} ignored SIGTERM for {timeout} s:\n{self.log()[-3000:]}")
        return time.monotonic() - t0

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs (the embedded Milvus Lite child dies with it)."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def client(self, timeout: float = 30, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.base, timeout=timeout, **kwargs)


def listening_addresses(port: int) -> set[str]:
    """Local IPv4/IPv6 addresses (hex, as in /proc/net/tcp*) with a socket listening on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            addr, hexport = local.rsplit(":", 1)
            if state == "0A" and int(hexport, 16) == port:  # 0A = LISTEN
                found.add(addr)
    return found


# ---------------------------------------------------------------------------- traffic
@dataclass
class Answer:
    t: float  # monotonic start time
    seconds: float
    path: str
    status: int  # 0 = no HTTP answer (transport error)
    body: Any  # parsed JSON, or the error text
    request: Any = None  # the JSON body sent


@dataclass
class Traffic:
    """Client threads sending ``requests`` (cycled: (path, json body or None)) until stopped."""

    base: str
    requests: Sequence[tuple[str, Any]]
    clients: int = 4
    timeout: float = 30.0
    pause: float = 0.0
    answers: list[Answer] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def _run(self, offset: int) -> None:
        with httpx.Client(base_url=self.base, timeout=self.timeout) as client:
            i = offset
            while not self._stop.is_set():
                path, body = self.requests[i % len(self.requests)]
                i += 1
                t0 = time.monotonic()
                try:
                    r = client.post(path, json=body)
                    try:
                        parsed = r.json()
                    except ValueError:
                        parsed = r.text
                    answer = Answer(t0, time.monotonic() - t0, path, r.status_code, parsed, body)
                except httpx.HTTPError as exc:
                    answer = Answer(t0, time.monotonic() - t0, path, 0, f"{type(exc).__name__}: {exc}",
                                    body)
                with self._lock:
                    self.answers.append(answer)
                if self.pause:
                    time.sleep(self.pause)

    def __enter__(self) -> Traffic:
        self._threads = [threading.Thread(target=self._run, args=(k,), daemon=True)
                         for k in range(self.clients)]
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=self.timeout + 10)
        if any(t.is_alive() for t in self._threads):
            raise RuntimeError("a traffic thread is still waiting for an answer")

    def snapshot(self) -> list[Answer]:
        with self._lock:
            return list(self.answers)


def percentiles(seconds: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/max in milliseconds (nearest-rank)."""
    if not seconds:
        return {}
    xs = sorted(seconds)

    def rank(p: float) -> float:
        return round(1000 * xs[min(len(xs) - 1, max(0, int(-(-p * len(xs) // 100)) - 1))], 2)

    return {"p50_ms": rank(50), "p95_ms": rank(95), "p99_ms": rank(99),
            "max_ms": round(1000 * xs[-1], 2), "mean_ms": round(1000 * sum(xs) / len(xs), 2)}


def run_load(base: str, bodies: Sequence[dict], clients: int, seconds: float,
             valid: Callable[[dict, Any], bool], timeout: float = 30) -> dict[str, Any]:
    """``clients`` threads posting /rec/recall for ``seconds``; every answer checked by ``valid``."""
    traffic = Traffic(base, [("/rec/recall", b) for b in bodies], clients=clients, timeout=timeout)
    with traffic:
        time.sleep(seconds)
    answers = traffic.snapshot()
    errors: collections.Counter[str] = collections.Counter()
    for a in answers:
        if a.status != 200:
            errors[f"status {a.status}"] += 1
        elif not valid(a.request, a.body):
            errors["invalid answer"] += 1
    span = (max(a.t + a.seconds for a in answers) - min(a.t for a in answers)) if answers else 0
    return {
        "clients": clients,
        "seconds": seconds,
        "requests": len(answers),
        "requests_per_s": round(len(answers) / span, 1) if span else 0.0,
        "errors": sum(errors.values()),
        "error_kinds": dict(errors),
        **percentiles([a.seconds for a in answers]),
    }


# ---------------------------------------------------------------------------- fuzz
def fuzz(base: str, max_cases: int, seed: int = 0, timeout: float = 30,
         recall_share: float = 0.7, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """Send about ``max_cases`` schemathesis-generated requests to every operation of ``base``.

    Cases come from the live /openapi.json (so the service's own limits shape them), in both
    generation modes: positive (valid by the schema) and negative (violating it: wrong types,
    missing fields, out-of-range numbers, other media types). /rec/recall gets ``recall_share``
    of the budget, the rest is split over the other operations (whose input space is tiny, so
    hypothesis may stop before its quota). ``headers`` (e.g. the bearer token) go with every
    request. Returns counts, a status histogram, the 5xx cases,
    transport errors, and 4xx answers without a message.
    """
    import requests
    import schemathesis

    raw = httpx.get(f"{base}/openapi.json", timeout=timeout).json()
    schema = schemathesis.openapi.from_dict(raw)
    operations = [result.ok() for result in schema.get_all_operations()]
    recall_ops = [op for op in operations if op.path == "/rec/recall"]
    others = [op for op in operations if op.path != "/rec/recall"]
    quota = {op.label: max(10, int(max_cases * (1 - recall_share) / max(1, len(others))))
             for op in others}
    for op in recall_ops:
        quota[op.label] = max(10, int(max_cases * recall_share))

    histogram: collections.Counter[int] = collections.Counter()
    per_operation: dict[str, collections.Counter[int]] = {}
    server_errors: list[dict[str, Any]] = []
    transport_errors: list[str] = []
    no_message: list[dict[str, Any]] = []
    generation_errors: list[str] = []
    not_ready: list[str] = []
    session = requests.Session()

    def send(case: Any, mode: Any) -> None:
        if mode == schemathesis.GenerationMode.POSITIVE and isinstance(case.body, (dict, list)):
            # JSON Schema's "integer" admits 5.0, which this API refuses on purpose (test_api.py
            # checks that 422); sending 5 instead keeps positive cases on the path that searches.
            case.body = _integral_floats_to_int(case.body)
        try:
            response = case.call(base_url=base, session=session, headers=headers, timeout=timeout)
        except requests.RequestException as exc:
            transport_errors.append(f"{case.operation.label}: {type(exc).__name__}: {exc}"[:500])
            return
        status = response.status_code
        histogram[status] += 1
        per_operation.setdefault(case.operation.label, collections.Counter())[status] += 1
        text = response.content.decode("utf-8", "replace")[:500]
        if status == 503 and case.operation.path == "/readyz" and '"ready":false' in text:
            not_ready.append(text)  # the probe's documented "not ready" (e.g. after a drop)
        elif status >= 500:
            server_errors.append({"operation": case.operation.label, "status": status,
                                  "request": case.as_curl_command()[:2000], "answer": text})
        elif status >= 400:
            try:
                detail = json.loads(response.content).get("detail")
            except (ValueError, AttributeError):
                detail = None
            if not detail:
                no_message.append({"operation": case.operation.label, "status": status,
                                   "answer": text})

    # The other operations' input space is tiny, so hypothesis stops short of their quota:
    # further rounds (new seeds) on /rec/recall make up the difference.
    plan = [(op, quota[op.label], seed) for op in operations]
    rounds = 0
    while plan:
        op, budget, op_seed = plan.pop(0)
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            n = max(1, budget // 2)
            try:
                strategy = op.as_strategy(generation_mode=mode)
            except Exception as exc:  # e.g. no negative data exists for an operation without input
                generation_errors.append(f"{op.label} {mode.value}: {type(exc).__name__}: {exc}"[:300])
                continue

            run = _runner(strategy, n, op_seed, lambda case, mode=mode: send(case, mode))
            try:
                run()
            except Exception as exc:  # Unsatisfiable etc.: recorded, the run goes on
                generation_errors.append(f"{op.label} {mode.value}: {type(exc).__name__}: {exc}"[:300])
        missing = max_cases - sum(histogram.values()) - len(transport_errors)
        if not plan and missing > 0 and recall_ops and rounds < 10:
            rounds += 1
            plan = [(recall_ops[0], missing + 2, seed + 1000 * rounds)]
    session.close()
    return {
        "cases": sum(histogram.values()) + len(transport_errors),
        "operations": sorted(op.label for op in operations),
        "status_histogram": {str(k): v for k, v in sorted(histogram.items())},
        "per_operation": {k: {str(s): n for s, n in sorted(v.items())}
                          for k, v in sorted(per_operation.items())},
        # 5xx other than /readyz's documented 503 "not ready" answer.
        "server_errors_5xx": len(server_errors),
        "readyz_not_ready_503": len(not_ready),
        "server_error_examples": server_errors[:10],
        "transport_errors": transport_errors[:10],
        "transport_error_count": len(transport_errors),
        "answers_4xx_without_message": no_message[:10],
        "answers_4xx_without_message_count": len(no_message),
        "generation_notes": generation_errors,
    }


def _runner(strategy: Any, n: int, seed: int, call: Callable[[Any], None]) -> Callable[[], None]:
    """A hypothesis run of ``n`` examples drawn from ``strategy``, each passed to ``call``."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hypothesis_seed

    @hypothesis_seed(seed)
    @settings(max_examples=n, deadline=None, database=None, derandomize=False,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def run(case: Any) -> None:
        call(case)

    return run


def _integral_floats_to_int(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_integral_floats_to_int(v) for v in value]
    if isinstance(value, dict):
        return {k: _integral_floats_to_int(v) for k, v in value.items()}
    return value


# ---------------------------------------------------------------------------- raw HTTP
@dataclass
class RawAnswer:
    status: int
    headers: dict[str, str]
    body: bytes
    sent: int  # body bytes the client managed to send before the answer came


def _read_answer(sock: socket.socket, deadline: float) -> RawAnswer | None:
    data = b""
    while b"\r\n\r\n" not in data or not _complete(data):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no complete answer; got {data[:200]!r}")
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            break
        data += chunk
    if b"\r\n\r\n" not in data:
        return None
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (x.split(":", 1) for x in lines[1:] if ":" in x)}
    return RawAnswer(int(lines[0].split()[1]), headers, body, 0)


def _complete(data: bytes) -> bool:
    head, body = data.split(b"\r\n\r\n", 1)
    for line in head.decode("latin-1").split("\r\n")[1:]:
        if line.lower().startswith("content-length:"):
            return len(body) >= int(line.split(":", 1)[1])
    return False


def raw_http(port: int, head: bytes, body_chunks: Iterator[bytes], timeout: float = 30,
             max_send: int = 256 << 20) -> RawAnswer:
    """Send ``head`` then body chunks until the server answers (or ``max_send`` bytes went out).

    The answer is read as soon as the socket turns readable, so ``sent`` tells how much of
    the body the server had been offered when it answered. Raises TimeoutError if it never does.
    """
    deadline = time.monotonic() + timeout
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head)
        sent = 0
        for chunk in body_chunks:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable or sent >= max_send or time.monotonic() > deadline:
                break
            try:
                sock.settimeout(max(0.1, deadline - time.monotonic()))
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break  # the server closed after answering: read what it said
            except TimeoutError:
                break  # it stopped reading without answering yet: wait for the answer
            sent += len(chunk)
        answer = _read_answer(sock, deadline)
        if answer is None:
            raise ConnectionError(f"the server closed the connection without an answer after {sent} bytes")
        answer.sent = sent
        return answer


# ---------------------------------------------------------------------------- scenarios
def traffic_report(answers: Sequence[Answer], expected: dict[str, list[Any]]) -> dict[str, Any]:
    """Statuses, latencies and how the 200 answers compare with the allowed ones.

    ``expected`` maps a path to the answers a 200 may carry (e.g. the old and the new item
    set's answer for the same request); ``matched`` counts per allowed answer, by position.
    """
    statuses = collections.Counter(a.status for a in answers)
    unexpected: list[dict[str, Any]] = []
    matched = {path: [0] * len(allowed) for path, allowed in expected.items()}
    empty = 0
    for a in answers:
        if a.status != 200:
            continue
        if isinstance(a.body, list) and (not a.body or any(not row for row in a.body)):
            empty += 1
        allowed = expected.get(a.path)
        if allowed is None:
            continue
        if a.body in allowed:
            matched[a.path][allowed.index(a.body)] += 1
        else:
            unexpected.append({"path": a.path, "body": str(a.body)[:300]})
    return {
        "requests": len(answers),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "transport_errors": statuses.get(0, 0),
        "transport_error_examples": sorted({str(a.body)[:200] for a in answers if a.status == 0})[:5],
        "server_error_examples": sorted({str(a.body)[:200] for a in answers if a.status >= 500
                                         and a.status != 503})[:5],
        "empty_answers": empty,
        "unexpected_answers": len(unexpected),
        "unexpected_examples": unexpected[:5],
        "matched": matched,
        **percentiles([a.seconds for a in answers]),
    }


_OVERLOADED = "the recall service is overloaded"


def _detail(body: Any) -> Any:
    return body.get("detail", "") if isinstance(body, dict) else ""


def _says_why(body: Any) -> bool:
    """A 503 that names its cause: Milvus down, or the service's own queue."""
    return str(_detail(body)).startswith(("Milvus is unavailable", _OVERLOADED))


def outage_under_traffic(service: Service, server: Any, requests: Sequence[tuple[str, Any]],
                         expected: dict[str, list[Any]], clients: int = 4,
                         outage_seconds: float = 3.0, recover_timeout: float = 120.0,
                         ) -> dict[str, Any]:
    """Stop the Milvus server while ``clients`` send ``requests`` to ``service``; start it again.

    Returns the traffic report plus: the 503 answers and whether each carried the message,
    /healthz during the outage, the slowest answer, and the recovery time (from the server
    answering again to the service's first 200 after the outage), all without restarting
    the service.
    """
    traffic = Traffic(service.base, requests, clients=clients, timeout=120)
    with traffic, httpx.Client(base_url=service.base, timeout=10) as probe:
        time.sleep(1.0)
        t_stop = time.monotonic()
        server.stop()
        t_stopped = time.monotonic()
        time.sleep(outage_seconds)
        health = probe.get("/healthz").status_code
        ready = probe.get("/readyz").status_code
        t_start = time.monotonic()
        server.start()
        t_up = time.monotonic()
        recovered_at = None
        deadline = t_up + recover_timeout
        while time.monotonic() < deadline:
            after = [a for a in traffic.snapshot() if a.t >= t_up]
            last_bad = max((a.t for a in after if a.status != 200), default=t_up)
            good = [a for a in after if a.status == 200 and a.t > last_bad]
            if len(good) >= clients * 3:  # answers have resumed and keep coming
                recovered_at = min(a.t + a.seconds for a in good)
                break
            time.sleep(0.5)
        time.sleep(1.0)
    answers = traffic.snapshot()
    unavailable = [a for a in answers if a.status == 503]
    report = traffic_report(answers, expected)
    report.update({
        "server_stop_seconds": round(t_stopped - t_stop, 2),
        "server_start_seconds": round(t_up - t_start, 2),
        "answers_503": len(unavailable),
        "answers_503_without_message": sum(1 for a in unavailable if not _says_why(a.body)),
        "answers_503_without_message_examples": sorted({
            str(a.body)[:200] for a in unavailable if not _says_why(a.body)})[:5],
        # A request queued behind the failing passes may be told the service is overloaded
        # (its wait budget ran out) rather than that Milvus is down: counted, to be seen.
        "answers_503_overloaded": sum(
            1 for a in unavailable if str(_detail(a.body)).startswith(_OVERLOADED)),
        "healthz_during_outage": health,
        "readyz_during_outage": ready,
        "max_latency_s": round(max((a.seconds for a in answers), default=0.0), 3),
        "max_latency_503_s": round(max((a.seconds for a in unavailable), default=0.0), 3),
        "max_latency_by_path_s": {
            path: round(max(a.seconds for a in answers if a.path == path), 3)
            for path in sorted({a.path for a in answers})},
        "recovery_seconds": None if recovered_at is None else round(recovered_at - t_up, 2),
        "service_alive": service.alive(),
        "service_starts": service.starts,
    })
    return report
