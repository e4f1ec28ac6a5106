"""Flood: 20 concurrent maximum-size recalls beside 1-user recalls and /healthz polling.

For each backend: start `uvicorn main:app` (serve_bench.Service), load the items, then per round
send 20 requests of MAX_BATCH_USERS (256) users x MAX_HISTORY_LEN (1000) random catalogue ids,
top_k 1000, all at once from a child process, while this process keeps 2 clients posting 1-user
recalls and 1 client polling /healthz (each waits 50 ms between requests). The 1-user and
/healthz figures are those of the requests sent while the flood was under way (first big request
sent to last big answer); the same probes in the second before each flood are the idle figures.
Issue targets (bench/run.py): 1-user /rec/recall p99 <= 200 ms and /healthz p95 <= 50 ms.

The big bodies (~1-2 MB of JSON, depending on the catalogue's id width) are over the default
MAX_BODY_BYTES of 1 MiB, so the service runs with serve_bench.Service's 8 MiB: they are read,
parsed and validated, the worst case for the event loop. Every other limit is the default
(MAX_QUEUE_USERS 1024, QUEUE_WAIT_SECONDS 2).

    python bench/flood_bench.py [--profile quick] [--backends lite,server] [--milvus-uri URI]
"""

from __future__ import annotations

import asyncio
import collections
import json
import multiprocessing
import random
import threading
import time
from pathlib import Path
from typing import Any

import common
from common import Profile, log, summary_ms

BIG_REQUESTS = 20
BIG_USERS, BIG_HISTORY, BIG_TOP_K = 256, 1000, 1000
SMALL_CLIENTS = 2
PAUSE = 0.05  # seconds each probe client waits between requests
ROUNDS = {"full": 3, "quick": 3, "tiny": 1}


def big_body(item_count: int, seed: int = 0) -> bytes:
    """One maximum-size request: 256 histories of 1000 random catalogue ids, top_k 1000."""
    rng = random.Random(seed)
    body = {"top_k": BIG_TOP_K, "hist_item": [[rng.randrange(1, item_count) for _ in range(BIG_HISTORY)]
                                              for _ in range(BIG_USERS)]}
    return json.dumps(body, separators=(",", ":")).encode()


def _send_bigs(url: str, body_path: str, n: int, conn: Any) -> None:
    """Child process: ``n`` threads, each with its connection open, post the big body at once
    when the parent says go; sends back each answer's times and status."""
    import httpx

    body = Path(body_path).read_bytes()
    results: list[dict[str, Any]] = []
    ready, go = threading.Barrier(n + 1), threading.Event()

    def one() -> None:
        with httpx.Client(base_url=url, timeout=120) as client:
            client.get("/healthz")  # connected before the flood
            ready.wait()
            go.wait()
            t0 = time.monotonic()
            try:
                r = client.post("/rec/recall", content=body,
                                headers={"content-type": "application/json"})
                status, detail = r.status_code, "" if r.status_code == 200 else r.json()["detail"]
                retry = r.headers.get("retry-after")
            except httpx.HTTPError as exc:
                status, detail, retry = 0, f"{type(exc).__name__}: {exc}", None
            results.append({"start": t0, "end": time.monotonic(), "status": status,
                            "detail": detail, "retry_after": retry})

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    ready.wait()
    conn.send("ready")
    conn.recv()
    go.set()
    for t in threads:
        t.join()
    conn.send(results)


def flood_once(url: str, body_path: Path) -> list[dict[str, Any]]:
    """The 20 big requests from a child process (its GIL is not the probes'), sent after a
    second of quiet once the child is ready: the probes' idle window."""
    ctx = multiprocessing.get_context("spawn")
    mine, theirs = ctx.Pipe()
    child = ctx.Process(target=_send_bigs, args=(url, str(body_path), BIG_REQUESTS, theirs))
    child.start()
    try:
        if not mine.poll(120):
            raise RuntimeError("the flood process did not get ready within 120 s")
        mine.recv()
        time.sleep(1.0)
        mine.send("go")
        return mine.recv()
    finally:
        child.join(60)


async def _probe(session: Any, path: str, body: bytes | None, samples: list, stop: asyncio.Event
                 ) -> None:
    while not stop.is_set():
        t0 = time.monotonic()
        if body is None:
            async with session.get(path) as r:
                await r.read()
        else:
            async with session.post(path, data=body,
                                    headers={"content-type": "application/json"}) as r:
                await r.read()
        samples.append((t0, time.monotonic() - t0, r.status))
        await asyncio.sleep(PAUSE)


