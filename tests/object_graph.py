"""Test helper: every object reachable from a party, to scan it for key material."""

from __future__ import annotations

import gc


def reachable(root: object, limit: int = 300_000) -> list[object]:
    """Objects reachable from ``root`` through references (types and scalars skipped)."""
    seen: dict[int, object] = {}
    todo = [root]
    while todo and len(seen) < limit:
        obj = todo.pop()
        if id(obj) in seen or isinstance(obj, (type, str, bytes, int, float)):
            continue
        seen[id(obj)] = obj
        todo.extend(gc.get_referents(obj))
    return list(seen.values())
