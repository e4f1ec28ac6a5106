"""service.batcher.MicroBatcher: who is answered together, and what each caller gets back."""

import asyncio
import threading

import numpy as np
import pytest

from service.batcher import BatcherClosed, MicroBatcher
from test_retrieval import TinyTower


class WideTower(TinyTower):  # every positive id is "known", so a history can be long
    item_count = 10**6

    def known_items(self, history):
        h = np.asarray(history, dtype=np.int64)
        return h[h > 0]


def recall(engine, histories, top_k, **kwargs):
    """One recall through the engine's async path, from a test's thread."""
    return asyncio.run(engine.recall_async(histories, top_k, **kwargs))


class Gate:
    """answer_batch that records each batch and holds the first one until released."""

    def __init__(self, fail_on=None, shared=None):
        self.batches: list[list] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.fail_on, self.shared = fail_on, shared

    def __call__(self, queries):
        self.batches.append(list(queries))
        self.entered.set()
        assert self.release.wait(10)
        if self.shared is not None and len(self.batches) > 1:
            raise self.shared
        if self.fail_on in queries:
            raise ValueError(f"cannot answer {self.fail_on}")
        return [q * 10 for q in queries]


def _submit_while_busy(batcher, gate, first, others):
    """Submit ``first``, wait until it is being answered, queue ``others``, then release."""
    futures = [batcher.submit(first)]
    assert gate.entered.wait(10)
    futures += [batcher.submit(q) for q in others]
    gate.release.set()
    return futures


def test_a_lone_query_is_answered_at_once():
    gate = Gate()
    gate.release.set()
    batcher = MicroBatcher(gate, max_batch=8)
    assert batcher(3) == 30
    assert gate.batches == [[3]]
    batcher.close()


def test_queries_arriving_during_a_pass_are_answered_together_in_order():
    gate = Gate()
    batcher = MicroBatcher(gate, max_batch=8)
    futures = _submit_while_busy(batcher, gate, 1, [2, 3, 4])
    assert [f.result(10) for f in futures] == [10, 20, 30, 40]
    assert gate.batches == [[1], [2, 3, 4]]
    batcher.close()


def test_a_pass_never_exceeds_max_batch_by_weight():
    gate = Gate()
    batcher = MicroBatcher(gate, max_batch=5, size_of=lambda q: q)
    # Weights 2+3 fit in 5; 4 starts the next pass, with the 1 that still fits beside it;
    # 9 is too big for any pass and runs alone.
    futures = _submit_while_busy(batcher, gate, 1, [2, 3, 4, 9, 1])
    assert [f.result(10) for f in futures] == [10, 20, 30, 40, 90, 10]
    assert gate.batches == [[1], [2, 3], [4, 1], [9]]
    batcher.close()


def test_one_failing_query_does_not_fail_the_others():
    gate = Gate(fail_on=3)
    batcher = MicroBatcher(gate, max_batch=8)
    futures = _submit_while_busy(batcher, gate, 1, [2, 3, 4])
    assert futures[1].result(10) == 20 and futures[3].result(10) == 40
    with pytest.raises(ValueError, match="cannot answer 3"):
        futures[2].result(10)
    assert gate.batches == [[1], [2, 3, 4], [2], [3], [4]]  # retried one by one
    batcher.close()


def test_a_shared_error_reaches_every_caller_without_retries():
    class Down(RuntimeError):
        pass

    gate = Gate(shared=Down("Milvus is down"))
    batcher = MicroBatcher(gate, max_batch=8, shared_errors=(Down,))
    futures = _submit_while_busy(batcher, gate, 1, [2, 3])
    assert futures[0].result(10) == 10
    for f in futures[1:]:
        with pytest.raises(Down, match="Milvus is down"):
            f.result(10)
    assert gate.batches == [[1], [2, 3]]  # one pass, no per-query retries
    batcher.close()


def test_closed_batcher_refuses_new_work_but_finishes_taken_work():
    gate = Gate()
    batcher = MicroBatcher(gate, max_batch=8)
    first = batcher.submit(1)
    assert gate.entered.wait(10)
    queued = batcher.submit(2)
    closer = threading.Thread(target=batcher.close)
    closer.start()
    gate.release.set()
    closer.join(10)
    assert first.result(10) == 10 and queued.result(10) == 20
    with pytest.raises(BatcherClosed):
        batcher.submit(3)


