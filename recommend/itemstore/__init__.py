"""Item vectors in Milvus: the store the recall service and infer.py share.

    store = ItemStore("items.db", "mind_items", dim=64, identity=tower.identity())
    store.replace_items(ids, vectors)       # build a new generation, then switch to it
    ids, scores = store.search(queries, 50)

One job a module: client (pymilvus import, connection, error classes), generations (the
switch and the build leases), fast_search (the numpy search path), identity (which model a
collection holds), lite_lock (one process per Lite file), vectors (checks and layout).
"""

from itemstore.errors import (
    BuildConflict,
    CollectionMissing,
    LiteFileBusy,
    MilvusUnavailable,
    ModelMismatch,
)
from itemstore.store import DEFAULT_INDEX, INDEX_TYPES, ItemStore

__all__ = ["BuildConflict", "CollectionMissing", "DEFAULT_INDEX", "INDEX_TYPES", "ItemStore",
           "LiteFileBusy", "MilvusUnavailable", "ModelMismatch"]
