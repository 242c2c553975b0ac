"""The target-condition tree and its meaning: evaluation (IoT Hub semantics) and printing.

Frozen dataclasses that :func:`edgeship.hub.targeting.condition.parse` builds.
Evaluation is three-valued, as IoT Hub's query language (Cosmos DB SQL): a missing
tag or a comparison across types is *undefined* (``None`` internally), ``NOT``
keeps it undefined, ``false AND undefined`` is false, ``true OR undefined`` is
true, and a condition that ends undefined does not match.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from edgeship.errors import InputError

__all__ = [
    "ALL_DEVICES",
    "AllDevices",
    "And",
    "Compare",
    "Condition",
    "DeviceFacts",
    "Field",
    "In",
    "IsDefined",
    "Not",
    "Or",
    "TargetConditionError",
    "Value",
    "evaluate",
    "unparse",
]


class TargetConditionError(InputError):
    """A target condition does not parse; the message names the column and what was expected."""


Value = str | int | float | bool
"""A literal: 'text' or "text", a number, TRUE or FALSE."""


@dataclass(frozen=True)
class DeviceFacts:
    """What a condition may look at: the device id and its tags (nested objects allowed)."""

    device_id: str
    tags: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Field:
    """``deviceId`` (``path == ("deviceId",)``) or ``tags.a.b`` (``path == ("tags", "a", "b")``)."""

    path: tuple[str, ...]


@dataclass(frozen=True)
class Compare:
    field: Field
    op: Literal["=", "!="]
    value: Value


@dataclass(frozen=True)
class In:
    field: Field
    values: tuple[Value, ...]


@dataclass(frozen=True)
class IsDefined:
    field: Field


@dataclass(frozen=True)
class Not:
    operand: Condition


@dataclass(frozen=True)
class And:
    """Two or more operands (n-ary, so a long chain does not nest deeply)."""

    operands: tuple[Condition, ...]


@dataclass(frozen=True)
class Or:
    operands: tuple[Condition, ...]


@dataclass(frozen=True)
class AllDevices:
    """The condition ``*``."""


ALL_DEVICES = AllDevices()

Condition = Compare | In | IsDefined | Not | And | Or | AllDevices


# --- evaluation ------------------------------------------------------------------------------

_MISSING = object()


def _lookup(target: Field, device: DeviceFacts) -> Any:
    if target.path == ("deviceId",):
        return device.device_id
    value: Any = device.tags
    for part in target.path[1:]:
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _same_type(left: Any, right: Value) -> bool:
    """Comparable scalars: both strings, both booleans, or both non-boolean numbers."""
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool)
    if isinstance(left, str) or isinstance(right, str):
        return isinstance(left, str) and isinstance(right, str)
    return isinstance(left, (int, float)) and isinstance(right, (int, float))


def _equals(left: Any, right: Value) -> bool | None:
    if left is _MISSING or not _same_type(left, right):
        return None
    return bool(left == right)


def _eval(node: Condition, device: DeviceFacts) -> bool | None:
    """Three-valued: True, False or None (undefined)."""
    if isinstance(node, AllDevices):
        return True
    if isinstance(node, Compare):
        equal = _equals(_lookup(node.field, device), node.value)
        return equal if equal is None or node.op == "=" else not equal
    if isinstance(node, In):
        left = _lookup(node.field, device)
        results = [_equals(left, value) for value in node.values]
        if any(results):
            return True
        return None if None in results else False
    if isinstance(node, IsDefined):
        return _lookup(node.field, device) is not _MISSING
    if isinstance(node, Not):
        inner = _eval(node.operand, device)
        return None if inner is None else not inner
    if isinstance(node, And):
        results = [_eval(op, device) for op in node.operands]
        if False in results:
            return False
        return None if None in results else True
    results = [_eval(op, device) for op in node.operands]
    if True in results:
        return True
    return None if None in results else False


def evaluate(condition: Condition, device: DeviceFacts) -> bool:
    """True when ``device`` is targeted; an undefined result (a missing tag) is False."""
    return _eval(condition, device) is True


# --- printing ---------------------------------------------------------------------------------


def _literal_text(value: Value) -> str:
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return repr(value)


def unparse(node: Condition) -> str:
    """A canonical text for ``node``; ``parse(unparse(node)) == node`` for every parsed tree."""
    if isinstance(node, AllDevices):
        return "*"
    if isinstance(node, Compare):
        return f"{'.'.join(node.field.path)} {node.op} {_literal_text(node.value)}"
    if isinstance(node, In):
        return f"{'.'.join(node.field.path)} IN ({', '.join(_literal_text(v) for v in node.values)})"
    if isinstance(node, IsDefined):
        return f"IS_DEFINED({'.'.join(node.field.path)})"
    if isinstance(node, Not):
        inner = unparse(node.operand)
        return f"NOT ({inner})" if isinstance(node.operand, (And, Or)) else f"NOT {inner}"
    if isinstance(node, And):
        return " AND ".join(f"({unparse(op)})" if isinstance(op, (And, Or)) else unparse(op) for op in node.operands)
    return " OR ".join(f"({unparse(op)})" if isinstance(op, Or) else unparse(op) for op in node.operands)
