"""The names the item store gives its collections, and which names a user may choose.

Pure (no pymilvus), so the service's settings can check DEFAULT_COLLECTION with the same rule.
"""

from __future__ import annotations

import re

# Parts of the names the store derives from a user's collection name: physical collections
# (<name>__v<n>), the Lite pointer (<name>__served) and the build leases (<name>__builds).
PHYSICAL = "__v"
POINTER = "__served"
BUILDS = "__builds"
RESERVED_PARTS = (PHYSICAL, POINTER, BUILDS)
# Milvus's rule, capped at 201 characters so that the derived names stay within its 255.
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,200}$")


def collection_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a served collection's name, or None when it can."""
    if not _NAME.match(name):
        return ("a Milvus collection name: a letter or _ first, then letters, digits or _ "
                f"(at most 201), got {name!r}")
    if any(part in name for part in RESERVED_PARTS):
        return (f"collection name {name!r} contains one of {RESERVED_PARTS}, "
                "which the item store reserves")
    return None