def test_max_batch_must_be_positive():
    with pytest.raises(ValueError, match="max_batch"):
        MicroBatcher(lambda qs: qs, max_batch=0)


class TimingStore:
    """Stands in for the store's timing only (Milvus itself is tested elsewhere)."""

    def __init__(self, search, timeout: float, uri: str):
        self.search, self.timeout, self.uri = search, timeout, uri

    def close(self) -> None:
        pass


def test_engine_answers_503_at_the_deadline_when_the_search_hangs():
    """A search stuck past MILVUS_TIMEOUT (the store's timeout) must not hold callers: each
    gets MilvusUnavailable (503) at the deadline, and answers resume when searches do."""
    import asyncio
    import time

    from itemstore import MilvusUnavailable
    from service.engine import RecallEngine
    from test_retrieval import TinyTower, exact_search

    tower = TinyTower()
    unblocked = threading.Event()

    def stuck(vectors, k):
        unblocked.wait(10)
        return exact_search(tower.items)(vectors, k)

    engine = RecallEngine(tower, TimingStore(stuck, timeout=0.3, uri="http://stuck:19530"))
    t0 = time.perf_counter()
    with pytest.raises(MilvusUnavailable, match="no answer within 0.3 s"):
        recall(engine, [[1, 3]], top_k=2)
    with pytest.raises(MilvusUnavailable, match="slow or unreachable"):
        asyncio.run(engine.recall_async([[1, 3]], top_k=2))
    assert time.perf_counter() - t0 < 2
    unblocked.set()
    assert sorted(recall(engine, [[1, 3]], top_k=2)[0]) == [2, 4]
    assert asyncio.run(engine.recall_async([[4]], top_k=1, exclude_history=False)) == [[3]]
    engine.close()


def test_a_queue_wait_just_after_a_slow_search_is_blamed_on_milvus():
    """The batcher expires the queue only between passes: a wait that ends just after a search
    that outlasted QUEUE_WAIT (say the first after a Milvus restart) is Milvus's 503, not
    'overloaded'; once a turn has gone by without one, overload is overload again."""
    import time

    from itemstore import MilvusUnavailable
    from service.domain import ServiceOverloaded
    from service.engine import RecallEngine
    from test_retrieval import TinyTower, exact_search

    tower = TinyTower()

    def slow(vectors, k):
        time.sleep(0.3)
        return exact_search(tower.items)(vectors, k)

    engine = RecallEngine(tower, TimingStore(slow, timeout=5.0, uri="http://slow:19530"),
                          queue_wait=0.2)
    overloaded = ServiceOverloaded("waited 0.2 s for a turn")
    assert engine._blame(engine._recall_batcher, overloaded) is overloaded  # no slow search yet
    assert sorted(recall(engine, [[1, 3]], top_k=2)[0]) == [2, 4]  # one 0.3 s search
    assert isinstance(engine._blame(engine._recall_batcher, overloaded), MilvusUnavailable)
    time.sleep(0.25)
    assert engine._blame(engine._recall_batcher, overloaded) is overloaded
    engine.close()


# ------------------------------------------------------------------ overload and fairness
def test_a_full_queue_refuses_at_once_and_a_long_wait_times_out():
    from service.batcher import QueueFull, QueueTimeout
    from service.domain import ServiceOverloaded

    gate = Gate()
    batcher = MicroBatcher(gate, max_batch=8, size_of=lambda q: q, max_queued=5, max_wait=0.2)
    running = batcher.submit(1)
    assert gate.entered.wait(10)
    waiting = batcher.submit(4)
    with pytest.raises(QueueFull, match="4 users are already waiting"):
        batcher.submit(2)  # 4 + 2 > 5
    assert issubclass(QueueFull, ServiceOverloaded)
    threading.Event().wait(0.3)  # past max_wait while the first pass still runs
    gate.release.set()
    assert running.result(10) == 10
    with pytest.raises(QueueTimeout, match="in the queue"):
        waiting.result(10)
    assert batcher.submit(2).result(10) == 20  # the queue drained: taken again
    batcher.close()


