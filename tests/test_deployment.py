"""Deployment shapes as operators run them, with real uvicorn processes and real Milvus.

* Milvus Lite: `--workers 2`, and a second process on the same file, are refused with one
  line while the first keeps serving.
* A restart on another EPOCH_NUM than the collection holds: not ready, recall 409 naming both
  epochs; after insert_data the answers equal a fresh service's on that epoch; AUTO_INSERT
  loads the items at start-up instead.
* Milvus server (marked `server`): two service processes on one server running insert_data
  at the same time under recall traffic: no 5xx, no empty or wrong answer, the final count is
  the item table's, no leftover collection. `uvicorn --workers 2` with PROMETHEUS_MULTIPROC_DIR:
  recalls spread over both workers and /metrics, from either worker, counts every one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from reliability_support import SERVICE_DIR, Service, Traffic, free_port, traffic_report

TOKEN = "deployment-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
USERS = [[5, 17, 3], [40, 2], [1, 2, 3, 4, 5, 6, 7, 8], [399, 250], [123], [77, 78, 79, 80]]
GOOD = {"top_k": 20, "hist_item": USERS}
LITE_REFUSAL = "Milvus Lite serves one process per file"


def lite_service(tmp: Path, config: Path, db: Path, name: str, **env: str) -> Service:
    return Service(tmp, {"MODEL_CONFIG_PATH": str(config), "MILVUS_URI": str(db),
                         "API_TOKEN": TOKEN, **env}, name=name)


def recall(http: httpx.Client) -> list[list[int]]:
    r = http.post("/rec/recall", json=GOOD)
    assert r.status_code == 200, r.text
    return r.json()


def insert(http: httpx.Client) -> httpx.Response:
    return http.post("/rec/insert_data", headers=AUTH, timeout=600)


def run_refused(cmd: list[str], env: dict[str, str], timeout: float = 120,
                nonzero: bool = True) -> str:
    """The output of a service start that must end by itself (not serve on)."""
    done = subprocess.run(cmd, cwd=SERVICE_DIR, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode != 0 or not nonzero, done.stdout + done.stderr
    return done.stdout + done.stderr


# ------------------------------------------------------------------ Milvus Lite
@pytest.mark.slow
def test_lite_refuses_a_second_process_and_several_workers(two_epochs, tmp_path):
    db = tmp_path / "items.db"
    first = lite_service(tmp_path, two_epochs, db, "first")
    first.start()
    try:
        with first.client() as http:
            assert insert(http).status_code == 200
            before = recall(http)
            second = lite_service(tmp_path, two_epochs, db, "second")
            uvicorn = str(Path(sys.executable).with_name("uvicorn"))
            log = run_refused([uvicorn, "main:app", "--port", str(free_port())], second.env)
            assert LITE_REFUSAL in log and f"open by process {first.proc.pid}" in log, log
            assert "Traceback" not in log, log  # one line, not a traceback
            # A second service on the first's port is told the port is busy (not the file).
            log = run_refused([uvicorn, "main:app", "--port", str(first.port)], second.env)
            assert f"port {first.port} on 127.0.0.1 is in use" in log, log
            assert LITE_REFUSAL not in log and "Traceback" not in log, log
            # The first keeps serving the same answers, and its writes still work.
            assert recall(http) == before
            assert insert(http).status_code == 200 and recall(http) == before

        # --workers 2 on one Lite file: the second worker is refused and ends the whole server
        # with a non-zero exit (uvicorn's supervisor alone would exit 0), workers included.
        workers = lite_service(tmp_path, two_epochs, tmp_path / "workers.db", "workers")
        log = run_refused([uvicorn, "main:app", "--port", str(free_port()), "--workers", "2"],
                          workers.env, timeout=180)
        assert "ending the uvicorn supervisor" in log, log
        assert "another worker of this server" in log and "uvicorn --workers > 1" in log, log
        assert LITE_REFUSAL in log and "Traceback" not in log, log
        free = ("import sys; from itemstore import ItemStore; "
                "ItemStore(sys.argv[1], 'c', dim=8).count()")
        for _ in range(40):  # the worker that held the file has stopped too
            probe = subprocess.run([sys.executable, "-c", free, str(tmp_path / "workers.db")],
                                   capture_output=True, text=True, timeout=120)
            if probe.returncode == 0:
                break
            time.sleep(0.5)
        assert probe.returncode == 0, probe.stderr[-2000:]
    finally:
        first.stop()


def _children(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of the processes whose parent is ``pid``."""
    out = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                out.append((int(entry.name), (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()))
        except OSError:
            continue
    return out


@pytest.mark.slow
def test_a_killed_milvus_lite_child_is_replaced_and_the_data_kept(tiny_model, tmp_path):
    """SIGKILL the Milvus Lite server under a running service: it starts another on the same
    file and answers again, the items intact (was: 503 for ever, the child a zombie)."""
    svc = lite_service(tmp_path, tiny_model[0], tmp_path / "items.db", "lite_child")
    svc.start()
    try:
        with svc.client() as http:
            assert insert(http).status_code == 200
            before = recall(http)
            (lite,) = [pid for pid, cmd in _children(svc.proc.pid) if "milvus" in cmd]
            os.kill(lite, signal.SIGKILL)
            statuses, deadline = [], time.monotonic() + 60
            while time.monotonic() < deadline:
                r = http.post("/rec/recall", json=GOOD)
                statuses.append(r.status_code)
                if r.status_code == 200:
                    break
                assert r.status_code == 503, r.text
                time.sleep(0.5)
            assert statuses[-1] == 200, statuses
            assert len(statuses) <= 10, statuses  # within a few seconds
            assert recall(http) == before
            assert http.post("/rec/count").json()["count"] == tiny_model[1] - 1
            assert http.get("/readyz").status_code == 200
            new = [pid for pid, cmd in _children(svc.proc.pid) if "milvus" in cmd]
            assert new and lite not in new  # a new child, the dead one reaped
    finally:
        svc.stop()


@pytest.mark.slow
def test_restart_on_another_epoch_refuses_until_insert_data(two_epochs, tmp_path):
    db = tmp_path / "items.db"
    epoch1 = lite_service(tmp_path, two_epochs, db, "epoch1", EPOCH_NUM="1")
    epoch1.start()
    try:
        with epoch1.client() as http:
            assert insert(http).status_code == 200
            answers1 = recall(http)
    finally:
        epoch1.stop()

    epoch0 = lite_service(tmp_path, two_epochs, db, "epoch0", EPOCH_NUM="0")
    epoch0.start()
    try:
        with epoch0.client() as http:
            ready = http.get("/readyz")
            assert ready.status_code == 503, ready.text
            checks = ready.json()["checks"]
            assert checks["model"] == "ok (epoch 0)"
            assert "holds epoch 1" in checks["collection"], checks
            refused = http.post("/rec/recall", json=GOOD)
            assert refused.status_code == 409, refused.text
            detail = refused.json()["detail"]
            assert detail.startswith("the collection holds epoch 1 of ") and str(two_epochs) in detail
            assert "this service serves epoch 0" in detail and "call /rec/insert_data" in detail
            assert "not ready: the collection holds epoch 1" in epoch0.log()
            assert insert(http).status_code == 200
            assert http.get("/readyz").status_code == 200
            answers0 = recall(http)
    finally:
        epoch0.stop()
    assert answers0 != answers1, "the two epochs are too alike to tell apart"

    fresh = lite_service(tmp_path, two_epochs, tmp_path / "fresh.db", "fresh", EPOCH_NUM="0")
    fresh.start()
    try:
        with fresh.client() as http:
            assert insert(http).status_code == 200
            assert recall(http) == answers0
    finally:
        fresh.stop()

    # AUTO_INSERT: the restart on epoch 1 loads its own items before it serves.
    auto = lite_service(tmp_path, two_epochs, db, "auto", EPOCH_NUM="1", AUTO_INSERT="1")
    auto.start()
    try:
        with auto.client() as http:
            assert http.get("/readyz").status_code == 200
            assert recall(http) == answers1
        assert "AUTO_INSERT: the collection holds epoch 0" in auto.log()
    finally:
        auto.stop()


# ------------------------------------------------------------------ Milvus server
@pytest.mark.server
@pytest.mark.slow
def test_two_services_inserting_at_once_on_one_server(request, two_epochs, tmp_path):
    server = request.getfixturevalue("milvus_server")
    collection = f"dep_{uuid.uuid4().hex[:8]}"
    env = {"MODEL_CONFIG_PATH": str(two_epochs), "EPOCH_NUM": "1", "MILVUS_URI": server.uri,
           "DEFAULT_COLLECTION": collection, "API_TOKEN": TOKEN, "MILVUS_TIMEOUT": "10"}
    services = [Service(tmp_path, env, name=f"replica{i}") for i in (0, 1)]
    for s in services:
        s.start()
    try:
        with services[0].client() as http:
            assert insert(http).status_code == 200
            right = recall(http)
            n = http.post("/rec/count").json()["count"]
        bodies = [("/rec/recall", GOOD), ("/rec/count", None)]
        results: dict[int, httpx.Response] = {}
        from itemstore import ItemStore

        watcher = ItemStore(server.uri, collection, dim=16, timeout=30)  # reads the leases

        def insert_on(i: int) -> None:
            with services[i].client(timeout=600) as http:
                results[i] = insert(http)

        reports = []
        for round_ in range(2):
            traffic = [Traffic(s.base, bodies, clients=2, timeout=60) for s in services]
            for t in traffic:
                t.__enter__()
            try:
                time.sleep(0.5)
                threads = [threading.Thread(target=insert_on, args=(i,)) for i in (0, 1)]
                threads[0].start()
                if round_ == 0:  # the second starts once the first's lease is there: a 409
                    deadline = time.monotonic() + 60
                    while not watcher.generations.others_building():
                        assert time.monotonic() < deadline, "the first build never leased"
                        time.sleep(0.02)
                threads[1].start()
                for th in threads:
                    th.join(timeout=600)
                time.sleep(0.5)
            finally:
                for t in traffic:
                    t.__exit__(None, None, None)
            answers = [a for t in traffic for a in t.snapshot()]
            report = traffic_report(answers, {"/rec/recall": [right], "/rec/count": [{"count": n}]})
            report["inserts"] = {i: [r.status_code, r.json()] for i, r in results.items()}
            print(f"two writers, round {round_}:", json.dumps(report))
            reports.append(report)
            statuses = [results[0].status_code, results[1].status_code]
            if round_ == 0:  # started under a live lease: the later one yields
                assert statuses == [200, 409], report["inserts"]
            else:  # at once: both complete (last switch wins), or one yields to the other
                assert sorted(statuses) in ([200, 200], [200, 409]), report["inserts"]
            for r in results.values():
                if r.status_code == 409:
                    assert "another insert_data is loading" in r.json()["detail"], r.text
                    assert "heartbeat" in r.json()["detail"], r.text
            assert report["statuses"].keys() == {"200"}, report
            assert report["empty_answers"] == report["unexpected_answers"] == 0, report
            assert report["transport_errors"] == 0, report
        for s in services:
            with s.client() as http:
                assert recall(http) == right
                assert http.post("/rec/count").json()["count"] == n
        try:
            assert len(watcher.generations.physical_names()) == 1, watcher.generations.names()
            assert watcher.generations.leases() == []
        finally:
            watcher.close()
    finally:
        for s in services:
            if s.alive():
                with s.client(timeout=60) as http:
                    http.post("/qa/drop", headers=AUTH)
            s.stop()


def _counts_per_worker(prom_dir: Path, route: str = "/rec/recall") -> dict[str, float]:
    """Each worker's own count of 200s on ``route``, from its file in PROMETHEUS_MULTIPROC_DIR."""
    from prometheus_client import multiprocess

    counts = {}
    for path in sorted(prom_dir.glob("counter_*.db")):
        total = 0.0
        for metric in multiprocess.MultiProcessCollector.merge([str(path)], accumulate=True):
            for s in metric.samples:
                if (s.name == "recall_http_requests_total" and s.labels.get("route") == route
                        and s.labels.get("status") == "200"):
                    total += s.value
        counts[path.stem.split("_", 1)[1]] = total  # counter_<pid>.db
    return counts


def _scraped_recalls(text: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("recall_http_requests_total{") and 'route="/rec/recall"' in line
               and 'status="200"' in line)


@pytest.mark.server
@pytest.mark.slow
def test_metrics_of_two_workers_count_every_request(request, tiny_model, tmp_path):
    """`uvicorn --workers 2` on a Milvus server with PROMETHEUS_MULTIPROC_DIR: recalls spread
    over both workers (each connection is new), and /metrics, whichever worker answers it,
    counts all of them."""
    server = request.getfixturevalue("milvus_server")
    prom = tmp_path / "prometheus"
    prom.mkdir()
    collection = f"metrics_{uuid.uuid4().hex[:8]}"
    service = Service(tmp_path, {"MODEL_CONFIG_PATH": str(tiny_model[0]), "MILVUS_URI": server.uri,
                                 "DEFAULT_COLLECTION": collection, "API_TOKEN": TOKEN,
                                 "PROMETHEUS_MULTIPROC_DIR": str(prom)},
                      name="two_workers", args=["--workers", "2"])
    service.start(timeout=180)
    try:
        with service.client(timeout=120) as http:
            assert insert(http).status_code == 200
        sent = 0
        while sent < 400:  # until both workers have answered some (each request: a new connection)
            for _ in range(20):
                r = httpx.post(f"{service.base}/rec/recall", json=GOOD, timeout=60)
                assert r.status_code == 200, r.text
                sent += 1
            per_worker = _counts_per_worker(prom)
            if len(per_worker) == 2 and all(per_worker.values()):
                break
        assert len(per_worker) == 2 and all(per_worker.values()), per_worker
        print(f"{sent} recalls, per worker: {per_worker}")
        # Each worker counts its answer just after sending it: wait for the last one.
        deadline = time.monotonic() + 10
        while sum(_counts_per_worker(prom).values()) < sent:
            assert time.monotonic() < deadline, _counts_per_worker(prom)
            time.sleep(0.1)
        for scrapes in range(1, 201):  # new connections, until both workers have answered some
            scrape = httpx.get(f"{service.base}/metrics", timeout=30)
            assert scrape.status_code == 200
            assert _scraped_recalls(scrape.text) == sent
            # (a scrape is counted just after it is answered: the last one may not be yet)
            if scrapes >= 10 and len([n for n in _counts_per_worker(prom, "/metrics").values()
                                      if n]) == 2:
                break
        assert len([n for n in _counts_per_worker(prom, "/metrics").values() if n]) == 2
    finally:
        if service.alive():
            with service.client(timeout=60) as http:
                http.post("/qa/drop", headers=AUTH)
        service.stop()
