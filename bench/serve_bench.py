"""Serving: /rec/recall over HTTP on loopback against uvicorn (a subprocess), per backend.

For Milvus Lite and the Milvus server: start `uvicorn main:app` exactly as the README does,
time POST /rec/insert_data of the whole catalogue, wait until Milvus is quiet (settle), then
  * latency (median, p95, p99) of sequential requests of 1, 16 and 128 users;
  * throughput and latency of 1-user requests under 1, 4 and 16 concurrent clients, from the
    load generator below (aiohttp on asyncio, one process, bounded by time and request
    count; it shares the 2 cores with the service, which the figures include);
  * the HTTP floor: the same 16-client load on /healthz (no model, no Milvus);
  * service RSS (uvicorn, and with its children: the Milvus Lite process);
  * the key path (issue 20), on the same users and collection: key rows answered as keys,
    `"return": "items"`, and a `where` on the category column admitting ~1/20 of the items,
    each beside integer ids: 1-user latency (the variants' requests in turn), the most
    clients' throughput and CPU per request (their loads in turn, in rounds), the ratios to
    ids; one request of each first checks that their answers agree;
  * raw search of the same users' interest vectors straight through ItemStore against the
    service's own collection, batched 128 and 16 users per call, and one user per call;
  * the limit: the same searches in process with exact numpy, and with faiss IVF on the item
    store's augmented vectors at the fastest nprobe whose recall@50 against exact search of
    these vectors is >= 0.98 (its recall and the nprobe sweep are reported).
  * a 1-user request's time by stage, and the passes under the most clients' load (users a
    pass, its search and the rest, how busy Milvus was kept), from the service's /metrics;
  * the ways passes run other than the backend's default (VARIANTS: one at a time, two in
    flight paced or unpaced), each started on the same collection between ours and the peer;
  * the peer (issue 22): bench/peer/app.py, the service a user would write from the tutorial
    (one forward and one Milvus search per request, no batching), started with uvicorn after
    ours stops, on the collection ours built: its answers checked against ours for
    AGREE_USERS users, its 1-user latency and the most clients' throughput on the same users,
    and ours / peer ratios.

    python bench/serve_bench.py [--profile quick] [--backends lite,server] [--milvus-uri URI]
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import common
import request_profile
from common import Profile, log, summary_ms

TOP_K = 50
COLLECTION = "bench_serve"
# The key path (issue 20), on the same users: integer ids (the reference), key rows answered
# as keys, as items with metadata ("return": "items"), and key rows filtered on a category.
KEY_PATH = ("ids", "keys", "items", "where")
KEY_PATH_ROUNDS = 6
WHERE_COLUMN, WHERE_SHARE = "category", 1 / 20
# The peer (bench/peer/app.py), run as `uvicorn app:app` in its folder; users whose answers
# are compared with ours before it is measured.
PEER_DIR, PEER_APP = common.BENCH / "peer", "app:app"
AGREE_USERS = 16
# paddle installs a root log handler at INFO, which would print a line per httpx request.
logging.getLogger("httpx").setLevel(logging.WARNING)


class Service:
    """`uvicorn main:app` in recommend/ (or another `app` in `cwd`: the peer), on a free
    loopback port."""

    def __init__(self, config: Path, milvus_uri: str, log_path: Path, workers: int = 1,
                 app: str = "main:app", cwd: Path = common.SERVICE_DIR,
                 env: dict[str, str] | None = None):
        from support import free_port  # tests/support.py

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "MODEL_CONFIG_PATH": str(config), "MILVUS_URI": milvus_uri,
               "EPOCH_NUM": "0", "DEFAULT_COLLECTION": COLLECTION, "MILVUS_TIMEOUT": "120",
               "MAX_BODY_BYTES": str(8 << 20), **(env or {})}
        env.pop("API_TOKEN", None)
        self.log_file = open(log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1",
             "--port", str(self.port), "--log-level", "warning", "--workers", str(workers)],
            cwd=cwd, env=env, stdout=self.log_file, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 180) -> float:
        import httpx

        t0 = time.perf_counter()
        while time.perf_counter() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"uvicorn exited with {self.proc.returncode}; log {self.log_file.name}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return time.perf_counter() - t0
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"uvicorn not up after {timeout}s; log {self.log_file.name}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log_file.close()


def settle(pids: list[int], quiet_cores: float = 0.1, window: float = 1.0,
           limit: float = 60.0) -> float:
    """Seconds until Milvus, after a bulk load, used under ``quiet_cores`` for one ``window``
    (a server builds and compacts segments in the background; figures measured meanwhile
    would be the load's, not serving's), at most ``limit``."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < limit:
        with common.CpuMeter({"milvus": pids}) as cpu:
            time.sleep(window)
        if cpu.cores["milvus"] < quiet_cores:
            break
    return time.perf_counter() - t0


