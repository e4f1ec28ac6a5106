"""ItemStore against real Milvus: Milvus Lite on a temp file, and the real server process.

Server tests use the session fixture `milvus_server` (tests/milvus_server.py); each test
works on its own collection name so they do not see each other's data.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from pymilvus import DataType, MilvusClient

from itemstore import CollectionMissing, ItemStore, MilvusUnavailable

DIM = 16


def exact_top_k(items: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    """Row positions of the k best inner products, best first."""
    return np.argsort(-(q @ items.T), axis=1, kind="stable")[:, :k]


def catalogue(n: int, seed: int, dim: int = DIM) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return np.arange(1, n + 1, dtype=np.int64), rng.standard_normal((n, dim)).astype(np.float32)


@pytest.fixture(params=["lite", pytest.param("server", marks=pytest.mark.server)])
def store(request: pytest.FixtureRequest, tmp_path) -> Iterator[ItemStore]:
    """An ItemStore on each backend (a replace costs ~7 s on the server: flush + load)."""
    yield from _open_store(request, tmp_path)


@pytest.fixture(params=["lite"])
def lite_store(request: pytest.FixtureRequest, tmp_path) -> Iterator[ItemStore]:
    """Milvus Lite only: for logic that does not depend on the backend, to keep the suite fast."""
    yield from _open_store(request, tmp_path)


def _open_store(request: pytest.FixtureRequest, tmp_path) -> Iterator[ItemStore]:
    name = f"items_{uuid.uuid4().hex[:8]}"
    if request.param == "lite":
        s = ItemStore(str(tmp_path / "milvus.db"), name, dim=DIM, timeout=10)
    else:
        server = request.getfixturevalue("milvus_server")
        s = ItemStore(server.uri, name, dim=DIM, timeout=10)
    yield s
    try:
        s.drop()
    finally:
        s.close()


def test_replace_then_count(store: ItemStore) -> None:
    ids, vecs = catalogue(300, seed=1)
    assert store.count() == 0
    assert not store.is_loaded()
    assert store.replace_items(ids, vecs, index_type="FLAT") == 300
    assert store.count() == 300
    assert store.is_loaded()
    assert store.ping()


def test_rerun_replaces_without_duplicates_and_changes_vectors(store: ItemStore) -> None:
    ids, old = catalogue(200, seed=2)
    _, new = catalogue(200, seed=3)
    store.replace_items(ids, old, index_type="FLAT")
    q = new[:3]
    store.replace_items(ids, new, index_type="FLAT")
    assert store.count() == 200
    got, scores = store.search(q, 1)
    # Each new vector is its own best match only if the new data is what is served.
    np.testing.assert_array_equal(got[:, 0], ids[exact_top_k(new, q, 1)[:, 0]])
    np.testing.assert_allclose(scores[:, 0], np.sum(q * new[exact_top_k(new, q, 1)[:, 0]], axis=1),
                               rtol=1e-4)
    # Only the served physical collection remains (old one dropped, no duplicates).
    assert len(store.generations.physical_names()) == 1


def test_flat_search_equals_numpy_exact(lite_store: ItemStore) -> None:
    ids, vecs = catalogue(500, seed=4)
    lite_store.replace_items(ids, vecs, index_type="FLAT")
    q = np.random.default_rng(5).standard_normal((7, DIM)).astype(np.float32)
    got, scores = lite_store.search(q, 20)
    want = exact_top_k(vecs, q, 20)
    np.testing.assert_array_equal(got, ids[want])
    np.testing.assert_allclose(scores, np.take_along_axis(q @ vecs.T, want, axis=1), rtol=1e-4)
    assert got.dtype == np.int64 and scores.dtype == np.float32


def test_default_ann_index_recall(lite_store: ItemStore) -> None:
    # Clustered vectors, as trained embeddings are; the backend's default index type.
    rng = np.random.default_rng(6)
    centres = rng.standard_normal((50, DIM)).astype(np.float32)
    n = 4000
    vecs = centres[rng.integers(0, 50, n)] + 0.5 * rng.standard_normal((n, DIM)).astype(np.float32)
    ids = np.arange(10, 10 + n, dtype=np.int64)
    lite_store.replace_items(ids, vecs)
    q = centres[rng.integers(0, 50, 64)] + 0.5 * rng.standard_normal((64, DIM)).astype(np.float32)
    got, _ = lite_store.search(q, 50)
    want = ids[exact_top_k(vecs, q, 50)]
    recall = np.mean([len(set(g) & set(w)) / 50 for g, w in zip(got, want)])
    assert recall >= 0.98, recall


@pytest.mark.parametrize("fast", [True, False])
def test_one_request_for_many_vectors_with_padding(lite_store: ItemStore, fast: bool) -> None:
    ids, vecs = catalogue(30, seed=7)
    lite_store.replace_items(ids, vecs, index_type="FLAT")
    lite_store.fast_search = fast  # the numpy-reading path, and pymilvus's public search()
    lite_store.search(vecs[:1], 1)  # pointer and vector width read and cached
    stub = lite_store.conn.client()._get_connection()._stub
    calls = []
    real_search = stub.Search

    def counting_search(request, *args, **kwargs):  # the gRPC call itself, only counted
        calls.append(request.nq)
        return real_search(request, *args, **kwargs)

    stub.Search = counting_search
    try:
        q = np.random.default_rng(8).standard_normal((12, DIM)).astype(np.float32)
        got, scores = lite_store.search(q, 50)
    finally:
        del stub.Search
    assert calls == [12]
    assert got.shape == scores.shape == (12, 50)
    assert got.dtype == np.int64 and scores.dtype == np.float32
    np.testing.assert_array_equal(got[:, :30], ids[exact_top_k(vecs, q, 30)])
    np.testing.assert_allclose(scores[:, :30], np.take_along_axis(
        q @ vecs.T, exact_top_k(vecs, q, 30), axis=1), rtol=1e-4)
    assert (got[:, 30:] == -1).all() and np.isneginf(scores[:, 30:]).all()


def test_a_failed_fast_search_is_left_to_pymilvus_own_search(lite_store: ItemStore) -> None:
    """Errors other than "not found"/"not loaded" go through pymilvus's search (its retries,
    reconnection and messages), within the same timeout."""
    import grpc

    ids, vecs = catalogue(50, seed=23)
    lite_store.replace_items(ids, vecs, index_type="FLAT")
    lite_store.search(vecs[:1], 1)
    stub = lite_store.conn.client()._get_connection()._stub
    real_search = stub.Search
    calls = []

    class Flaky(grpc.RpcError):
        def code(self):
            return grpc.StatusCode.UNAVAILABLE

    def flaky_search(request, *args, **kwargs):
        calls.append(request.nq)
        if len(calls) == 1:
            raise Flaky("connection reset")
        return real_search(request, *args, **kwargs)

    stub.Search = flaky_search
    try:
        got, _ = lite_store.search(vecs[:3], 1)
    finally:
        del stub.Search
    assert len(calls) == 2
    np.testing.assert_array_equal(got[:, 0], ids[exact_top_k(vecs, vecs[:3], 1)[:, 0]])


def test_fast_search_path_equals_public_path(store: ItemStore) -> None:
    ids, vecs = catalogue(2000, seed=21)
    store.replace_items(ids, vecs, index_type="FLAT")
    q = np.random.default_rng(22).standard_normal((9, DIM)).astype(np.float32)
    store.fast_search = True
    fast = store.search(q, 40)
    store.fast_search = False
    public = store.search(q, 40)
    np.testing.assert_array_equal(fast[0], public[0])
    np.testing.assert_array_equal(fast[1], public[1])


def test_drop_then_count_zero_and_search_missing(store: ItemStore) -> None:
    ids, vecs = catalogue(50, seed=9)
    store.replace_items(ids, vecs, index_type="FLAT")
    store.drop()
    assert store.count() == 0
    assert not store.is_loaded()
    with pytest.raises(CollectionMissing):
        store.search(vecs[:2], 5)
    store.drop()  # dropping what is gone is not an error
    # Nothing but the lease table is left (empty: kept so a build starting meanwhile keeps
    # its lease).
    left = [n for n in store.generations.names() if n.startswith(store.collection)]
    assert left in ([], [store.collection + "__builds"]) and store.generations.leases() == []


def test_searches_keep_answering_during_replace(store: ItemStore) -> None:
    ids, vecs = catalogue(3000, seed=10)
    store.replace_items(ids, vecs, index_type="FLAT")
    _, new = catalogue(3000, seed=11)
    store.batch_bytes = 16 * 1024  # many insert requests, so searches interleave with them
    q = vecs[:4]
    errors: list[BaseException] = []
    empty = answered = 0
    done = threading.Event()

    def searcher() -> None:
        nonlocal empty, answered
        while not done.is_set():
            try:
                got, _ = store.search(q, 10)
            except BaseException as exc:  # any failure is what this test is about
                errors.append(exc)
                continue
            answered += 1
            empty += int((got == -1).any())

    t = threading.Thread(target=searcher)
    t.start()
    try:
        store.replace_items(ids, new, index_type="FLAT")
        time.sleep(0.2)  # a few searches after the switch too
    finally:
        done.set()
        t.join(timeout=30)
    assert errors == [] and empty == 0
    assert answered >= 5
    got, _ = store.search(new[:3], 1)
    np.testing.assert_array_equal(got[:, 0], ids[exact_top_k(new, new[:3], 1)[:, 0]])


def test_cached_lite_pointer_follows_a_replace_by_another_store(lite_store: ItemStore) -> None:
    ids, old = catalogue(200, seed=31)
    lite_store.replace_items(ids, old, index_type="FLAT")
    lite_store.pointer_ttl = 3600.0  # only the "old collection is gone" path may refresh it
    lite_store.search(old[:2], 1)  # pointer cached
    other = ItemStore(lite_store.uri, lite_store.collection, dim=DIM, timeout=10)
    _, new = catalogue(200, seed=32)
    try:
        other.replace_items(ids, new, index_type="FLAT")  # switches, then drops the old one
    finally:
        other.close()
    got, _ = lite_store.search(new[:3], 1)
    np.testing.assert_array_equal(got[:, 0], ids[exact_top_k(new, new[:3], 1)[:, 0]])


def _keeps_old(store: ItemStore) -> ItemStore:
    """A replace that switches the pointer but dies before dropping the old collection."""
    store.generations.drop_collection = lambda name: None  # type: ignore[method-assign]
    store.generations.cleanup = lambda: []  # type: ignore[method-assign]
    return store


def test_cached_lite_pointer_is_reread_within_its_ttl(lite_store: ItemStore) -> None:
    ids, old = catalogue(200, seed=33)
    lite_store.replace_items(ids, old, index_type="FLAT")
    lite_store.pointer_ttl = 0.5
    lite_store.search(old[:2], 1)
    other = _keeps_old(ItemStore(lite_store.uri, lite_store.collection, dim=DIM, timeout=10))
    _, new = catalogue(200, seed=34)
    try:
        other.replace_items(ids, new, index_type="FLAT")
    finally:
        other.close()
    want_new = ids[exact_top_k(new, new[:3], 1)[:, 0]]
    # The old collection is still complete, so answering from it is allowed - for < ttl.
    time.sleep(0.6)
    got, _ = lite_store.search(new[:3], 1)
    np.testing.assert_array_equal(got[:, 0], want_new)
    assert lite_store.count() == 200


def test_items_are_stored_augmented_and_old_layout_still_searches(lite_store: ItemStore) -> None:
    ids, vecs = catalogue(300, seed=35)
    vecs[:10] *= 20  # a few long vectors, as trained embeddings have
    lite_store.replace_items(ids, vecs, index_type="FLAT")
    client = lite_store.conn.client()
    physical = lite_store.generations.served()
    fields = client.describe_collection(physical)["fields"]
    assert [f["params"]["dim"] for f in fields if f["name"] == "embedding"] == [DIM + 1]
    stored = client.query(physical, filter="id in [1, 2, 50]", output_fields=["embedding"])
    norms = [np.linalg.norm(r["embedding"]) for r in stored]
    np.testing.assert_allclose(norms, np.linalg.norm(vecs[:10], axis=1).max(), rtol=1e-4)
    q = np.random.default_rng(36).standard_normal((5, DIM)).astype(np.float32)
    got, scores = lite_store.search(q, 10)
    want = exact_top_k(vecs, q, 10)
    np.testing.assert_array_equal(got, ids[want])
    np.testing.assert_allclose(scores, np.take_along_axis(q @ vecs.T, want, axis=1), rtol=1e-4)
    # A collection of the old layout (dim wide, before this module augmented) still answers.
    legacy = f"{lite_store.collection}__v{lite_store.generations.generation(physical) + 1}"
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=DIM)
    idx = MilvusClient.prepare_index_params()
    idx.add_index("embedding", index_type="FLAT", metric_type="IP")
    client.create_collection(legacy, schema=schema, index_params=idx)
    client.insert(legacy, [{"id": int(i), "embedding": v.tolist()} for i, v in zip(ids, vecs)])
    client.flush(legacy)
    client.load_collection(legacy)
    lite_store.generations._point_to(legacy)
    got, _ = lite_store.search(q, 10)
    np.testing.assert_array_equal(got, ids[want])


def test_default_index_recall_on_trained_like_vectors(store: ItemStore) -> None:
    """The served, merged top-50 of the default index vs exact search, on vectors shaped like
    trained MIND embeddings: most items barely trained (tiny norms), a few hundred long ones
    in clusters; 4 unit-norm interests per user (what defeated IVF/HNSW before _augment)."""
    from mind.retrieval import merge_hits

    rng = np.random.default_rng(41)
    n, users, k = 6000, 24, 4
    centres = rng.standard_normal((40, DIM)).astype(np.float32)
    vecs = 0.02 * rng.standard_normal((n, DIM)).astype(np.float32)
    hot = rng.choice(n, 600, replace=False)
    vecs[hot] = (centres[rng.integers(0, 40, 600)] + 0.4 * rng.standard_normal((600, DIM))) \
        * rng.uniform(0.2, 3.0, (600, 1))
    vecs = vecs.astype(np.float32)
    ids = np.arange(1, n + 1, dtype=np.int64)
    store.replace_items(ids, vecs)  # the backend's default index
    q = centres[rng.integers(0, 40, users * k)] + 0.5 * rng.standard_normal((users * k, DIM))
    q = (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)
    got, got_s = store.search(q, 50)
    want = exact_top_k(vecs, q, 50)
    want_s = np.take_along_axis(q @ vecs.T, want, axis=1)
    served = merge_hits(got.reshape(users, -1), got_s.reshape(users, -1), 50, lists=k)
    exact = merge_hits(ids[want].reshape(users, -1), want_s.reshape(users, -1), 50, lists=k)
    recall = np.mean([len(set(a.tolist()) & set(b.tolist())) / len(b) for a, b in zip(served, exact)])
    assert recall >= 0.98, recall


class _BadBatchStore(ItemStore):
    """Sends Milvus a malformed batch (wrong vector length) as its 3rd insert request."""

    batches = 0

    def _insert_batch(self, physical: str, ids: np.ndarray, vectors: np.ndarray,
                      scalars=None) -> None:
        self.batches += 1
        if self.batches == 3:
            vectors = vectors[:, : self.dim - 1]
        super()._insert_batch(physical, ids, vectors, scalars)


def test_failure_midway_keeps_served_collection(store: ItemStore) -> None:
    ids, vecs = catalogue(400, seed=12)
    store.replace_items(ids, vecs, index_type="FLAT")
    served = store.generations.physical_names()
    bad = _BadBatchStore(store.uri, store.collection, dim=DIM, timeout=10)
    bad.batch_bytes = 4 * 1024  # ~50 rows a batch
    _, new = catalogue(400, seed=13)
    try:
        with pytest.raises(Exception) as info:
            bad.replace_items(ids, new, index_type="FLAT")
        assert not isinstance(info.value, (CollectionMissing, MilvusUnavailable))
        assert bad.batches == 3
    finally:
        bad.close()
    assert store.generations.physical_names() == served  # the partial collection was dropped
    assert store.count() == 400
    got, _ = store.search(vecs[:3], 1)
    np.testing.assert_array_equal(got[:, 0], ids[exact_top_k(vecs, vecs[:3], 1)[:, 0]])  # old data
    assert store.replace_items(ids, new, index_type="FLAT") == 400
    got, _ = store.search(new[:3], 1)
    np.testing.assert_array_equal(got[:, 0], ids[exact_top_k(new, new[:3], 1)[:, 0]])


def test_leftover_of_a_killed_replace_is_cleaned_up(lite_store: ItemStore) -> None:
    ids, vecs = catalogue(100, seed=14)
    lite_store.replace_items(ids, vecs, index_type="FLAT")
    # What a replace killed mid-insert leaves: an unpointed physical collection with rows.
    leftover = f"{lite_store.collection}__v1"
    client = lite_store.conn.client()
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=DIM)
    client.create_collection(leftover, schema=schema)
    client.insert(leftover, [{"id": 1, "embedding": vecs[0].tolist()}])
    assert leftover in lite_store.generations.physical_names()
    assert lite_store.count() == 100  # not served
    lite_store.replace_items(ids, vecs, index_type="FLAT")
    assert leftover not in lite_store.generations.names()
    assert len(lite_store.generations.physical_names()) == 1


@pytest.mark.parametrize(
    ("ids", "vecs", "message"),
    [
        (np.array([1, 2]), np.zeros((2, DIM), np.float64), "float32"),
        (np.array([1, 2]), np.zeros((2, DIM + 1), np.float32), "shape"),
        (np.array([1, 1]), np.zeros((2, DIM), np.float32), "unique"),
        (np.array([-1, 2]), np.zeros((2, DIM), np.float32), ">= 0"),
        (np.array([1.0, 2.0]), np.zeros((2, DIM), np.float32), "integer"),
        (np.array([], np.int64), np.zeros((0, DIM), np.float32), "empty"),
        (np.array([1, 2]), np.full((2, DIM), np.nan, np.float32), "NaN"),
    ],
)
def test_replace_validates_inputs(tmp_path, ids, vecs, message) -> None:
    s = ItemStore(str(tmp_path / "v.db"), "items", dim=DIM)
    with pytest.raises(ValueError, match=message):
        s.replace_items(ids, vecs)
    s.close()


def test_search_and_constructor_validate_inputs(tmp_path) -> None:
    s = ItemStore(str(tmp_path / "v.db"), "items", dim=DIM)
    with pytest.raises(ValueError, match="shape"):
        s.search(np.zeros((2, DIM + 1), np.float32), 5)
    with pytest.raises(ValueError, match="top_k"):
        s.search(np.zeros((2, DIM), np.float32), 0)
    with pytest.raises(ValueError, match="index_type"):
        s.replace_items(np.array([1]), np.zeros((1, DIM), np.float32), index_type="HNSW")
    s.close()
    with pytest.raises(ValueError, match="uri"):
        ItemStore("localhost:19530", "items")
    with pytest.raises(ValueError, match="collection name"):
        ItemStore(str(tmp_path / "v.db"), "bad-name")


@pytest.mark.server
@pytest.mark.slow
def test_server_down_raises_unavailable_then_recovers(milvus_server) -> None:
    s = ItemStore(milvus_server.uri, f"outage_{uuid.uuid4().hex[:8]}", dim=DIM, timeout=3)
    ids, vecs = catalogue(100, seed=15)
    s.replace_items(ids, vecs, index_type="FLAT")
    milvus_server.stop()
    try:
        for call in (lambda: s.search(vecs[:2], 5), s.count, lambda: s.replace_items(ids, vecs)):
            t0 = time.monotonic()
            with pytest.raises(MilvusUnavailable):
                call()
            assert time.monotonic() - t0 < 3 + 2  # the timeout, plus slack for a loaded CI
        assert s.ping() is False
    finally:
        milvus_server.start()
    # The same object recovers by itself: no reconnect call, the next calls just work.
    deadline = time.monotonic() + 60
    while True:
        try:
            got, _ = s.search(vecs[:2], 1)
            break
        except MilvusUnavailable:  # the server reloads its collections after a restart
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
    np.testing.assert_array_equal(got[:, 0], ids[exact_top_k(vecs, vecs[:2], 1)[:, 0]])
    assert s.count() == 100 and s.ping()
    s.drop()
    s.close()


def test_a_lite_file_in_milvus_uri_does_not_break_the_import(tmp_path):
    """pymilvus refuses to import when MILVUS_URI is not http(s)://; ours may be a .db file."""
    import subprocess
    import sys

    env = {**os.environ, "MILVUS_URI": str(tmp_path / "items.db")}
    done = subprocess.run([sys.executable, "-c", "import itemstore, os, sys; sys.exit(os.environ.get('MILVUS_URI', '') == '')"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_a_proxy_deadline_counts_as_unavailable() -> None:
    """After a server restart the proxy answers "context Done" until collections load: a 503
    (MilvusUnavailable, retried by callers), not a 500."""
    from pymilvus import MilvusException

    from itemstore.errors import is_unavailable as _is_unavailable

    assert _is_unavailable(MilvusException(65535, "proxy TaskCondition context Done"))
    assert not _is_unavailable(MilvusException(1100, "invalid parameter: ef"))


def test_a_connection_closed_by_another_thread_counts_as_unavailable():
    """Seen in the outage run: a call racing another thread's reset gets these messages."""
    from pymilvus import MilvusException

    from itemstore.errors import is_unavailable as _is_unavailable

    for text in ("should create connection first", "Cannot invoke RPC on closed channel!"):
        assert _is_unavailable(MilvusException(message=text)), text
    assert not _is_unavailable(MilvusException(message="collection not found[collection=x]"))


def test_an_unrecognised_error_from_an_unreachable_server_is_unavailable():
    """Errors are classified by text; when the text is new, a closed server port still says
    "outage" (503), while the same error from a reachable server stays a bug (re-raised)."""
    import socket

    from itemstore import ItemStore, MilvusUnavailable

    def fail(_client):
        raise RuntimeError("a message no marker knows")

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        store = ItemStore(f"http://127.0.0.1:{port}", "items", dim=4, timeout=1)
        store.conn._client = object()  # the call below fails before using it
        with pytest.raises(RuntimeError, match="no marker knows"):
            store.conn.call(fail)
    store.conn._client = object()  # the port is closed now
    with pytest.raises(MilvusUnavailable, match="no marker knows"):
        store.conn.call(fail)


def test_the_fast_search_path_is_the_one_in_use() -> None:
    """itemstore.fast_search reads pymilvus internals (pinned 2.6.17); an upgrade that moves
    them must fail here, not fall back silently to the public path (slower per hit)."""
    from itemstore import fast_search

    assert fast_search.FAST_PATH, (
        "pymilvus internals used by itemstore/fast_search.py moved: update that module for "
        "this pymilvus, or pin the version in requirements.txt")


def test_a_lite_child_that_dies_after_a_failed_call_is_still_replaced(lite_store: ItemStore) -> None:
    """The child's death may be seen only after a failed call has already dropped the client
    (SIGKILL is asynchronous): the next call must still start a new child (CI saw 503 for 60 s)."""
    from milvus_lite.server_manager import server_manager_instance as manager

    ids, vecs = catalogue(50, seed=11)
    lite_store.replace_items(ids, vecs, index_type="FLAT")
    child = manager._servers[str(Path(lite_store.uri).resolve())]._p
    lite_store.conn.reset()  # as a call that failed before the death was visible does
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=10)
    child.returncode = None  # unseen by anyone yet, as when the call raced the signal
    deadline = time.monotonic() + 20
    while True:
        try:
            assert lite_store.count() == 50
            break
        except MilvusUnavailable:
            assert time.monotonic() < deadline, "the dead Lite child was never replaced"
            time.sleep(0.5)
