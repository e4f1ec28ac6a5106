"""Writers racing on one real Milvus server, in real processes (issue 21, items 1 and 2):
one replica inserts while another drops and re-inserts; a plain collection of the tutorial's
holds the served name. Every outcome is a success or a 409 (BuildConflict), never an error,
a build is never dropped under itself, and what is served at the end is whole."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest

from itemstore import ItemStore

pytestmark = pytest.mark.server

DIM, ITEMS = 16, 3000
# One replica's actions at wall-clock times: ("insert" | "drop", seconds after t0).
WORKER = r"""
import json, sys, time
import numpy as np
from itemstore import BuildConflict, ItemStore
uri, name, t0, plan = sys.argv[1], sys.argv[2], float(sys.argv[3]), json.loads(sys.argv[4])
store = ItemStore(uri, name, dim=%d, timeout=30)
rng = np.random.default_rng(0)
ids = np.arange(1, %d + 1, dtype=np.int64)
vectors = rng.standard_normal((len(ids), %d)).astype(np.float32)
store.count()  # connected before t0
out = []
for action, at in plan:
    time.sleep(max(0.0, t0 + at - time.time()))
    try:
        store.replace_items(ids, vectors, index_type="FLAT") if action == "insert" else store.drop()
        out.append([action, "ok", ""])
    except BuildConflict as exc:
        out.append([action, "409", str(exc)])
    except Exception as exc:
        out.append([action, "error", f"{type(exc).__name__}: {exc}"])
print(json.dumps(out))
""" % (DIM, ITEMS, DIM)


def _replicas(uri: str, name: str, plans: list[list]) -> list[list]:
    t0 = time.time() + 8  # both have imported pymilvus and connected by then
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, uri, name, str(t0), json.dumps(p)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for p in plans]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


@pytest.mark.slow
@pytest.mark.parametrize("drop_at", [-0.1, 0.0, 0.05, 0.1, 0.3])
def test_a_drop_racing_another_replicas_insert_never_errs_or_drops_a_build(milvus_server,
                                                                           drop_at):
    name = f"race_{uuid.uuid4().hex[:8]}"
    a, b = _replicas(milvus_server.uri, name,
                     [[["insert", 0.0]], [["drop", drop_at], ["insert", 1.5]]])
    assert all(status in ("ok", "409") for _, status, _ in a + b), (a, b)
    (_, a_status, _), (_, drop_status, drop_says), (_, b_status, _) = a[0], b[0], b[1]
    if drop_status == "409":
        assert "another insert_data is loading" in drop_says
    assert "ok" in (a_status, b_status)  # one of the inserts is served
    store = ItemStore(milvus_server.uri, name, dim=DIM, timeout=30)
    try:
        assert store.count() == ITEMS  # whole, whichever build won
        got, _ = store.search(np.ones((1, DIM), np.float32), 5)
        assert (got > 0).all()
        assert store.generations.others_building() == []  # no lease left live
        assert len(store.generations.physical_names()) == 1  # nothing abandoned either
    finally:
        store.drop()
        store.close()


def test_insert_replaces_a_plain_collection_holding_the_name(milvus_server):
    """The tutorial's own code made `DEFAULT_COLLECTION` a plain collection: insert_data
    adopts the name (the upgrade path), drop removes it."""
    name = f"plain_{uuid.uuid4().hex[:8]}"
    store = ItemStore(milvus_server.uri, name, dim=DIM, timeout=30)
    try:
        store.conn.client().create_collection(name, dimension=DIM)
        ids = np.arange(1, 201, dtype=np.int64)
        vecs = np.random.default_rng(1).standard_normal((200, DIM)).astype(np.float32)
        assert store.replace_items(ids, vecs, index_type="FLAT") == 200
        assert store.count() == 200
        assert name not in store.generations.names()  # the alias holds the name now
        assert store.search(vecs[:1], 1)[0][0, 0] == ids[np.argmax(vecs @ vecs[0])]
        assert store.replace_items(ids, vecs, index_type="FLAT") == 200  # and again
    finally:
        store.drop()
        store.close()
