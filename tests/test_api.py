"""The recall service through HTTP: TestClient runs the lifespan, Milvus Lite is real (a tmp file).

The model is a tiny MIND trained once per session by the project's own entry points
(data.sh synthetic, trainer.py), so these tests exercise the whole serving path.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from config import Settings
from support import TINY_ITEMS, free_port

TOKEN = "test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MAX_BATCH, MAX_HIST = 8, 50
TUTORIAL_HISTORIES = [
    [43, 23, 65, 675, 3456, 8654, 123454, 54367, 234561],
    [675, 3456, 8654, 123454, 76543, 1234, 9769, 5670, 65443, 123098, 34219, 234098],
]

def service_settings(tiny_model: tuple[Path, int], **env: str) -> Settings:
    """Settings for a service on the tiny model, limits small enough to test cheaply."""
    base = {
        "MODEL_CONFIG_PATH": str(tiny_model[0]),
        "MAX_BATCH_USERS": str(MAX_BATCH),
        "MAX_HISTORY_LEN": str(MAX_HIST),
        "MAX_BODY_BYTES": "8192",
    }
    return Settings.from_env({**base, **env})


def open_client(settings: Settings, **kwargs) -> TestClient:
    import main

    return TestClient(main.create_app(settings), **kwargs)


@pytest.fixture(scope="module")
def client(tiny_model, tmp_path_factory) -> Iterator[TestClient]:
    """One service with a token, on its own Milvus Lite file; lifespan runs once."""
    db = tmp_path_factory.mktemp("lite") / "items.db"
    settings = service_settings(tiny_model, MILVUS_URI=str(db), API_TOKEN=TOKEN)
    with open_client(settings) as c:
        yield c


@pytest.fixture
def loaded(client) -> TestClient:
    """The client with the catalogue in Milvus (inserted if a test dropped it)."""
    if client.post("/rec/count").json()["count"] == 0:
        assert client.post("/rec/insert_data", headers=AUTH).status_code == 200
    return client


def item_count(tiny_model) -> int:
    return tiny_model[1]


def check_rows(rows, histories, top_k, n_items, exclude=True):
    """The service's promises about every answer row."""
    assert isinstance(rows, list) and len(rows) == len(histories)
    for row, hist in zip(rows, histories):
        assert all(type(i) is int for i in row)
        assert 0 < len(row) <= top_k
        assert len(set(row)) == len(row), "duplicate ids"
        assert all(0 < i < n_items for i in row), "padding, filler or unknown id"
        if exclude:
            assert not set(row) & set(hist), "history item recalled"