def _body(histories: list[list[Any]], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"top_k": TOP_K, "hist_item": histories, **(extra or {})}


def sequential_latency(url: str, histories: list[list[int]], users: int, reps: int) -> dict[str, float]:
    import httpx

    times = []
    with httpx.Client(base_url=url, timeout=120) as client:
        for i in range(reps + 1):
            lo = (i * users) % max(1, len(histories) - users + 1)
            t0 = time.perf_counter()
            r = client.post("/rec/recall", json=_body(histories[lo:lo + users]))
            dt = time.perf_counter() - t0
            r.raise_for_status()
            if i:  # the first request is the warm-up
                times.append(dt)
    return summary_ms(times)


async def _load(url: str, bodies: list[bytes], clients: int, seconds: float, max_requests: int,
                path: str = "/rec/recall", latencies: list[float] | None = None) -> dict[str, Any]:
    """`clients` connections, each posting the next body as soon as its last answer came back.

    aiohttp, not httpx: httpx spent ~6 ms of CPU per request here (0.8 of the 2 cores at
    130 requests/s), so the load generator was what the figures measured; aiohttp spends
    ~0.5 ms.
    """
    import aiohttp

    latencies = [] if latencies is None else latencies  # the caller's list: pooled over runs
    n0 = len(latencies)
    errors = 0
    counter = 0
    headers = {"content-type": "application/json"}
    stop_at = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=clients)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(url, connector=connector, timeout=timeout) as session:
        async def post(body: bytes) -> int:
            async with session.post(path, data=body, headers=headers) as r:
                await r.read()
                return r.status

        async def worker() -> None:
            nonlocal counter, errors
            while time.perf_counter() < stop_at and counter < max_requests:
                i = counter
                counter += 1
                t0 = time.perf_counter()
                status = await post(bodies[i % len(bodies)])
                latencies.append(time.perf_counter() - t0)
                errors += status != 200

        # one warm-up request per client connection
        await asyncio.gather(*(post(bodies[0]) for _ in range(clients)))
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - t0
    n = len(latencies) - n0
    return {"clients": clients, "requests": n, "errors": errors,
            "seconds": elapsed, "users_per_s": n / elapsed, **summary_ms(latencies[n0:])}


def load_test(url: str, histories: list[list[int]], clients: int, seconds: float,
              max_requests: int) -> dict[str, Any]:
    """1-user /rec/recall requests from `clients` concurrent clients (bounded by time and count)."""
    bodies = [json.dumps(_body([h])).encode() for h in histories]
    return asyncio.run(_load(url, bodies, clients, seconds, max_requests))


def http_floor(url: str, clients: int, seconds: float, max_requests: int) -> dict[str, Any]:
    """The same load on /healthz (no model, no Milvus): what HTTP + this load generator allow."""
    return asyncio.run(_load(url, [b"{}"], clients, seconds, max_requests, path="/healthz"))


def raw_search(search, vectors: np.ndarray, per_vector: int, users_per_call: int) -> dict[str, float]:
    """users/s searching [U, K, D] vectors `users_per_call` users per call, as the service would."""
    u, k, d = vectors.shape
    flat = vectors.reshape(u * k, d)
    search(flat[: k * users_per_call], per_vector)  # warm-up
    times = []
    for lo in range(0, u, users_per_call):
        t0 = time.perf_counter()
        search(flat[lo * k:(lo + users_per_call) * k], per_vector)
        times.append(time.perf_counter() - t0)
    return {"users_per_call": users_per_call, "users_per_s": u / sum(times),
            "call": summary_ms(times)}


