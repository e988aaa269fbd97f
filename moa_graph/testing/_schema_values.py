"""Minimal JSON values valid against a JSON schema, filled from hints in the user's words.

The stand-in uses this for tool-call arguments and for `response_format` answers. A value
holds the schema's required properties only (an object's optional ones are left out), of the
declared types, with the first `enum`/`const` value, within `minimum`/`minLength`/`minItems`;
`$ref` into `$defs`/`definitions`, `anyOf`/`oneOf` (first branch that is not `null`) and
`allOf` (merged) are followed. Where the user's text offers a fitting value it is used, in
order: a quoted string for a string, a number for a number, an enum value that the text
mentions, the arithmetic expression for a property named `expression`; otherwise strings are a
short summary of the text. Deterministic: the same schema and text give the same value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from moa_graph.testing._request import find_expression

__all__ = ["Hints", "value_for"]

_QUOTED = re.compile(r"'([^']+)'|\"([^\"]+)\"|“([^”]+)”")
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w.])")
_MAX_DEPTH = 8
_SUMMARY = 60


@dataclass
class Hints:
    """Values offered by the user's text, consumed in order as properties are filled."""

    text: str
    strings: list[str] = field(default_factory=list)
    numbers: list[str] = field(default_factory=list)
    expression: str | None = None

    @classmethod
    def from_text(cls, text: str, *, ignore: tuple[str, ...] = ()) -> Hints:
        """Collect hints from `text`, leaving out the words in `ignore` (e.g. tool names)."""
        plain = text
        for word in ignore:
            plain = plain.replace(word, " ")
        strings = [next(g for g in m.groups() if g) for m in _QUOTED.finditer(plain)]
        unquoted = _QUOTED.sub(" ", plain)
        return cls(
            text=" ".join(text.split()),
            strings=strings,
            numbers=_NUMBER.findall(unquoted),
            expression=find_expression(unquoted),
        )

    def summary(self) -> str:
        """The text, shortened: the fallback value of a string."""
        if len(self.text) <= _SUMMARY:
            return self.text or "stub"
        return self.text[: _SUMMARY - 3].rstrip() + "..."


def value_for(schema: Any, hints: Hints, *, name: str = "") -> Any:
    """A minimal value valid against `schema` (a JSON schema mapping).

    Args:
        schema: The schema; `$defs`/`definitions` at its root resolve `$ref`s.
        hints: Values from the user's text, consumed as they are used.
        name: The property name this value is for (`expression` takes arithmetic).

    Returns:
        The value: JSON-serialisable.
    """
    root = schema if isinstance(schema, Mapping) else {}
    return _value(root, root, hints, name, 0)


def _resolve(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = schema.get("$ref")
    if not isinstance(ref, str) or not ref.startswith("#/"):
        return schema
    target: Any = root
    for part in ref[2:].split("/"):
        target = target.get(part, {}) if isinstance(target, Mapping) else {}
    return target if isinstance(target, Mapping) else {}


def _value(
    schema: Mapping[str, Any], root: Mapping[str, Any], hints: Hints, name: str, depth: int
) -> Any:
    schema = _resolve(schema, root)
    if depth > _MAX_DEPTH:
        return None
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        mentioned = [v for v in schema["enum"] if isinstance(v, str) and v in hints.text]
        return mentioned[0] if mentioned else schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        branches = [b for b in schema.get(key) or [] if isinstance(b, Mapping)]
        if branches:
            usable = [b for b in branches if _resolve(b, root).get("type") != "null"]
            return _value((usable or branches)[0], root, hints, name, depth + 1)
    if isinstance(schema.get("allOf"), list):
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            if isinstance(part, Mapping):
                merged.update(_resolve(part, root))
        return _value(merged, root, hints, name, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "string"
    if kind == "object":
        properties = schema.get("properties") or {}
        required = [r for r in schema.get("required") or [] if r in properties]
        return {
            key: _value(properties[key], root, hints, key, depth + 1)
            for key in required
            if isinstance(properties[key], Mapping)
        }
    if kind == "array":
        items = schema.get("items")
        items = items if isinstance(items, Mapping) else {}
        count = int(schema.get("minItems") or 0)
        return [_value(items, root, hints, name, depth + 1) for _ in range(count)]
    if kind in {"integer", "number"}:
        return _number(schema, hints, integer=kind == "integer")
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    return _string(schema, hints, name)


def _number(schema: Mapping[str, Any], hints: Hints, *, integer: bool) -> int | float:
    value: float = 0
    while hints.numbers:
        candidate = float(hints.numbers.pop(0))
        if not integer or candidate.is_integer():
            value = candidate
            break
    low, high = schema.get("minimum"), schema.get("maximum")
    if isinstance(low, int | float) and value < low:
        value = low
    if isinstance(schema.get("exclusiveMinimum"), int | float):
        value = max(value, schema["exclusiveMinimum"] + 1)
    if isinstance(high, int | float) and value > high:
        value = high
    return int(value) if integer else value


def _string(schema: Mapping[str, Any], hints: Hints, name: str) -> str:
    if name == "expression" and hints.expression:
        text = hints.expression
    elif hints.strings:
        text = hints.strings.pop(0)
    else:
        text = hints.summary()
    low, high = schema.get("minLength"), schema.get("maxLength")
    if isinstance(low, int) and len(text) < low:
        text = text.ljust(low, "x")
    if isinstance(high, int):
        text = text[:high]
    return text
