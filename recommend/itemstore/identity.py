"""Which model's items a collection holds, written into the collection's description.

A physical collection is built once and never changed, so its description is a fitting
place: reading it costs one describe per collection, cached. Two identities are the same
model when their checksums agree; epoch, config and run only make the messages readable.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

Identity = Mapping[str, Any]

_PREFIX = "mind-items "
# What decides "same model": the item table the collection was built from and the weights.
_KEYS = ("items_sha256", "model_sha256")


def encode(identity: Identity | None) -> str:
    return _PREFIX + json.dumps(dict(identity or {}), sort_keys=True)


def decode(description: str) -> dict[str, Any] | None:
    """The identity written by ``encode``; None for a collection without one."""
    if not description.startswith(_PREFIX):
        return None
    try:
        value = json.loads(description[len(_PREFIX):])
    except ValueError:
        return None
    return value if isinstance(value, dict) and value else None


def same_model(a: Identity | None, b: Identity | None) -> bool:
    # The item map is optional (None on both sides: a catalogue of ids only) but must agree.
    return a is not None and b is not None and all(
        a.get(k) is not None and a.get(k) == b.get(k) for k in _KEYS) \
        and a.get("item_map_sha256") == b.get("item_map_sha256")


def describe(identity: Identity | None) -> str:
    """"epoch 1 of /x/config.yaml (run 3f2a1c0d)"; "no model identity" without one."""
    if identity is None:
        return "items of an unknown model (no model identity: built by an older version or by hand)"
    run = identity.get("run_id")
    return (f"epoch {identity.get('epoch', '?')} of {identity.get('config', '?')}"
            + (f" (run {str(run)[:8]})" if run else "")
            + f", items {str(identity.get('items_sha256', '?'))[:12]}"
            + (f", item map {str(identity['item_map_sha256'])[:12]}"
               if identity.get("item_map_sha256") else ""))


def mismatch_message(served: Identity | None, mine: Identity) -> str:
    return (f"the collection holds {describe(served)}; this service serves {describe(mine)}: "
            "call /rec/insert_data to load this model's items")