def where_filter(catalogue, column: str = WHERE_COLUMN, share: float = WHERE_SHARE
                 ) -> tuple[dict[str, list[str]], float]:
    """({column: values}, the share of the items it admits): whole categories, in a seeded
    order, until about `share` of the catalogue is admitted."""
    if catalogue is None or column not in catalogue.columns:
        raise RuntimeError(f"the served model's item map has no {column!r} column "
                           "(common.ensure_item_map writes one)")
    values = catalogue.columns[column][1:].astype(str)
    names, counts = np.unique(values, return_counts=True)
    chosen, admitted = [], 0
    for i in np.random.default_rng(0).permutation(len(names)):
        if admitted >= share * len(values):
            break
        chosen.append(str(names[i]))
        admitted += int(counts[i])
    return {column: sorted(chosen)}, admitted / len(values)


def key_path_requests(histories: list[list[int]], catalogue, where: dict[str, list[str]]
                      ) -> dict[str, tuple[list[list[Any]], dict[str, Any] | None]]:
    """(history rows, extra body fields) of each KEY_PATH variant, for the same users."""
    keys = [catalogue.keys[np.asarray(h, np.int64)].tolist() for h in histories]
    return {"ids": (histories, None), "keys": (keys, None),
            "items": (keys, {"return": "items"}), "where": (keys, {"where": where})}


def check_key_path(url: str, requests: dict[str, tuple[list[list[Any]], dict[str, Any] | None]],
                   catalogue, where: dict[str, list[str]], users: int = 16) -> dict[str, Any]:
    """One request of `users` users per variant: keys name the items ids do, items list the
    same keys with their metadata, the filter admits only what it should."""
    import httpx

    got = {}
    for name, (rows, extra) in requests.items():
        r = httpx.post(url + "/rec/recall", json=_body(rows[:users], extra), timeout=120)
        r.raise_for_status()
        got[name] = r.json()
    ((column, values),) = where.items()
    ids_of = catalogue.ids_by_key()
    value_of = catalogue.columns[column]
    return {
        "keys_equal_ids": got["keys"] == [catalogue.keys[np.asarray(r, np.int64)].tolist()
                                          for r in got["ids"]],
        "items_equal_keys": [[x["item"] for x in row] for row in got["items"]] == got["keys"],
        "items_have_metadata": all(set(catalogue.columns) <= set(x) for row in got["items"]
                                   for x in row),
        "where_admits_only": all(value_of[ids_of[k]] in values for row in got["where"] for k in row),
        "where_items_per_user": float(np.mean([len(row) for row in got["where"]])),
    }


def alternating_times(url: str, bodies: dict[str, list[bytes]], reps: int) -> dict[str, list[float]]:
    """Seconds of `reps` sequential 1-user requests of each variant, taken in turn request by
    request (the same user for all at each step), after one warm-up request of each."""
    import httpx

    times: dict[str, list[float]] = {v: [] for v in bodies}
    headers = {"content-type": "application/json"}
    with httpx.Client(base_url=url, timeout=120) as client:
        for i in range(reps + 1):
            for v, rows in bodies.items():
                t0 = time.perf_counter()
                r = client.post("/rec/recall", content=rows[i % len(rows)], headers=headers)
                dt = time.perf_counter() - t0
                r.raise_for_status()
                if i:
                    times[v].append(dt)
    return times


def passes(url: str) -> tuple[float, float]:
    """(users, passes) the service's recall batcher has answered so far, from /metrics."""
    import httpx

    got = dict.fromkeys(("recall_batch_users_sum", "recall_batch_users_count"), 0.0)
    for line in httpx.get(url + "/metrics", timeout=30).text.splitlines():
        name, _, value = line.partition(" ")
        if name in got:
            got[name] = float(value)
    return got["recall_batch_users_sum"], got["recall_batch_users_count"]