def test_a_stream_of_full_size_queries_lets_small_ones_through():
    gate = Gate()
    batcher = MicroBatcher(gate, max_batch=4, size_of=lambda q: q)
    # Arrival order 4, 4, 4, 1: the small query goes right after the first full-size pass.
    futures = _submit_while_busy(batcher, gate, 1, [4, 4, 4, 1])
    assert [f.result(10) for f in futures] == [10, 40, 40, 40, 10]
    assert gate.batches == [[1], [4], [1], [4], [4]]
    batcher.close()


def test_queries_of_very_different_depth_wait_for_another_pass():
    from service.batcher import depths_compatible

    assert depths_compatible(10, 128) and depths_compatible(500, 1000)
    assert not depths_compatible(50, 1050)
    gate = Gate()
    batcher = MicroBatcher(gate, max_batch=8, depth_of=lambda q: q)
    futures = _submit_while_busy(batcher, gate, 50, [60, 1050, 50, 900])
    assert [f.result(10) for f in futures] == [500, 600, 10500, 500, 9000]
    assert gate.batches == [[50], [60, 50], [1050, 900]]
    batcher.close()


def test_a_long_history_does_not_deepen_a_short_requests_search():
    """Unit level, real engine and recall_many: the search depth each pass asks Milvus for."""

    from service.engine import RecallEngine
    from test_retrieval import exact_search

    tower, depths, gate = WideTower(), [], Gate()
    gate.release.clear()

    class RecordingStore:
        timeout, uri = 10.0, "http://recording:19530"

        def search(self, vectors, k):
            depths.append(k)
            if len(depths) == 1:  # hold the first pass so the others queue together
                gate.entered.set()
                assert gate.release.wait(10)
            return exact_search(tower.items)(vectors, k)

        def close(self):
            pass

    engine = RecallEngine(tower, RecordingStore())
    first = engine._recall_batcher.submit(_query([[1]], 5))
    assert gate.entered.wait(10)
    # 1,000 clicks, two of them on items with vectors (all-zero interests are never searched).
    long_history = engine._recall_batcher.submit(_query([[1, 3, *range(10, 1008)]], 10))
    short = engine._recall_batcher.submit(_query([[1, 3]], 10))
    gate.release.set()
    for f in (first, long_history, short):
        f.result(10)
    # Batched together the short request would search 1010 deep; alone it searches 12.
    assert sorted(depths) == [5 + 1, 10 + 2, 10 + 1000]
    engine.close()


def _query(histories, top_k):
    from mind.retrieval import RecallQuery

    return RecallQuery(histories, top_k, exclude_history=True)


def test_overload_is_a_503_with_retry_after_that_names_the_service_not_milvus():
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from service import errors
    from service.batcher import QueueFull

    app = FastAPI()
    errors.install(app)

    @app.get("/busy")
    def busy():
        raise QueueFull("1024 users are already waiting (at most 1024)")

    r = TestClient(app).get("/busy")
    assert r.status_code == 503
    assert r.headers["retry-after"] == "1"
    assert r.json()["detail"].startswith("the recall service is overloaded, try again shortly")
    assert "Milvus" not in r.json()["detail"]


# ------------------------------------------------------------------ the heavy lane
def test_a_heavy_query_has_a_lane_of_its_own_and_searches_in_small_calls():
    """Unit level, real engine and recall_many: a 1-user recall is answered while a heavy pass
    (users x depth over HEAVY_COST) is stuck in its search, and that search asks for at most
    HEAVY_HITS_PER_CALL hits per call."""

    from service import engine as engine_module
    from service.engine import HEAVY_COST, HEAVY_HITS_PER_CALL, RecallEngine, query_cost
    from test_retrieval import exact_search

    tower, calls = WideTower(), []
    held, release = threading.Event(), threading.Event()

    class RecordingStore:
        timeout, uri = 10.0, "http://recording:19530"

        def search(self, vectors, k):
            heavy = threading.current_thread().name.endswith("heavy")
            calls.append((heavy, len(vectors) * k))
            if heavy:
                held.set()
                assert release.wait(10)
            return exact_search(tower.items)(vectors, k)

        def close(self):
            pass

    engine = RecallEngine(tower, RecordingStore(), queue_wait=30)
    heavy = _query([[1, 3, *range(10, 1000)]] * 100, 1000)  # 100 users x depth ~2,000
    assert query_cost(heavy) > HEAVY_COST >= query_cost(_query([[1, 3]], 10))
    lane, ticket = engine._submit(heavy)
    assert lane is engine._heavy_batcher and held.wait(10)
    assert recall(engine, [[1, 3]], top_k=2) == [[2, 4]]  # while the heavy search is held
    release.set()
    rows = ticket.result(10)
    assert rows == engine_module.recall_many(tower, exact_search(tower.items), [heavy])[0]
    heavy_calls = [hits for is_heavy, hits in calls if is_heavy]
    assert len(heavy_calls) > 1 and max(heavy_calls) <= HEAVY_HITS_PER_CALL
    assert [hits for is_heavy, hits in calls if not is_heavy] == [2 * (2 + 2)]  # 2 vectors, 1 call
    engine.close()


