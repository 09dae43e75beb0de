"""Spec trees before validation: the nested dicts a TOML file and `--set a.b=c` overrides make.

affssl.spec turns a tree into a `RunSpec`; this module holds what it does to the tree first:
parsing and applying a dotted override, flattening a tree to dotted keys, and reading a file's
per-base `[bases.<method>]` tables (a protocol's BYOL learning rate, say) and merging one over the
tree. Nothing here knows the spec's fields: validation, and naming a bad field, stay in affssl.spec.
"""

from __future__ import annotations

import json
import tomllib
from typing import Any

from affssl.errors import UserError
from affssl.spec.methods import METHOD_SPECS, unknown_base

BASES_KEY = "bases"


class SpecError(UserError):
    """A spec that cannot be loaded or validated; the message names the field and the fix."""


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested spec tree as {dotted field: leaf value}."""
    flat: dict[str, Any] = {}
    for k, v in tree.items():
        flat |= flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v}
    return flat


def parse_value(text: str) -> Any:
    """Parse an override value as a TOML value (numbers, booleans, lists, strings) or keep text."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_override(tree: dict[str, Any], assignment: str) -> None:
    """Apply one `a.b=c` assignment to a tree in place, creating sections as needed."""
    key, sep, text = assignment.partition("=")
    if not sep or not key.strip():
        raise SpecError(f"override {assignment!r} is not key=value; write e.g. --set optim.lr=0.001")
    *parents, leaf = key.strip().split(".")
    node = tree
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise SpecError(f"override {key!r}: {part!r} is a value, not a section")
        node = child
    node[leaf] = parse_value(text.strip())


def copy_tree(tree: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of a tree of TOML values (non-JSON leaves such as paths become strings)."""
    return json.loads(json.dumps(tree, default=str))


def method_name(tree: dict[str, Any]) -> Any:
    """The base method a tree names (simclr when it names none); not yet checked."""
    method = tree.get("method")
    return method.get("name", "simclr") if isinstance(method, dict) else "simclr"


def per_base_tables(bases: Any) -> dict[str, dict[str, Any]]:
    """The `[bases.<method>]` tables, checked for shape: a table per known base method."""
    if not isinstance(bases, dict):
        raise SpecError(f"{BASES_KEY} must be a table of per-base tables, e.g. [{BASES_KEY}.byol] with optim.lr = 1e-3")
    for name, table in bases.items():
        if name not in METHOD_SPECS:
            raise SpecError(f"[{BASES_KEY}.{name}]: {unknown_base(name)}")
        if not isinstance(table, dict):
            raise SpecError(f"{BASES_KEY}.{name} must be a table of spec sections, e.g. optim.lr = 1e-3")
        method = table.get("method")
        if BASES_KEY in table or (isinstance(method, dict) and "name" in method):
            raise SpecError(f"[{BASES_KEY}.{name}] sets its own base or nests tables of bases; remove that key")
    return bases


def merge(tree: dict[str, Any], table: dict[str, Any]) -> None:
    """Merge a nested table into a tree in place, leaf by leaf."""
    for key, value in table.items():
        if isinstance(value, dict) and isinstance(tree.get(key), dict):
            merge(tree[key], value)
        else:
            tree[key] = copy_tree({"v": value})["v"]