def key_path(url: str, histories: list[list[int]], catalogue, profile: Profile,
             groups: dict[str, list[int]]) -> dict[str, Any]:
    """Each KEY_PATH variant's 1-user latency (requests of the variants in turn) and the most
    clients' throughput (loads of the variants in turn, rotated each round, so drifting machine
    load hits all alike), with the CPU ms per request of each group of processes (`groups`)."""
    where, share = where_filter(catalogue)
    requests = key_path_requests(histories, catalogue, where)
    bodies = {v: [json.dumps(_body([h], extra)).encode() for h in rows]
              for v, (rows, extra) in requests.items()}
    clients = max(profile.concurrency)
    out: dict[str, Any] = {"where_filter": where, "where_share": share, "clients": clients,
                           "rounds": KEY_PATH_ROUNDS,
                           "checks": check_key_path(url, requests, catalogue, where)}
    # Twice the 1-user requests and 3x the load time of the ids figures above: the ratios
    # compare figures a few percent apart.
    times = alternating_times(url, bodies, 2 * dict(profile.lat_reps)[1])
    seconds = profile.load_seconds * 3 / KEY_PATH_ROUNDS
    under_load: dict[str, list[float]] = {v: [] for v in KEY_PATH}
    loads: dict[str, list[dict[str, Any]]] = {v: [] for v in KEY_PATH}
    cpu = {v: dict.fromkeys(groups, 0.0) for v in KEY_PATH}
    batched = {v: np.zeros(2) for v in KEY_PATH}  # users, passes
    for r in range(KEY_PATH_ROUNDS):
        for v in KEY_PATH[r % len(KEY_PATH):] + KEY_PATH[:r % len(KEY_PATH)]:
            before = np.array(passes(url))
            with common.CpuMeter(groups) as meter:
                loads[v].append(asyncio.run(_load(url, bodies[v], clients, seconds,
                                                  profile.load_max_requests,
                                                  latencies=under_load[v])))
            batched[v] += np.array(passes(url)) - before
            for g, used in meter.seconds.items():
                cpu[v][g] += used
    for v in KEY_PATH:
        n, secs = sum(x["requests"] for x in loads[v]), sum(x["seconds"] for x in loads[v])
        served = n + clients * KEY_PATH_ROUNDS  # with each client's warm-up request
        out[v] = {"latency_1": summary_ms(times[v]),
                  "load": {"clients": clients, "requests": n,
                           "errors": sum(x["errors"] for x in loads[v]), "seconds": secs,
                           "users_per_s": n / secs, **summary_ms(under_load[v]),
                           "cpu_ms_per_request": {g: 1000 * c / served
                                                  for g, c in cpu[v].items()},
                           # the batcher's passes: fewer users a pass, more searches a user
                           "users_per_pass": batched[v][0] / max(batched[v][1], 1)}}
        out[v]["load"]["rounds_users_per_s"] = [x["users_per_s"] for x in loads[v]]
    ids = out["ids"]
    for v in KEY_PATH[1:]:
        lat = out[v]["latency_1"]
        # Throughput: the median over rounds of the ratio to the ids load of the same round,
        # so a burst of another job's work during one load does not decide it.
        out[v]["vs_ids"] = {
            "median_ratio": lat["median_ms"] / ids["latency_1"]["median_ms"],
            "p99_ratio": lat["p99_ms"] / ids["latency_1"]["p99_ms"],
            "throughput_ratio": float(np.median([a["users_per_s"] / b["users_per_s"]
                                                 for a, b in zip(loads[v], loads["ids"])]))}
    return out