# ------------------------------------------------------------------ endpoints
def test_healthz_and_openapi_docs(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/docs").status_code == 200
    schema = client.get("/openapi.json").json()
    assert {"/rec/insert_data", "/rec/recall", "/rec/count", "/qa/drop", "/rec/drop",
            "/healthz", "/readyz"} <= set(schema["paths"])
    # /rec/recall reads its body itself (off the event loop when big); it is documented as before
    request_body = schema["paths"]["/rec/recall"]["post"]["requestBody"]
    assert request_body == {"content": {"application/json": {"schema": {
        "$ref": "#/components/schemas/RecallRequest"}}}, "required": True}
    body = schema["components"]["schemas"]["RecallRequest"]["properties"]
    assert body["hist_item"]["maxItems"] == MAX_BATCH
    rows = body["hist_item"]["items"]["anyOf"]  # a row of ids or a row of keys
    assert [r["items"]["type"] for r in rows] == ["integer", "string"]
    assert [r["maxItems"] for r in rows] == [MAX_HIST, MAX_HIST]
    assert body["top_k"]["maximum"] == 1000


def test_insert_data_loads_every_item_and_rerunning_does_not_duplicate(client, tiny_model):
    first = client.post("/rec/insert_data", headers=AUTH)
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["status"] == "ok" and body["count"] == item_count(tiny_model) - 1
    assert body["seconds"] >= 0
    assert client.post("/rec/count").json() == {"count": item_count(tiny_model) - 1}
    again = client.post("/rec/insert_data", headers=AUTH)
    assert again.status_code == 200 and again.json()["count"] == body["count"]
    assert client.post("/rec/count").json() == {"count": item_count(tiny_model) - 1}


def test_readyz_reports_each_check(loaded):
    r = loaded.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json()["ready"] is True
    assert set(r.json()["checks"]) >= {"model", "milvus", "collection"}


def test_recall_answers_the_tutorial_request(loaded, tiny_model):
    histories = [[i % TINY_ITEMS + 1 for i in h] for h in TUTORIAL_HISTORIES]
    r = loaded.post("/rec/recall", json={"top_k": 50, "hist_item": histories})
    assert r.status_code == 200, r.text
    check_rows(r.json(), histories, 50, item_count(tiny_model))
    assert all(len(row) == 50 for row in r.json())  # 400 items: always enough to fill 50


def test_recall_is_deterministic_and_ignores_unknown_ids(loaded, tiny_model):
    n = item_count(tiny_model)
    known = [[5, 17, 3], [40, 2]]
    noisy = [[5, n, 17, n + 10**6, 3], [2**63 - 1, 40, 2]]
    a = loaded.post("/rec/recall", json={"top_k": 20, "hist_item": known}).json()
    b = loaded.post("/rec/recall", json={"top_k": 20, "hist_item": noisy}).json()
    assert a == b
    check_rows(a, known, 20, n)


def test_unknown_history_ids_are_counted_in_one_log_line_per_request(loaded, tiny_model, caplog):
    n = item_count(tiny_model)
    caplog.set_level(logging.INFO, logger="recall.service")

    def said() -> list[str]:
        return [r.getMessage() for r in caplog.records if "not in the catalogue" in r.getMessage()]

    noisy = [[5, n, 17], [0, n + 10**6, 2**63 - 1, 40]]
    assert loaded.post("/rec/recall", json={"top_k": 5, "hist_item": noisy}).status_code == 200
    assert said() == [f"recall: 4 of the request's 7 history ids are not in the catalogue "
                      f"(ids 1..{n - 1}) and were ignored"]
    caplog.clear()
    assert loaded.post("/rec/recall", json={"top_k": 5, "hist_item": [[5, 17]]}).status_code == 200
    assert said() == []


def test_concurrent_requests_batched_together_get_the_answers_they_get_alone(loaded, tiny_model):
    """Requests with different top_k, history rules and sizes, sent at once from 12 threads,
    are answered in shared passes of the recall batcher; each answer equals its answer alone."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(7)
    bodies = [{"top_k": int(rng.integers(1, 60)), "exclude_history": bool(i % 3),
               "hist_item": [rng.integers(1, TINY_ITEMS, size=int(rng.integers(1, 30))).tolist()
                             for _ in range(int(rng.integers(1, 5)))]} for i in range(36)]
    alone = [loaded.post("/rec/recall", json=b).json() for b in bodies]
    batcher = loaded.app.state.engine._recall_batcher
    passes, queries = batcher.passes, batcher.queries
    with ThreadPoolExecutor(12) as pool:
        together = list(pool.map(lambda b: loaded.post("/rec/recall", json=b).json(), bodies))
    assert together == alone
    assert batcher.queries - queries == len(bodies)
    print(f"{len(bodies)} concurrent requests answered in {batcher.passes - passes} passes")


def test_a_history_with_no_known_item_gets_the_most_popular_items(loaded, tiny_model):
    n = item_count(tiny_model)
    r = loaded.post("/rec/recall", json={"top_k": 10, "hist_item": [[0, n, n + 7], [1, 2]]})
    assert r.status_code == 200, r.text
    popular = loaded.app.state.engine.tower.popular_items(10).tolist()
    assert r.json()[0] == popular
    check_rows(r.json()[1:], [[1, 2]], 10, n)


def test_exclude_history_false_may_return_history_items(loaded, tiny_model):
    hist = [list(range(1, 21))]
    kept = loaded.post("/rec/recall", json={"top_k": 30, "hist_item": hist, "exclude_history": False})
    dropped = loaded.post("/rec/recall", json={"top_k": 30, "hist_item": hist})
    assert kept.status_code == dropped.status_code == 200
    check_rows(kept.json(), hist, 30, item_count(tiny_model), exclude=False)
    check_rows(dropped.json(), hist, 30, item_count(tiny_model), exclude=True)
    # The 20 most popular items of a 400-item catalogue: an unfiltered list this long
    # is expected to meet some of them; a filtered one never does.
    assert set(kept.json()[0]) & set(hist[0])


@pytest.mark.parametrize("top_k", [1, 7, 1000])
def test_top_k_bounds_the_answer(loaded, tiny_model, top_k):
    hist = [[3, 9], [100]]
    r = loaded.post("/rec/recall", json={"top_k": top_k, "hist_item": hist})
    assert r.status_code == 200, r.text
    check_rows(r.json(), hist, top_k, item_count(tiny_model))
    catalogue = item_count(tiny_model) - 1
    assert [len(row) for row in r.json()] == [min(top_k, catalogue - len(h)) for h in hist]


# ------------------------------------------------------------------ client mistakes: 422
BAD_BODIES = [
    ({"hist_item": [[1, "12"]]}, "hist_item[0][1] is a key (string) but hist_item's first item "
     "is an id (integer): a request names items by ids or by keys, not both"),
    ({"hist_item": [["a"], [7]]}, "hist_item[1][0] is an id (integer) but hist_item's first "
     "item is a key (string)"),
    ({"hist_item": [[1.5]]}, "hist_item[0][0]: must be an integer, got number"),
    ({"hist_item": [[1.0]]}, "hist_item[0][0]: must be an integer, got number"),
    ({"hist_item": [[2], [True]]}, "hist_item[1][0]: must be an integer, got boolean"),
    ({"hist_item": [[None]]}, "hist_item[0][0]: must be an integer, got null"),
    ({"hist_item": [[[1]]]}, "hist_item[0][0]: must be an integer, got array"),
    ({"hist_item": [[-1]]}, "hist_item[0][0]: must be >= 0, got -1"),
    ({"hist_item": [[2**63]]}, "hist_item[0][0]: must be <= 9223372036854775807"),
    ({"hist_item": [[1], []]}, "hist_item[1]: must have at least 1 item(s), got 0"),
    ({"hist_item": []}, "hist_item: must have at least 1 item(s), got 0"),
    ({"hist_item": [5]}, "hist_item[0]: must be an array, got integer"),
    ({"hist_item": "1,2"}, "hist_item: must be an array, got string"),
    ({"hist_item": [[1]] * (MAX_BATCH + 1)}, f"hist_item: must have at most {MAX_BATCH} items"),
    ({"hist_item": [[1] * (MAX_HIST + 1)]}, f"hist_item[0]: must have at most {MAX_HIST} items"),
    ({"top_k": 0, "hist_item": [[1]]}, "top_k: must be >= 1, got 0"),
    ({"top_k": -1, "hist_item": [[1]]}, "top_k: must be >= 1, got -1"),
    ({"top_k": 1001, "hist_item": [[1]]}, "top_k: must be <= 1000, got 1001"),
    ({"top_k": 10**9, "hist_item": [[1]]}, "top_k: must be <= 1000"),
    ({"top_k": True, "hist_item": [[1]]}, "top_k: must be an integer, got boolean"),
    ({"top_k": 50.0, "hist_item": [[1]]}, "top_k: must be an integer, got number"),
    ({"top_k": "50", "hist_item": [[1]]}, "top_k: must be an integer, got string"),
    ({"hist_item": [[1]], "exclude_history": "no"}, "exclude_history: must be true or false"),
    ({"top_k": 5}, "hist_item: is required"),
    ({"hist_items": [[1]]}, "hist_items: is not a known field"),
    ([[1, 2]], "body: must be a JSON object, got array"),
]


@pytest.mark.parametrize(("body", "says"), BAD_BODIES, ids=[s for _, s in BAD_BODIES])
def test_bad_recall_bodies_get_422_saying_what_and_where(client, body, says):
    r = client.post("/rec/recall", json=body)
    assert r.status_code == 422, r.text
    assert says in r.json()["detail"]
    assert r.json()["errors"] and all({"loc", "msg", "type"} <= set(e) for e in r.json()["errors"])


@pytest.mark.parametrize(
    ("content", "headers", "says"),
    [
        (b'{"top_k": 5, "hist_item": [[1, 2]', {"Content-Type": "application/json"}, "body: invalid JSON"),
        (b"", {"Content-Type": "application/json"}, "body: is required"),
        (b'{"hist_item": [[1]]}', {"Content-Type": "text/plain"}, "Content-Type: application/json"),
        (b'{"hist_item": [[' + b"9" * 4400 + b"]]}", {"Content-Type": "application/json"},
         "could not be read as JSON"),
    ],
    ids=["malformed", "empty", "wrong-content-type", "4400-digit-id"],
)
def test_unreadable_bodies_get_422(client, content, headers, says):
    r = client.post("/rec/recall", content=content, headers=headers)
    assert r.status_code == 422, r.text
    assert says in r.json()["detail"]


def test_many_bad_ids_give_a_bounded_message(client):
    r = client.post("/rec/recall", json={"hist_item": [[0.5] * MAX_HIST]})
    assert r.status_code == 422
    assert len(r.json()["errors"]) == 20 and r.json()["detail"].endswith(f"and {MAX_HIST - 20} more")


def test_bodies_over_the_limit_get_413_before_they_are_read(client):
    big = b'{"hist_item": [[1]], "pad": "' + b"x" * 9000 + b'"}'
    r = client.post("/rec/recall", content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert "8192 bytes" in r.json()["detail"]
    assert r.headers["x-request-id"]

    def chunks():  # no Content-Length: the limit must be enforced while reading
        for _ in range(100):
            yield b" " * 1000

    r = client.post("/rec/recall", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert "8192 bytes" in r.json()["detail"]
    assert client.get("/healthz").status_code == 200


# ------------------------------------------------------------------ token, state, errors
@pytest.mark.parametrize("path", ["/rec/insert_data", "/qa/drop", "/rec/drop"])
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-token-0123456789"},
                                     {"Authorization": TOKEN}])
def test_mutating_endpoints_need_the_token(loaded, path, headers):
    before = loaded.post("/rec/count").json()["count"]
    r = loaded.post(path, headers=headers)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert "Bearer <API_TOKEN>" in r.json()["detail"]
    assert loaded.post("/rec/count").json()["count"] == before > 0


def test_read_endpoints_stay_open_with_a_token_set(loaded):
    assert loaded.post("/rec/count").status_code == 200
    assert loaded.post("/rec/recall", json={"hist_item": [[1]]}).status_code == 200
    assert loaded.get("/readyz").status_code == 200


@pytest.mark.parametrize("path", ["/qa/drop", "/rec/drop"])
def test_drop_then_count_is_zero_and_recall_says_to_insert(loaded, path):
    r = loaded.post(path, headers=AUTH)
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    assert loaded.post("/rec/count").json() == {"count": 0}
    r = loaded.post("/rec/recall", json={"top_k": 5, "hist_item": [[1, 2]]})
    assert r.status_code == 409
    assert r.json()["detail"] == "collection is empty: call /rec/insert_data"
    ready = loaded.get("/readyz")
    assert ready.status_code == 503 and "insert_data" in ready.json()["checks"]["collection"]
    assert loaded.post(path, headers=AUTH).status_code == 200  # dropping nothing is fine
    assert loaded.post("/rec/insert_data", headers=AUTH).status_code == 200
    assert loaded.post("/rec/recall", json={"top_k": 5, "hist_item": [[1, 2]]}).status_code == 200


def test_one_insert_at_a_time_and_recall_keeps_answering_during_it(loaded, tiny_model):
    """A second insert while one runs gets 409; recall meanwhile answers from the old data."""
    results: dict[str, object] = {}

    def first_insert():
        results["first"] = loaded.post("/rec/insert_data", headers=AUTH)

    for _attempt in range(5):  # the insert may finish before we look; try again
        worker = threading.Thread(target=first_insert)
        worker.start()
        while worker.is_alive() and not loaded.app.state.engine.inserting:
            time.sleep(0.001)
        if not loaded.app.state.engine.inserting:
            worker.join()
            continue
        second = loaded.post("/rec/insert_data", headers=AUTH)
        drop = loaded.post("/qa/drop", headers=AUTH)
        during = [loaded.post("/rec/recall", json={"top_k": 10, "hist_item": [[4, 8]]})
                  for _ in range(3)]
        worker.join()
        assert second.status_code == 409 and "already running" in second.json()["detail"]
        assert drop.status_code == 409
        for r in during:
            assert r.status_code == 200, r.text
            check_rows(r.json(), [[4, 8]], 10, item_count(tiny_model))
        assert results["first"].status_code == 200
        break
    else:
        pytest.fail("insert_data was never caught running")
    assert loaded.post("/rec/count").json()["count"] == item_count(tiny_model) - 1


def test_unexpected_errors_are_a_logged_500_with_a_request_id(tiny_model, tmp_path, caplog):
    settings = service_settings(tiny_model, MILVUS_URI=str(tmp_path / "items.db"))
    # raise_server_exceptions (the default) would re-raise anything that leaves the app: the
    # error must stop inside it, or uvicorn would also drop the client's connection.
    with open_client(settings) as c:

        @c.app.get("/boom")
        def boom() -> None:
            raise RuntimeError("secret internals")

        r = c.get("/boom", headers={"X-Request-ID": "abc-123"})
        assert r.status_code == 500
        assert r.json()["request_id"] == "abc-123"
        assert "secret internals" not in r.text and "Traceback" not in r.text
        assert "abc-123" in caplog.text and "secret internals" in caplog.text
        # Without a token the mutating endpoints are open.
        assert c.post("/rec/insert_data").status_code == 200
        assert c.get("/healthz").headers["x-request-id"]


def test_milvus_unreachable_is_503_and_the_process_stays_up(tiny_model):
    settings = service_settings(
        tiny_model, MILVUS_URI=f"http://127.0.0.1:{free_port()}", MILVUS_TIMEOUT="1"
    )
    with open_client(settings) as c:
        assert c.get("/healthz").status_code == 200
        ready = c.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["milvus"].startswith("unreachable")
        for path, body in [("/rec/count", None), ("/rec/insert_data", None),
                           ("/rec/recall", {"hist_item": [[1]]})]:
            r = c.post(path, json=body)
            assert r.status_code == 503, (path, r.text)
            assert r.json()["detail"].startswith("Milvus is unavailable")
            assert r.headers["retry-after"]


def test_a_model_of_another_dimension_is_refused_at_start(tiny_model, tmp_path):
    settings = service_settings(tiny_model, MILVUS_URI=str(tmp_path / "x.db"), VECTOR_DIMENSION="32")
    with pytest.raises(ValueError, match="VECTOR_DIMENSION=32"):
        with open_client(settings):
            pass


# ------------------------------------------------------------------ the real Milvus server
# `milvus_server` is the session fixture of tests/milvus_server.py (wired in by conftest).
@pytest.fixture(scope="module")
def server_client(request, tiny_model) -> Iterator[TestClient]:
    try:
        server = request.getfixturevalue("milvus_server")
    except pytest.FixtureLookupError:
        pytest.skip("milvus_server is not wired into tests/conftest.py (see tests/milvus_server.py)")
    collection = f"api_{uuid.uuid4().hex[:8]}"
    settings = service_settings(
        tiny_model, MILVUS_URI=server.uri, DEFAULT_COLLECTION=collection, API_TOKEN=TOKEN,
        MILVUS_TIMEOUT="3",
    )
    with open_client(settings) as c:
        yield c
        c.post("/qa/drop", headers=AUTH)


@pytest.mark.server
def test_server_mode_core(server_client, tiny_model):
    c, n = server_client, item_count(tiny_model)
    assert c.post("/rec/count").json() == {"count": 0}
    assert c.post("/rec/recall", json={"hist_item": [[1]]}).status_code == 409
    for _ in range(2):  # re-running replaces (alias switch), never duplicates
        r = c.post("/rec/insert_data", headers=AUTH)
        assert r.status_code == 200 and r.json()["count"] == n - 1
        assert c.post("/rec/count").json() == {"count": n - 1}
    ready = c.get("/readyz")
    assert ready.status_code == 200 and "server" in ready.json()["checks"]["milvus"]
    histories = [[43, 23, 65], [5, 17, 3, n + 4]]
    r = c.post("/rec/recall", json={"top_k": 50, "hist_item": histories})
    assert r.status_code == 200, r.text
    check_rows(r.json(), histories, 50, n)
    assert c.post("/rec/recall", json={"hist_item": [[True]]}).status_code == 422
    assert c.post("/qa/drop").status_code == 401
    assert c.post("/rec/drop", headers=AUTH).status_code == 200
    assert c.post("/rec/count").json() == {"count": 0}
    r = c.post("/rec/recall", json={"hist_item": [[1]]})
    assert r.status_code == 409 and r.json()["detail"] == "collection is empty: call /rec/insert_data"


@pytest.mark.server
@pytest.mark.slow
def test_server_outage_is_503_then_answers_resume_without_a_restart(request, server_client,
                                                                     tiny_model):
    c, server = server_client, request.getfixturevalue("milvus_server")
    assert c.post("/rec/insert_data", headers=AUTH).status_code == 200
    body = {"top_k": 10, "hist_item": [[5, 17, 3]]}
    before = c.post("/rec/recall", json=body).json()
    server.stop()
    try:
        for path, payload in [("/rec/recall", body), ("/rec/count", None)]:
            t0 = time.monotonic()
            r = c.post(path, json=payload)
            assert r.status_code == 503, r.text
            assert r.json()["detail"].startswith("Milvus is unavailable")
            assert time.monotonic() - t0 < 3 + 5  # MILVUS_TIMEOUT plus slack
        assert c.get("/readyz").status_code == 503
        assert c.get("/healthz").status_code == 200
    finally:
        server.start()
    deadline = time.monotonic() + 90
    while (r := c.post("/rec/recall", json=body)).status_code == 503:
        assert time.monotonic() < deadline, r.text
        time.sleep(1)  # the server reloads its collections after a restart
    assert r.status_code == 200 and r.json() == before
    assert c.post("/rec/count").json() == {"count": item_count(tiny_model) - 1}
