"""Every string and list in the published contract states a limit (issue: bad input)."""

from __future__ import annotations

from typing import Any

import pytest

from app.domain.events import json_schemas

# Strings bounded by something other than maxLength.
BOUNDED_BY = ("enum", "const")


def unbounded(node: Any, path: str = "") -> list[str]:
    """Paths of string schemas without maxLength and array schemas without maxItems."""
    found: list[str] = []
    if isinstance(node, dict):
        kind = node.get("type")
        if kind == "string" and "maxLength" not in node and node.get("format") != "date-time":
            if not any(k in node for k in BOUNDED_BY):
                found.append(path)
        if kind == "array" and "maxItems" not in node:
            found.append(path)
        for key, child in node.items():
            found += unbounded(child, f"{path}/{key}")
    elif isinstance(node, list):
        for i, child in enumerate(node):
            found += unbounded(child, f"{path}[{i}]")
    return found


@pytest.mark.parametrize("name", sorted(json_schemas()))
def test_every_string_and_list_has_a_limit(name: str) -> None:
    assert unbounded(json_schemas()[name]) == []


def test_the_check_finds_an_unbounded_string_and_list() -> None:
    schema = {"properties": {"a": {"type": "string"}, "b": {"type": "array", "items": {}},
                             "c": {"type": "string", "maxLength": 3}}}  # fmt: skip
    assert unbounded(schema) == ["/properties/a", "/properties/b"]