def bench_backend(backend: str, profile: Profile, cfg: Path, tower, histories: list[list[int]],
                  server_uri: str | None) -> dict[str, Any]:
    import httpx
    from itemstore import ItemStore

    uri = common.backend_uri(backend, "serve", server_uri)
    svc = Service(cfg, uri, common.WORK / f"uvicorn_{backend}.log")
    out: dict[str, Any] = {}
    try:
        out["startup_seconds"] = svc.wait_ready()
        t0 = time.perf_counter()
        r = httpx.post(svc.url + "/rec/insert_data", timeout=1800)
        r.raise_for_status()
        out["insert_data_seconds"] = time.perf_counter() - t0
        out["insert_data_reply"] = r.json()
        out["settle_seconds"] = settle(common.milvus_pids())
        log(f"serve {backend}: up in {out['startup_seconds']:.1f}s; insert_data "
            f"{out['insert_data_seconds']:.1f}s; Milvus quiet {out['settle_seconds']:.1f}s later")
        ours_answers = answers(svc.url, histories[:AGREE_USERS])  # the peer's must equal them
        out["latency"] = {}
        for users, reps in profile.lat_reps:
            out["latency"][str(users)] = lat = sequential_latency(svc.url, histories, users, reps)
            log(f"serve {backend}: {users} user(s)/request: median {lat['median_ms']:.1f} ms, "
                f"p95 {lat['p95_ms']:.1f}, p99 {lat['p99_ms']:.1f}")
        out["load"] = {}
        # Cores used during each load: the service's Python process, Milvus (Lite's child or
        # the server), and this process (the load generator) - where the 2 cores went.
        groups = {"service": [svc.proc.pid], "milvus": common.milvus_pids(),
                  "load_generator": [os.getpid()]}
        for c in profile.concurrency:
            with common.CpuMeter(groups) as cpu:
                ld = load_test(svc.url, histories, c, profile.load_seconds,
                               profile.load_max_requests)
            out["load"][str(c)] = ld = {**ld, "cpu_cores": cpu.cores}
            log(f"serve {backend}: {c} clients: {ld['users_per_s']:.0f} users/s, median "
                f"{ld['median_ms']:.1f} ms, p99 {ld['p99_ms']:.1f} ms ({ld['requests']} requests, "
                f"{ld['errors']} errors); cores used {cpu.cores}")
        c = max(profile.concurrency)
        out["http_floor"] = floor = http_floor(svc.url, c, profile.load_seconds,
                                               profile.load_max_requests)
        log(f"serve {backend}: HTTP floor, /healthz under {c} clients: "
            f"{floor['users_per_s']:.0f} requests/s, median {floor['median_ms']:.1f} ms")
        out["memory"] = common.tree_rss_mb(svc.proc.pid)
        out["key_path"] = kp = key_path(svc.url, histories, tower.catalogue, profile, groups)
        for v in KEY_PATH:
            lat, ld = kp[v]["latency_1"], kp[v]["load"]
            log(f"serve {backend}: key path {v}: 1 user median {lat['median_ms']:.1f} ms, p99 "
                f"{lat['p99_ms']:.1f}; {kp['clients']} clients {ld['users_per_s']:.0f} users/s "
                f"({ld['errors']} errors), {ld['users_per_pass']:.1f} users a pass, CPU ms a request "
                + ", ".join(f"{g} {c:.2f}" for g, c in ld["cpu_ms_per_request"].items())
                + ("" if v == "ids" else
                f"; vs ids: median x{kp[v]['vs_ids']['median_ratio']:.3f}, throughput "
                f"x{kp[v]['vs_ids']['throughput_ratio']:.3f}"))
        log(f"serve {backend}: key path where {kp['where_filter']} admits {kp['where_share']:.1%} of "
            f"the items; checks {kp['checks']}")
        out["profile"] = prof = request_profile.profile(svc.url, histories, TOP_K,
                                                        n=dict(profile.lat_reps)[1])
        log(f"serve {backend}: a 1-user request, ms: "
            + ", ".join(f"{k} {v:.2f}" for k, v in prof["ms"].items()))
        out["passes_under_load"] = pl = request_profile.loaded(svc.url, lambda: load_test(
            svc.url, histories, c, profile.load_seconds, profile.load_max_requests))
        log(f"serve {backend}: {c} clients, passes: {pl['passes_per_s']:.0f}/s of "
            f"{pl['users_per_pass']:.1f} users, {pl['pass_ms']:.1f} ms each, search "
            f"{pl['search_ms_per_pass']:.1f} ms; Milvus busy {pl['milvus_busy']:.2f}; queue wait "
            f"{pl['queue_wait_ms']:.1f} ms a request")
    finally:
        svc.stop()
    out["default_passes"] = DEFAULT_PASSES[backend]
    others = [name for name in VARIANTS if name != DEFAULT_PASSES[backend]]
    for name in others:
        out[name] = variant(backend, name, cfg, uri, histories, profile)
    if backend == "server":
        out["load_2_workers"] = two_workers(cfg, uri, histories, profile)
    # After the service stops: Milvus Lite opens a .db file in one process at a time, and
    # this process keeps it once it has opened it (below), so the peer goes first.
    out["peer"] = bench_peer(backend, profile, cfg, uri, tower, histories, out, ours_answers)
    out["default_over"] = {}
    for name in others:
        out["default_over"][name] = over = ours_over_peer(
            out, out["peer"]["ours_after"], out[name], max(profile.concurrency))
        log(f"serve {backend}: the default ({DEFAULT_PASSES[backend]}) / {name}: median "
            f"x{over['median_ratio']:.2f}, throughput x{over['throughput_ratio']:.2f}")
    # Raw search of the same users' vectors against the service's own collection, with the
    # per-vector limit the service asks for (top_k + history length when excluding history).
    vectors = tower.interests(histories)
    per_vector = TOP_K + max(len(np.unique(tower.known_items(h))) for h in histories)
    store = ItemStore(uri, COLLECTION, dim=tower.dim, timeout=120)
    try:
        out["raw_search"] = {"batched": raw_search(store.search, vectors, per_vector, 128),
                             # the largest batch 16 one-user clients can form
                             "batched_16": raw_search(store.search, vectors, per_vector, 16),
                             "per_user": raw_search(store.search, vectors, per_vector, 1),
                             "per_vector_k": per_vector}
    finally:
        store.close()
    raw = out["raw_search"]
    log(f"serve {backend}: raw search {raw['batched']['users_per_s']:.0f} users/s batched by "
        f"128, {raw['batched_16']['users_per_s']:.0f} by 16, "
        f"{raw['per_user']['users_per_s']:.0f} users/s one user per call; "
        f"service RSS {out['memory']['rss_mb']:.0f} MB (tree {out['memory']['tree_rss_mb']:.0f} MB)")
    return out