def test_a_chunked_search_answers_as_one_call_does():
    import numpy as np

    from service.engine import chunked_search

    rng = np.random.default_rng(5)
    items = rng.standard_normal((500, 8)).astype(np.float32)
    vectors = rng.standard_normal((37, 8)).astype(np.float32)

    def search(q, k):  # row by row: BLAS would round a batch of another size differently
        scores = np.stack([items @ row for row in q])
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return order + 1, np.take_along_axis(scores, order, axis=1)

    whole = search(vectors, 60)
    for max_hits in (60, 61, 600, 37 * 60, 10**6):
        got = chunked_search(search, max_hits)(vectors, 60)
        np.testing.assert_array_equal(got[0], whole[0])
        np.testing.assert_array_equal(got[1], whole[1])


def test_a_pass_led_by_a_small_query_takes_every_small_one_waiting():
    """6 full-size queries and 20 one-user ones queued in turn: the small ones go in one pass,
    not one each between the full-size ones (was: [s0] [big0] [s1] [big1] ...)."""
    gate = Gate()
    big = [100 + i for i in range(6)]
    small = list(range(1, 21))
    mixed = [q for pair in zip(big, small) for q in pair] + small[6:]
    batcher = MicroBatcher(gate, max_batch=256, size_of=lambda q: 256 if q >= 100 else 1)
    futures = _submit_while_busy(batcher, gate, 0, mixed)
    assert [f.result(10) for f in futures] == [q * 10 for q in [0, *mixed]]
    # The oldest (big0) fills a pass alone; then the oldest small one leads, taking them all.
    assert gate.batches[1:3] == [[big[0]], small]
    assert gate.batches[3:] == [[b] for b in big[1:]]
    batcher.close()


# ------------------------------------------------------------------ overlapping passes
class RandomTower(WideTower):
    """300 items with random 8-d vectors; interest j of a user = mean of the known items at
    the positions = j mod 3 of its last 20 clicks. Counts forwards running at once."""

    item_count, maxlen = 300, 20

    def __init__(self, seed=7):
        rng = np.random.default_rng(seed)
        self.items = rng.normal(size=(self.item_count, 8)).astype(np.float32)
        self.items[0] = 0
        self.forwards_at_once = self.most_forwards_at_once = 0
        self._lock = threading.Lock()

    def known_items(self, history):
        h = np.asarray(history, dtype=np.int64)
        return h[(h > 0) & (h < self.item_count)]

    def interests(self, histories):
        with self._lock:
            self.forwards_at_once += 1
            self.most_forwards_at_once = max(self.most_forwards_at_once, self.forwards_at_once)
        out = np.zeros((len(histories), 3, 8), dtype=np.float32)
        for u, h in enumerate(histories):
            known = self.known_items(h)[-self.maxlen:]
            for j in range(3):
                if len(known[j::3]):
                    out[u, j] = self.items[known[j::3]].mean(axis=0)
        threading.Event().wait(0.0005)  # a forward takes time: another pass could overlap it
        with self._lock:
            self.forwards_at_once -= 1
        return out

    def popular_items(self, n, allowed=None):
        ids = np.arange(1, self.item_count)
        return (ids if allowed is None else ids[allowed[ids]])[:n]


