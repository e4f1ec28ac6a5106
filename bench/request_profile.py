"""Where a 1-user /rec/recall request's time goes, from the service's own /metrics.

Sequential requests (one per pass), /metrics read before and after: the Milvus search, the
rest of the pass (the model and the merge), the wait for a pass to take the request (thread
hand-off), the rest of the service's time (body parsing, validation, the JSON answer), and
what the client saw beyond the service's time (loopback HTTP, uvicorn, the client itself).

``loaded``: the same sums around a load of many clients, per pass: how many users a pass
holds, how long its search and the rest of it take, and how busy Milvus was kept (seconds of
search per second of wall time: above 1, searches overlapped).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

SUMS = {"search": "recall_milvus_search_seconds_sum", "pass": "recall_batch_seconds_sum",
        "passes": "recall_batch_seconds_count", "queue": "recall_queue_wait_seconds_sum",
        "users": "recall_batch_users_sum"}
RECALL = "recall_http_request_seconds_sum"  # of the 200s of POST /rec/recall


def scrape(client) -> dict[str, float]:
    got = dict.fromkeys([*SUMS.values(), RECALL], 0.0)
    for line in client.get("/metrics").text.splitlines():
        name, _, value = line.rpartition(" ")
        if name in got:
            got[name] = float(value)
        elif name.startswith(RECALL + "{") and all(
                f'{k}="{v}"' in name for k, v in (("route", "/rec/recall"), ("status", "200"))):
            got[RECALL] += float(value)
    return got


def profile(url: str, histories: list[list[int]], top_k: int, n: int = 200) -> dict[str, Any]:
    import httpx

    bodies = [json.dumps({"top_k": top_k, "hist_item": [h]}) for h in histories]
    headers = {"content-type": "application/json"}
    with httpx.Client(base_url=url, timeout=60) as client:
        for body in bodies[:20]:  # warm-up
            client.post("/rec/recall", content=body, headers=headers).raise_for_status()
        before, t0 = scrape(client), time.perf_counter()
        for i in range(n):
            client.post("/rec/recall", content=bodies[i % len(bodies)],
                        headers=headers).raise_for_status()
        wall = time.perf_counter() - t0
        after = scrape(client)
    d = {k: after[k] - before[k] for k in after}
    per = 1000 / n
    search, pass_ = d[SUMS["search"]] * per, d[SUMS["pass"]] * per
    queue, served = d[SUMS["queue"]] * per, d[RECALL] * per
    return {"requests": n, "passes": int(d[SUMS["passes"]]), "ms": {
        "milvus_search": search, "model_and_merge": pass_ - search, "wait_for_a_pass": queue,
        "rest_of_the_service": served - pass_ - queue, "http_and_client": wall * per - served,
        "total": wall * per}}


def loaded(url: str, load: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Passes under ``load()`` (a load generator's run; its result is kept under "load")."""
    import httpx

    with httpx.Client(base_url=url, timeout=60) as client:
        before, t0 = scrape(client), time.perf_counter()
        ld = load()
        wall = time.perf_counter() - t0
        after = scrape(client)
    d = {k: after[k] - before[k] for k in after}
    passes = max(d[SUMS["passes"]], 1.0)
    return {"load": ld, "passes_per_s": passes / wall, "users_per_pass": d[SUMS["users"]] / passes,
            "pass_ms": d[SUMS["pass"]] * 1000 / passes,
            "search_ms_per_pass": d[SUMS["search"]] * 1000 / passes,
            "milvus_busy": d[SUMS["search"]] / wall,
            "queue_wait_ms": d[SUMS["queue"]] * 1000 / max(ld["requests"], 1)}