# How passes run: one after another, two in flight (paced), two unpaced. Each backend runs its
# default (config.Settings.passes_in_flight) and, between ours before and after the peer, the
# other two: what the default gains over each.
VARIANTS = {"serial": {"PASSES_IN_FLIGHT": "1"}, "overlapped": {"PASSES_IN_FLIGHT": "2"},
            "unpaced": {"PASSES_IN_FLIGHT": "2", "PACE_PASSES": "false"}}
DEFAULT_PASSES = {"lite": "serial", "server": "overlapped"}
PASSES_LABEL = {"serial": "one at a time (`PASSES_IN_FLIGHT=1`)",
                "overlapped": "two in flight, paced (`PASSES_IN_FLIGHT=2`)",
                "unpaced": "two in flight, unpaced (`PASSES_IN_FLIGHT=2 PACE_PASSES=false`)"}


def variant(backend: str, name: str, cfg: Path, uri: str, histories: list[list[int]],
            profile: Profile) -> dict[str, Any]:
    """The default's figures (one_and_most) for ours under VARIANTS[name], same collection and
    users."""
    env = VARIANTS[name]
    svc = Service(cfg, uri, common.WORK / f"uvicorn_{backend}_{name}.log", env=env)
    try:
        svc.wait_ready()
        out = one_and_most(svc, histories, profile)
    finally:
        svc.stop()
    c = str(max(profile.concurrency))
    log(f"serve {backend}: {' '.join(f'{k}={v}' for k, v in env.items())}: 1 user median "
        f"{out['latency']['1']['median_ms']:.1f} ms; {c} clients "
        f"{out['load'][c]['users_per_s']:.0f} users/s")
    return out


def two_workers(cfg: Path, uri: str, histories: list[list[int]], profile: Profile) -> dict[str, Any]:
    """`uvicorn --workers 2` on the collection just loaded: the most clients' load, and its cores.

    Each worker batches on its own and the server runs their searches side by side (Lite
    cannot: one process per file)."""
    svc = Service(cfg, uri, common.WORK / "uvicorn_server_2_workers.log", workers=2)
    try:
        svc.wait_ready()
        c = max(profile.concurrency)
        # the uvicorn parent and its worker processes
        groups = {"service": common.process_tree(svc.proc.pid), "milvus": common.milvus_pids(),
                  "load_generator": [os.getpid()]}
        with common.CpuMeter(groups) as cpu:
            ld = load_test(svc.url, histories, c, profile.load_seconds, profile.load_max_requests)
        out = {str(c): {**ld, "cpu_cores": cpu.cores}}
        log(f"serve server, 2 workers: {c} clients: {ld['users_per_s']:.0f} users/s, median "
            f"{ld['median_ms']:.1f} ms, p99 {ld['p99_ms']:.1f} ms ({ld['errors']} errors); "
            f"cores used {cpu.cores}")
        return out
    finally:
        svc.stop()