@pytest.mark.parametrize("pace", [False, True])
def test_overlapping_passes_answer_exactly_as_one_query_at_a_time(pace):
    """3,000 random queries from 8 threads through an engine with 2 passes in flight, paced or
    not: every answer equals recall_many on that query alone; unpaced, searches did overlap;
    the model never ran two forwards at once."""
    import random

    from mind.retrieval import RecallQuery, recall_many
    from service.engine import RecallEngine

    tower = RandomTower()

    def exact(vectors, k):  # row by row: a row's scores do not depend on the batch around it
        scores = np.stack([tower.items[1:] @ v for v in vectors])
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return order + 1, np.take_along_axis(scores, order, axis=1)

    searching = {"now": 0, "most": 0}
    lock = threading.Lock()

    class OverlapStore:
        timeout, uri = 10.0, "http://overlap:19530"

        def search(self, vectors, k):
            with lock:
                searching["now"] += 1
                searching["most"] = max(searching["most"], searching["now"])
            try:
                threading.Event().wait(random.uniform(0, 0.002))
                return exact(vectors, k)
            finally:
                with lock:
                    searching["now"] -= 1

        def close(self):
            pass

    rng = random.Random(2024)
    queries = [RecallQuery(
        [[rng.randrange(0, 320) for _ in range(rng.randrange(0, 30))]
         for _ in range(rng.choice([1, 1, 1, 2, 5, 16]))],
        rng.choice([1, 5, 20, 50]), exclude_history=rng.random() < 0.7) for _ in range(3000)]
    engine = RecallEngine(tower, OverlapStore(), queue_wait=30, passes_in_flight=2,
                          pace_passes=pace)
    answers: dict[int, object] = {}

    def client(start):
        for i in range(start, len(queries), 8):
            answers[i] = engine._submit(queries[i])[1].result(30)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    engine.close()
    assert searching["most"] <= 2 and (pace or searching["most"] == 2)
    assert tower.most_forwards_at_once == 1
    assert engine._recall_batcher.passes < len(queries)  # batched, not one by one
    for i, query in enumerate(queries):
        assert answers[i] == recall_many(tower, exact, [query])[0], i


def test_a_pass_hands_the_turn_on_after_its_model_stage_and_at_most_workers_run():
    """Workers 2: the second pass forms its batch once the first has called release_turn (its
    forward done); a third waits until one of the two ends."""
    from service.batcher import release_turn

    batches, held = [], threading.Semaphore(0)
    release = threading.Event()

    def answer(queries):
        batches.append(list(queries))
        release_turn()
        held.release()
        assert release.wait(10)
        return queries

    batcher = MicroBatcher(answer, max_batch=8, workers=2)
    first = batcher.submit("a")
    assert held.acquire(timeout=10)
    second = batcher.submit("b")
    assert held.acquire(timeout=10)  # taken while "a" is still held: passes overlap
    third = [batcher.submit(q) for q in "cd"]
    assert not held.acquire(timeout=0.2)  # both workers busy: "c" and "d" wait
    release.set()
    assert [f.result(10) for f in [first, second, *third]] == list("abcd")
    assert batches[:2] == [["a"], ["b"]] and batches[2] == ["c", "d"]
    batcher.close()


def test_a_paced_pass_takes_what_came_during_the_search_in_flight():
    """Paced, with one pass measured (model 10 ms, search 300 ms): a query arriving just after
    the next pass's search began waits for the queries that follow it and leaves with them
    once that search is near its end (unpaced: alone, at once); a lone query, with no pass in
    flight, starts at once either way."""
    import time

    from service.batcher import release_turn

    def answer(queries):
        time.sleep(0.01)
        release_turn()
        time.sleep(0.3)
        return queries

    for pace, expected in ((True, [["a"], ["b"], ["c", "d", "e"]]),
                           (False, [["a"], ["b"], ["c"], ["d", "e"]])):
        batches: list[list[str]] = []
        batcher = MicroBatcher(lambda qs: (batches.append(list(qs)), answer(qs))[1],
                               max_batch=8, workers=2, pace=pace)
        t0 = time.monotonic()
        assert batcher("a") == "a"  # measures the stages; no pass in flight: no wait
        assert time.monotonic() - t0 < 0.5
        first = batcher.submit("b")
        time.sleep(0.05)  # "b" is searching
        rest = [batcher.submit("c")]
        time.sleep(0.1)
        rest += [batcher.submit(q) for q in "de"]
        assert [f.result(10) for f in [first, *rest]] == list("bcde")
        batcher.close()
        assert batches == expected, (pace, batches)


