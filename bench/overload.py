"""Overload probe: 20 concurrent maximum-size recalls beside small ones, /healthz sampled meanwhile.

    python bench/overload.py --model CONFIG.yaml [--service-dir recommend] [--rounds 1]

Starts `uvicorn main:app` in --service-dir on a fresh Milvus Lite file, loads the items, then
sends 20 requests of 256 users x 1000 ids (top_k 1000) at once while 2 clients post 1-user
recalls and 1 client polls /healthz. Prints statuses, the 503 messages and latency percentiles.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from reliability_support import free_port, percentiles  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--service-dir", default=str(Path(__file__).resolve().parents[1] / "recommend"))
    ap.add_argument("--items", type=int, default=400)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    port = free_port()
    env = {**os.environ, "MODEL_CONFIG_PATH": args.model, "MILVUS_URI": str(tmp / "items.db")}
    uvicorn = Path(sys.executable).with_name("uvicorn")
    proc = subprocess.Popen([str(uvicorn), "main:app", "--port", str(port)], cwd=args.service_dir,
                            env=env, stdout=open(tmp / "log", "w"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        assert httpx.post(f"{base}/rec/insert_data", timeout=120).status_code == 200
        rng = random.Random(0)
        big = {"top_k": 1000, "hist_item": [[rng.randrange(1, args.items) for _ in range(1000)]
                                            for _ in range(256)]}
        print("big body bytes:", len(json.dumps(big)))
        small = {"top_k": 50, "hist_item": [[5, 17, 3]]}
        stop = threading.Event()
        results: dict[str, list] = collections.defaultdict(list)

        def loop(path: str, body: dict | None, key: str) -> None:
            with httpx.Client(base_url=base, timeout=60) as c:
                while not stop.is_set():
                    t0 = time.monotonic()
                    r = c.get(path) if body is None else c.post(path, json=body)
                    results[key].append((time.monotonic() - t0, r.status_code))
                    time.sleep(0.05)

        def one_big() -> None:
            t0 = time.monotonic()
            r = httpx.post(f"{base}/rec/recall", json=big, timeout=120)
            detail = r.json().get("detail", "") if r.status_code != 200 else ""
            results["big"].append((time.monotonic() - t0, r.status_code, detail[:90],
                                   r.headers.get("retry-after")))

        side = [threading.Thread(target=loop, args=a) for a in
                (("/rec/recall", small, "small"), ("/rec/recall", small, "small"),
                 ("/healthz", None, "healthz"))]
        for t in side:
            t.start()
        time.sleep(1)
        bigs = [threading.Thread(target=one_big) for _ in range(20)]
        for t in bigs:
            t.start()
        for t in bigs:
            t.join()
        time.sleep(1)
        stop.set()
        for t in side:
            t.join()
        print("big statuses:", collections.Counter(r[1] for r in results["big"]))
        print("big 503 details:", collections.Counter((r[2], r[3]) for r in results["big"]
                                                     if r[1] != 200))
        print("big latency:", percentiles([r[0] for r in results["big"]]))
        for key in ("small", "healthz"):
            print(key, collections.Counter(r[1] for r in results[key]),
                  percentiles([r[0] for r in results[key]]))
    finally:
        proc.terminate()
        proc.wait(30)


if __name__ == "__main__":
    main()