def answers(url: str, histories: list[list[int]]) -> list[list[int]]:
    """Each user's /rec/recall answer, one 1-user request each (as the loads send them)."""
    import httpx

    with httpx.Client(base_url=url, timeout=120) as client:
        return [client.post("/rec/recall", json=_body([h])).raise_for_status().json()[0]
                for h in histories]


def agreement(tower, histories: list[list[int]], ours: list[list[int]],
              theirs: list[list[int]]) -> dict[str, Any]:
    """How many users got the same ids in the same order from both services, and how many
    up to ties: at every place either the same id or one of the same score (each item's best
    inner product over the user's unmasked interests, recomputed here; 1e-5 relative)."""
    ids, items = tower.item_embeddings()
    row_of = np.zeros(tower.item_count, np.int64)
    row_of[ids] = np.arange(len(ids))
    vectors = tower.interests(histories)
    identical, tied, differ = 0, 0, []
    for u, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        live = vectors[u][np.any(vectors[u] != 0, axis=1)]

        def score(i: int) -> float:
            return float((live @ items[row_of[i]]).max())
        same = a == b
        ties = same or len(a) == len(b) and all(
            x == y or abs(score(x) - score(y)) <= 1e-5 * max(1.0, abs(score(x)))
            for x, y in zip(a, b))
        identical += same
        tied += ties
        if not ties and len(differ) < 3:
            first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            differ.append({"user": u, "lengths": [len(a), len(b)], "first_difference": first})
    return {"users": len(ours), "identical": identical, "equal_up_to_ties": tied,
            "agree": tied == len(ours), "differences": differ}


def one_and_most(svc: Service, histories: list[list[int]], profile: Profile) -> dict[str, Any]:
    """The figures compared with the peer's: 1-user latency of sequential requests, and the
    most clients' load of 1-user requests with the cores it used."""
    c = max(profile.concurrency)
    # As many requests first as ours answered before its own figures: without them ours,
    # restarted after the peer, had a 13-18 ms 1-user median against 4-8 before it (quick).
    answers(svc.url, histories[:AGREE_USERS])
    lat = sequential_latency(svc.url, histories, 1, dict(profile.lat_reps)[1])
    groups = {"service": [svc.proc.pid], "milvus": common.milvus_pids(),
              "load_generator": [os.getpid()]}
    with common.CpuMeter(groups) as cpu:
        ld = load_test(svc.url, histories, c, profile.load_seconds, profile.load_max_requests)
    return {"latency": {"1": lat}, "load": {str(c): {**ld, "cpu_cores": cpu.cores}}}


def ours_over_peer(before: dict[str, Any], after: dict[str, Any], peer: dict[str, Any],
                   clients: int) -> dict[str, Any]:
    """Ours / the peer's 1-user median and p99 and most clients' users/s, ours being the mean
    of its figures before and after the peer (each side's own ratios beside)."""
    def figures(e: dict[str, Any]) -> np.ndarray:
        lat, ld = e["latency"]["1"], e["load"][str(clients)]
        return np.array([lat["median_ms"], lat["p99_ms"], ld["users_per_s"]])

    b, a, p = figures(before), figures(after), figures(peer)
    mean, rb, ra = ((b + a) / 2 / p).tolist(), (b / p).tolist(), (a / p).tolist()
    return {"clients": clients, "median_ratio": mean[0], "p99_ratio": mean[1],
            "throughput_ratio": mean[2],
            "before_after": {"median_ratio": [rb[0], ra[0]], "throughput_ratio": [rb[2], ra[2]]}}


