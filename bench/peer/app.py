"""The recall service a user would write from the tutorial: the peer bench/serve_bench.py
measures beside ours, on the same model and the same Milvus collection.

Plain FastAPI + uvicorn: each request gets one forward pass of the user tower (Paddle's eager
mode) and one `MilvusClient.search` of its users' interest vectors; the K lists of a user are
merged in Python (best score per item, history and id 0 left out). Nothing is batched across
requests. Request and answer are those of our `POST /rec/recall`; the settings are read from
the same environment variables (MODEL_CONFIG_PATH, EPOCH_NUM, MILVUS_URI, DEFAULT_COLLECTION):

    cd bench/peer && MODEL_CONFIG_PATH=... MILVUS_URI=... DEFAULT_COLLECTION=... uvicorn app:app

It searches the collection `POST /rec/insert_data` of our service built, so that service must
have loaded it (and, on Milvus Lite, have stopped: one process per .db file).
"""

from __future__ import annotations

import os
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import numpy as np
from fastapi import FastAPI
from pydantic import BaseModel, Field

# pymilvus reads MILVUS_URI when it is imported and refuses a Milvus Lite path there.
MILVUS_URI = os.environ.pop("MILVUS_URI", "http://127.0.0.1:19530")
from pymilvus import MilvusClient  # noqa: E402

from mind.user_tower import UserTower  # noqa: E402

MODEL_CONFIG_PATH = os.environ["MODEL_CONFIG_PATH"]
EPOCH_NUM = int(os.environ["EPOCH_NUM"]) if os.environ.get("EPOCH_NUM") else None
COLLECTION = os.environ.get("DEFAULT_COLLECTION", "mind_items")
# The search parameters of recommend/itemstore/store.py (IVF_FLAT, nlist 256).
SEARCH_PARAMS = {"metric_type": "IP", "params": {"nprobe": 8}}


def served_collection(client: MilvusClient, name: str) -> str:
    """The collection behind our service's name (milvus/DEPLOY.md): on a server `name` is an
    alias, searched as it is; Milvus Lite has no aliases, so `<name>__served` names it."""
    pointer = f"{name}__served"
    if pointer not in client.list_collections():
        return name
    rows = client.query(pointer, filter="id >= 0", output_fields=["target"])
    return max(rows, key=lambda r: r["id"])["target"]


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.tower = UserTower.load(MODEL_CONFIG_PATH, EPOCH_NUM)
    app.state.client = client = MilvusClient(uri=MILVUS_URI)
    app.state.collection = served_collection(client, COLLECTION)
    fields = client.describe_collection(app.state.collection)["fields"]
    app.state.stored_dim = next(f["params"]["dim"] for f in fields if f["name"] == "embedding")
    # FastAPI runs the endpoint in a thread pool; Paddle's eager mode is not documented as
    # thread-safe, so one forward pass at a time (the searches may overlap).
    app.state.model_lock = threading.Lock()
    yield
    client.close()


app = FastAPI(title="MIND recall, the tutorial's way", lifespan=lifespan)


class RecallRequest(BaseModel):
    top_k: int = Field(50, ge=1, le=1000)
    hist_item: list[list[int]] = Field(min_length=1)


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/rec/recall")
def recall(req: RecallRequest) -> list[list[int]]:
    tower = app.state.tower
    known = [tower.known_items(h) for h in req.hist_item]
    with app.state.model_lock:
        interests = tower.interests(req.hist_item)  # [users, K, dim]
    # Each interest needs top_k hits besides the history items the merge drops.
    limit = req.top_k + max(len(set(h.tolist())) for h in known)
    # Masked interests (zero vectors) are not searched.
    queries = [(u, v) for u, vs in enumerate(interests) for v in vs if v.any()]
    # The item store keeps items with one extra coordinate; a query's is 0, so scores stay q.x.
    pad = app.state.stored_dim - tower.dim
    data = [np.pad(v, (0, pad)).tolist() for _, v in queries]
    hits = app.state.client.search(app.state.collection, data=data, limit=limit,
                                   anns_field="embedding", search_params=SEARCH_PARAMS) if data else []
    best: list[dict[int, float]] = [{} for _ in known]
    for (u, _), row in zip(queries, hits):
        for hit in row:
            if hit["distance"] > best[u].get(hit["id"], -np.inf):
                best[u][hit["id"]] = hit["distance"]
    answer = []
    for h, scores in zip(known, best):
        if not len(h):  # nothing to personalise from: the most popular items
            answer.append(tower.popular_items(req.top_k).tolist())
            continue
        for item in {0, *h.tolist()}:
            scores.pop(item, None)
        answer.append(sorted(scores, key=scores.__getitem__, reverse=True)[:req.top_k])
    return answer
