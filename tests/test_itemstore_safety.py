"""The item store's safety rules on real Milvus Lite: build leases, clean-up that spares
other processes' builds, model identity, and one process per Lite file."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest

from itemstore import BuildConflict, ItemStore, ModelMismatch
from itemstore import generations as gens_mod
from itemstore.generations import Lease
from itemstore.identity import decode, describe, encode, same_model

DIM = 8
ME = gens_mod._owner()


def owner(pid: int, start: str = "123", namespace: str = gens_mod._NAMESPACE) -> str:
    """A lease owner as another process writes it (host|pid|start|namespace|token)."""
    return "|".join([gens_mod._HOST, str(pid), start, namespace, uuid.uuid4().hex[:12]])


def catalogue(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return np.arange(1, n + 1, dtype=np.int64), rng.standard_normal((n, DIM)).astype(np.float32)


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture
def store(tmp_path):
    s = ItemStore(str(tmp_path / "items.db"), f"items_{uuid.uuid4().hex[:6]}", dim=DIM)
    yield s
    s.close()


def model(epoch: int, items: str) -> dict:
    return {"config": "/m/config.yaml", "epoch": epoch, "run_id": "abcdef1234",
            "items_sha256": items, "model_sha256": f"w{items}"}


# ------------------------------------------------------------------ leases (pure)
def test_a_lease_lives_while_fresh_and_its_process_is_alive():
    now = int(time.time() * 1000)
    assert Lease(1, ME, now).live()
    assert not Lease(1, ME, now - int(gens_mod.LEASE_SECONDS * 1000) - 1).live()  # stale
    assert not Lease(1, owner(dead_pid()), now).live()  # dead, in this PID namespace
    # Our own pid, started at another time: a process that had the pid before us.
    assert not Lease(1, owner(os.getpid(), start="1"), now).live()
    # A container restarted with the same hostname and PID 1 is a new token: its dead
    # predecessor's lease is not its own, and only the heartbeat tells whether it lives.
    assert Lease(1, owner(1, namespace="other-boot/pid:[4026531836]"), now).live()
    # The same host name in another PID namespace (containers on host networking): a pid
    # that is dead here may be alive there, so the build is not judged dead.
    assert Lease(1, owner(dead_pid(), namespace="boot/pid:[1]"), now).live()
    assert Lease(1, "another-host:1", now).live()  # an older version's owner: heartbeat only


# ------------------------------------------------------------------ leases on Milvus Lite
def test_a_replace_yields_to_an_earlier_live_build_and_names_it(store):
    ids, vecs = catalogue(100, 1)
    store.replace_items(ids, vecs, index_type="FLAT")
    store.generations.begin(5)  # an earlier build, still heart-beating
    with pytest.raises(BuildConflict, match=rf"another insert_data .*process {os.getpid()} on "
                       rf"{gens_mod._HOST} \(generation 5"):
        store.replace_items(ids, vecs, index_type="FLAT")
    with pytest.raises(BuildConflict, match="drop after it finishes"):
        store.drop()
    assert store.count() == 100  # nothing lost
    store.generations.end(5)
    assert store.replace_items(ids, vecs, index_type="FLAT") == 100
    assert store.generations.leases() == []  # a finished build leaves no lease


def test_cleanup_spares_a_build_under_way_and_drops_abandoned_ones(store):
    ids, vecs = catalogue(100, 2)
    store.replace_items(ids, vecs, index_type="FLAT")
    gens = store.generations
    client = store.conn.client()

    def leftover(generation: int) -> str:
        name = gens.physical_name(generation)
        client.create_collection(name, dimension=DIM)
        return name

    building = leftover(7)
    gens.heartbeat(7)  # a live lease: another process's build under way
    killed = leftover(8)
    row = {"id": 8, "owner": owner(dead_pid()),
           "heartbeat": int(time.time() * 1000), "unused": [0.0, 0.0]}
    client.upsert(store.collection + "__builds", [row])
    unleased = leftover(9)  # no lease at all: a build of an older version, or by hand
    dropped = gens.cleanup()
    assert sorted(dropped) == sorted([killed, unleased])
    assert building in gens.physical_names() and store.count() == 100
    assert [lease.generation for lease in gens.leases()] == [7]  # the dead one's row is gone


# ------------------------------------------------------------------ model identity
def test_identity_round_trips_through_the_description():
    a = model(1, "aa")
    assert decode(encode(a)) == a
    assert decode("") is None and decode("some description") is None
    assert same_model(a, dict(a, epoch=3)) and not same_model(a, model(1, "bb"))
    assert not same_model(None, a) and not same_model({}, {})
    assert describe(a) == "epoch 1 of /m/config.yaml (run abcdef12), items aa"


def test_a_store_refuses_another_models_collection_with_a_message(tmp_path):
    name = "items"
    ids, vecs = catalogue(60, 3)
    writer = ItemStore(str(tmp_path / "x.db"), name, dim=DIM, identity=model(1, "e1"))
    writer.replace_items(ids, vecs, index_type="FLAT")
    reader = ItemStore(str(tmp_path / "x.db"), name, dim=DIM, identity=model(0, "e0"))
    with pytest.raises(ModelMismatch) as info:
        reader.search(vecs[:2], 5)
    assert str(info.value).startswith("the collection holds epoch 1 of /m/config.yaml")
    assert "this service serves epoch 0" in str(info.value) and "/rec/insert_data" in str(info.value)
    with pytest.raises(ModelMismatch):
        reader.check_model()
    assert reader.served_identity()["epoch"] == 1
    # The same model under another config path (another checkout) is the same model.
    same = ItemStore(str(tmp_path / "x.db"), name, dim=DIM, identity=dict(model(1, "e1"), config="/o"))
    assert same.search(vecs[:2], 5)[0].shape == (2, 5)
    reader.replace_items(ids, vecs, index_type="FLAT")  # insert_data by the reader's model
    assert reader.search(vecs[:2], 5)[0].shape == (2, 5)
    # A collection built without an identity is refused too: nobody can vouch for it.
    ItemStore(str(tmp_path / "x.db"), name, dim=DIM).replace_items(ids, vecs, index_type="FLAT")
    with pytest.raises(ModelMismatch, match="no model identity"):
        reader.search(vecs[:2], 5)


# ------------------------------------------------------------------ one process per file
def test_a_second_process_on_a_lite_file_is_refused_and_the_first_keeps_serving(store):
    ids, vecs = catalogue(80, 4)
    store.replace_items(ids, vecs, index_type="FLAT")
    code = ("import sys\nfrom itemstore import ItemStore, LiteFileBusy\n"
            "try:\n    ItemStore(sys.argv[1], 'other', dim=8).count()\n"
            "except LiteFileBusy as exc:\n    print(exc); sys.exit(3)\n")
    done = subprocess.run([sys.executable, "-c", code, store.uri], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 3, done.stdout + done.stderr
    assert f"is already open by process {os.getpid()}" in done.stdout
    assert "Milvus Lite serves one process per file" in done.stdout
    assert "MILVUS_URI=http://" in done.stdout
    # In this process, another store on the file is fine, and the first still answers.
    other = ItemStore(store.uri, store.collection, dim=DIM)
    assert other.count() == 80
    assert store.search(vecs[:1], 1)[0][0, 0] == ids[np.argmax(vecs @ vecs[0])]


def test_insert_over_a_plain_collection_holding_the_name_on_lite(store):
    """The tutorial's code made the name a plain collection; insert_data serves over it and
    drop removes it (the server's case: tests/test_writer_races.py)."""
    store.conn.client().create_collection(store.collection, dimension=DIM)
    ids, vecs = catalogue(120, 5)
    assert store.replace_items(ids, vecs, index_type="FLAT") == 120
    assert store.count() == 120
    assert store.search(vecs[:1], 1)[0][0, 0] == ids[np.argmax(vecs @ vecs[0])]
    store.drop()
    assert store.collection not in store.generations.names() and store.count() == 0