def bench_peer(backend: str, profile: Profile, cfg: Path, uri: str, tower,
               histories: list[list[int]], ours: dict[str, Any],
               ours_answers: list[list[int]]) -> dict[str, Any]:
    """The peer (bench/peer/app.py) on the collection our service built, which has stopped
    (Milvus Lite: one process per file): answers against ours, then the 1-user latency and
    the most clients' load on the same users; then ours once more (A-B-A: a steady drift of
    the shared machine's load cancels in the ratios, which use the mean of ours' two)."""
    import httpx

    svc = Service(cfg, uri, common.WORK / f"uvicorn_peer_{backend}.log", app=PEER_APP,
                  cwd=PEER_DIR)
    out: dict[str, Any] = {"app": "bench/peer/app.py"}
    try:
        out["startup_seconds"] = svc.wait_ready()
        users = histories[:len(ours_answers)]
        out["agreement"] = agreement(tower, users, ours_answers, answers(svc.url, users))
        # The same users in one request too: the peer's several-user path answers alike.
        many = httpx.post(svc.url + "/rec/recall", json=_body(users), timeout=120)
        out["agreement"]["one_request_equals_single"] = \
            many.raise_for_status().json() == answers(svc.url, users)
        out.update(one_and_most(svc, histories, profile))
        out["memory"] = common.tree_rss_mb(svc.proc.pid)
    finally:
        svc.stop()
    again = Service(cfg, uri, common.WORK / f"uvicorn_{backend}_after_peer.log")
    try:
        again.wait_ready()
        out["ours_after"] = one_and_most(again, histories, profile)
    finally:
        again.stop()
    c = max(profile.concurrency)
    out["ours_over_peer"] = vs = ours_over_peer(ours, out["ours_after"], out, c)
    ag, lat, ld = out["agreement"], out["latency"]["1"], out["load"][str(c)]
    (mb, ma), (tb, ta) = vs["before_after"]["median_ratio"], vs["before_after"]["throughput_ratio"]
    log(f"serve {backend}: peer answers: {ag['identical']}/{ag['users']} identical, "
        f"{ag['equal_up_to_ties']} equal up to ties; 1 user median {lat['median_ms']:.1f} ms, "
        f"p99 {lat['p99_ms']:.1f}; {c} clients {ld['users_per_s']:.0f} users/s (median "
        f"{ld['median_ms']:.1f}, p99 {ld['p99_ms']:.1f} ms, {ld['errors']} errors); ours / peer "
        f"(ours before, after): median x{vs['median_ratio']:.2f} ({mb:.2f}, {ma:.2f}), "
        f"throughput x{vs['throughput_ratio']:.2f} ({tb:.2f}, {ta:.2f})")
    return out


def limits(tower, histories: list[list[int]]) -> dict[str, Any]:
    """In-process search of the same vectors: the ceiling for serving on this machine."""
    from store_bench import in_process_limits

    ids, items = tower.item_embeddings()
    vectors = tower.interests(histories)
    per_vector = TOP_K + max(len(np.unique(tower.known_items(h))) for h in histories)
    flat = vectors.reshape(-1, vectors.shape[-1])
    flat = flat[np.any(flat != 0, axis=1)]  # masked interests are never searched
    out: dict[str, Any] = {}
    for name, backend in in_process_limits(ids, items, flat, per_vector).items():
        out[name] = {"batched": raw_search(backend.search, vectors, per_vector, 128),
                     "per_user": raw_search(backend.search, vectors, per_vector, 1)}
        if hasattr(backend, "setting"):
            out[name].update(setting=backend.setting, sweep=backend.sweep,
                             build_seconds=backend.build_seconds)
        log(f"serve limit {name}: {out[name]['batched']['users_per_s']:.0f} users/s batched by "
            f"128, 1 user {out[name]['per_user']['call']['median_ms']:.2f} ms"
            + (f"; recall@50 vs exact {backend.setting['recall@50_vs_exact']:.4f} at nprobe "
               f"{backend.setting['nprobe']}" if hasattr(backend, "setting") else ""))
    return out


def run(profile: Profile, backends=("lite", "server"), server_uri: str | None = None,
        **_: Any) -> dict[str, Any]:
    cfg = common.ensure_model(profile)
    tower = common.load_tower(profile)
    n_users = max(256, max(u for u, _ in profile.lat_reps))
    histories = [[int(i) for i in h] for h in common.eval_users(profile, n_users).histories]
    log(f"serve: {len(histories)} distinct user histories, backends {','.join(backends)}")
    out: dict[str, Any] = {"load_generator": "aiohttp (asyncio), in the bench process",
                           "users": len(histories)}
    for b in backends:
        out[b] = bench_backend(b, profile, cfg, tower, histories, server_uri)
    out["limit"] = limits(tower, histories)
    return out


def main() -> None:
    common.cli(run, __doc__, backends="lite")


if __name__ == "__main__":
    main()