def test_one_pass_at_a_time_paced_waits_for_the_users_the_last_pass_answered():
    """One worker, paced, passes of 0.4 s: "b", queued while "a" was answered, waits for "a"'s
    client to come back with "c" (0.05 s after "a"'s answer, well within 0.6 of a pass) and
    leaves with it; unpaced, "b" goes alone and "c" needs a pass of its own. A lone query after
    an idle spell starts at once either way."""
    import time

    for pace, expected in ((True, [["x"], ["a"], ["b", "c"]]),
                           (False, [["x"], ["a"], ["b"], ["c"]])):
        batches: list[list[str]] = []
        batcher = MicroBatcher(lambda qs: (batches.append(list(qs)), time.sleep(0.4), qs)[2],
                               max_batch=8, workers=1, pace=pace)
        assert batcher("x") == "x"  # measures a pass
        time.sleep(0.3)  # idle: "a" is a lone query
        t0 = time.monotonic()
        first = batcher.submit("a")
        time.sleep(0.05)
        second = batcher.submit("b")  # queued during "a"'s pass
        assert first.result(10) == "a"
        assert time.monotonic() - t0 < 0.7  # "a" did not wait
        time.sleep(0.05)
        third = batcher.submit("c")  # "a"'s client, back
        assert [second.result(10), third.result(10)] == ["b", "c"]
        batcher.close()
        assert batches == expected, (pace, batches)


@pytest.mark.parametrize("workers,pace", [(1, False), (1, True), (2, False), (2, True)])
def test_fairness_and_overload_rules_hold_with_passes_in_flight(workers, pace):
    """8 clients looping on full-size queries beside 20 one-user clients, each pass releasing
    the turn after its model stage: the one-user ones are >= 95% answered, p95 <= 1 s (was:
    1,472 of 1,652 refused with "users are already waiting"); a query queued past max_wait
    while every worker is stuck gets QueueTimeout; the queue bound refuses at once."""
    import time

    from service.batcher import QueueFull, QueueTimeout, release_turn

    def answer(queries):
        users = sum(1 if q == "s" else 256 for q in queries)
        time.sleep(0.001 + 0.0001 * users)  # the forward
        release_turn()
        time.sleep(0.004 + 0.0003 * users)  # the search and merge
        return queries

    batcher = MicroBatcher(answer, max_batch=256, size_of=lambda q: 1 if q == "s" else 256,
                           max_queued=1024, max_wait=2.0, workers=workers, pace=pace)
    stop = time.monotonic() + 3
    small: list[float | None] = []

    def client(kind):
        while time.monotonic() < stop:
            t0 = time.monotonic()
            try:
                batcher.submit(kind).result(10)
                took = time.monotonic() - t0
            except QueueFull:
                took = None
                time.sleep(0.01 if kind == "s" else 0)
            if kind == "s":
                small.append(took)

    threads = [threading.Thread(target=client, args=(k,)) for k in ["b"] * 8 + ["s"] * 20]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    batcher.close()
    answered = sorted(x for x in small if x is not None)
    assert len(answered) >= 0.95 * len(small), f"{len(answered)} of {len(small)} answered"
    assert answered[int(0.95 * (len(answered) - 1))] <= 1.0

    gate = threading.Event()

    def stuck(queries):
        release_turn()
        assert gate.wait(10)
        return queries

    batcher = MicroBatcher(stuck, max_batch=8, size_of=lambda q: q, max_queued=5,
                           max_wait=0.2, workers=workers, pace=pace)
    running = []
    for n in range(1, workers + 1):  # one pass each: every worker stuck
        running.append(batcher.submit(1))
        deadline = time.monotonic() + 10
        while len(batcher._running) < n and time.monotonic() < deadline:
            time.sleep(0.01)
    waiting = batcher.submit(4)
    with pytest.raises(QueueFull, match="4 users are already waiting"):
        batcher.submit(2)
    time.sleep(0.3)
    gate.set()
    assert [f.result(10) for f in running] == [1] * workers
    with pytest.raises(QueueTimeout, match="in the queue"):
        waiting.result(10)
    batcher.close()
