"""One Search request, its answer read from the protobuf straight into numpy.

pymilvus 2.6's public search() builds a Python dict per hit (25,600 for a 128-user request),
which was most of the client time. The fast path uses pymilvus internals (pinned in
requirements.txt) behind this one module: ``FAST_PATH`` says whether they imported, and
tests/test_itemstore.py fails loudly if an upgrade breaks them. Any error but "not found" /
"not loaded" is left to pymilvus's public search (its retries, reconnection and messages).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from itemstore.client import MilvusClient, MilvusException
from itemstore.errors import is_not_found, is_not_loaded

try:
    import grpc as _grpc
    from pymilvus.client import ts_utils as _ts_utils
    from pymilvus.client.call_context import _api_level_md
    from pymilvus.client.prepare import Prepare as _Prepare
    from pymilvus.client.utils import check_status as _check_status
    FAST_PATH = True
except ImportError:  # pragma: no cover - a pymilvus that moved them: the public path serves
    FAST_PATH = False

Hits = tuple[np.ndarray, np.ndarray, np.ndarray]  # (hits per query, flat ids, flat scores)


def public_search(client: MilvusClient, name: str, queries: np.ndarray, top_k: int,
                  search_params: dict[str, Any], timeout: float, expr: str = "") -> Hits:
    """pymilvus's MilvusClient.search, within ``timeout`` seconds."""
    if timeout <= 0.05:
        raise MilvusException(message=f"search of {name} timed out")
    hits = client.search(name, data=queries, limit=top_k, anns_field="embedding", filter=expr,
                         search_params=search_params, output_fields=[], timeout=timeout)
    topks = np.array([len(row) for row in hits], dtype=np.int64)
    ids = np.array([h["id"] for row in hits for h in row], dtype=np.int64)
    scores = np.array([h["distance"] for row in hits for h in row], dtype=np.float32)
    return topks, ids, scores


def search(client: MilvusClient, name: str, queries: np.ndarray, top_k: int,
           params: Mapping[str, int], timeout: float, fast: bool = True, expr: str = "") -> Hits:
    """Inner-product top_k of every query in one request (the request search() builds);
    ``expr``: a boolean filter on the scalar fields ("" = none)."""
    search_params = {"metric_type": "IP", "params": dict(params)}
    if not (FAST_PATH and fast):
        return public_search(client, name, queries, top_k, search_params, timeout, expr)
    conn = client._get_connection()
    context = client._generate_call_context()
    kwargs: dict[str, Any] = {}
    use_default = _ts_utils.construct_guarantee_ts(name, kwargs, conn.server_address,
                                                   context.get_db_name())
    request = _Prepare.search_requests_with_expr(
        collection_name=name, anns_field="embedding", param=search_params, limit=top_k,
        data=queries, ids=None, expr=expr, partition_names=None, output_fields=[],
        round_decimal=-1, use_default_consistency=use_default, expr_params={}, **kwargs)
    started = time.monotonic()
    try:
        response = conn._stub.Search(request, timeout=timeout, metadata=_api_level_md(context))
        _check_status(response.status)
    except MilvusException as exc:
        if is_not_found(exc) or is_not_loaded(exc):
            raise
        left = timeout - (time.monotonic() - started)
        return public_search(client, name, queries, top_k, search_params, left, expr)
    except _grpc.RpcError:
        left = timeout - (time.monotonic() - started)
        return public_search(client, name, queries, top_k, search_params, left, expr)
    res = response.results
    return (np.array(res.topks, dtype=np.int64), np.array(res.ids.int_id.data, dtype=np.int64),
            np.array(res.scores, dtype=np.float32))