async def _run_rounds(url: str, body_path: Path, small_bodies: list[bytes], rounds: int
                      ) -> tuple[list[list[dict[str, Any]]], dict[str, list]]:
    import aiohttp

    probes: dict[str, list] = {"small": [], "healthz": []}
    stop = asyncio.Event()
    floods = []
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(url, timeout=timeout) as session:
        tasks = [asyncio.create_task(_probe(session, "/rec/recall", small_bodies[i], probes["small"],
                                            stop)) for i in range(SMALL_CLIENTS)]
        tasks.append(asyncio.create_task(_probe(session, "/healthz", None, probes["healthz"], stop)))
        loop = asyncio.get_running_loop()
        for _ in range(rounds):
            floods.append(await loop.run_in_executor(None, flood_once, url, body_path))
        await asyncio.sleep(0.5)
        stop.set()
        await asyncio.gather(*tasks)
    return floods, probes


def _phase(samples: list, windows: list[tuple[float, float]], idle: bool) -> list:
    """Samples sent inside a flood window, or (idle) in the second before one."""
    def inside(t: float) -> bool:
        return any((lo - 1.0 <= t < lo) if idle else (lo <= t <= hi) for lo, hi in windows)
    return [s for s in samples if inside(s[0])]


def _probe_figures(samples: list, windows: list[tuple[float, float]]) -> dict[str, Any]:
    during, idle = _phase(samples, windows, False), _phase(samples, windows, True)

    def since_flood(t: float) -> float:  # seconds since its round's flood began
        return round(t - max(lo for lo, _ in windows if lo <= t), 3)
    return {"statuses": dict(collections.Counter(str(s[2]) for s in during)),
            "flood": summary_ms([s[1] for s in during]),
            "idle": summary_ms([s[1] for s in idle]),
            # When the slowest ones were sent, and how long they took: what to look at.
            "slowest_s_and_ms": [[since_flood(t), round(1000 * d, 1)]
                                 for t, d, _ in sorted(during, key=lambda s: -s[1])[:5]]}


def flood(url: str, item_count: int, small_histories: list[list[int]], rounds: int,
          work: Path) -> dict[str, Any]:
    """``rounds`` floods against the service at ``url``; figures of the big requests and probes."""
    body = big_body(item_count)
    body_path = work / "flood_big_body.json"
    body_path.write_bytes(body)
    small = [json.dumps({"top_k": 50, "hist_item": [h]}).encode() for h in small_histories]
    floods, probes = asyncio.run(_run_rounds(url, body_path, small, rounds))
    bigs = [r for f in floods for r in f]
    windows = [(min(r["start"] for r in f), max(r["end"] for r in f)) for f in floods]
    refused = collections.Counter(f"{r['status']} {r['detail'][:100]} (Retry-After "
                                  f"{r['retry_after']})" for r in bigs if r["status"] != 200)
    return {
        "rounds": rounds, "big_body_bytes": len(body),
        "big": {"requests": len(bigs),
                "statuses": dict(collections.Counter(str(r["status"]) for r in bigs)),
                "refused": dict(refused.most_common(8)),
                "latency": summary_ms([r["end"] - r["start"] for r in bigs]),
                "flood_seconds": summary_ms([hi - lo for lo, hi in windows])},
        "small": _probe_figures(probes["small"], windows),
        "healthz": _probe_figures(probes["healthz"], windows),
    }


def run(profile: Profile, backends=("lite",), server_uri: str | None = None,
        **_: Any) -> dict[str, Any]:
    import httpx
    from serve_bench import COLLECTION, Service

    cfg = common.ensure_model(profile)
    item_count = common.item_count(profile)
    histories = [[int(i) for i in h] for h in common.eval_users(profile, SMALL_CLIENTS).histories]
    rounds = ROUNDS.get(profile.name, 1)
    out: dict[str, Any] = {"big_request": f"{BIG_USERS} users x {BIG_HISTORY} ids, top_k "
                           f"{BIG_TOP_K}, {BIG_REQUESTS} at once", "collection": COLLECTION}
    for b in backends:
        uri = common.backend_uri(b, "flood", server_uri)
        svc = Service(cfg, uri, common.WORK / f"uvicorn_flood_{b}.log")
        try:
            svc.wait_ready()
            httpx.post(svc.url + "/rec/insert_data", timeout=1800).raise_for_status()
            out[b] = res = flood(svc.url, item_count, histories, rounds, common.WORK)
        finally:
            svc.stop()
        log(f"flood {b}: big {res['big']['statuses']} (median "
            f"{res['big']['latency']['median_ms']:.0f} ms); 1 user {res['small']['statuses']} "
            f"p50 {res['small']['flood']['median_ms']:.1f} p99 {res['small']['flood']['p99_ms']:.1f}"
            f" ms; /healthz p50 {res['healthz']['flood']['median_ms']:.1f} p95 "
            f"{res['healthz']['flood']['p95_ms']:.1f} p99 {res['healthz']['flood']['p99_ms']:.1f} ms"
            f" (idle p95 {res['healthz']['idle']['p95_ms']:.1f} ms)")
    return out


def main() -> None:
    common.cli(run, __doc__, backends="lite")


if __name__ == "__main__":
    main()
