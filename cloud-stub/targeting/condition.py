"""Target conditions: which devices a deployment is for, parsed and evaluated, never ``eval``-ed.

The language is the part of IoT Hub's query language that automatic device
management accepts in a ``targetCondition``, over ``deviceId`` and device tags::

    tags.site = 'lab' AND tags.arch IN ('amd64', 'arm64')
    deviceId = 'dev-1' OR NOT (tags.ring != 'canary')
    IS_DEFINED(tags.gpu) AND tags.location.floor = 3

A hand-written tokenizer and recursive-descent parser produce a small tree of
frozen dataclasses; :func:`evaluate` walks that tree against a
:class:`DeviceFacts`. Nothing in a condition can name Python code: the only
things it can read are ``deviceId`` and ``tags``. The full grammar (EBNF) and
the decisions are in ``docs/deployments.md``.

Semantics, following IoT Hub (whose query language is Cosmos DB's SQL):

- Keywords (``AND OR NOT IN IS_DEFINED TRUE FALSE``) are case-insensitive; field
  names and string comparisons are case-sensitive.
- Precedence is ``NOT`` > ``AND`` > ``OR``; parentheses group.
- A missing tag, or a comparison between different types (``tags.floor = '3'``
  against a number), is *undefined*, not false. ``NOT undefined`` is undefined,
  ``false AND undefined`` is false, ``true OR undefined`` is true, and a condition
  that ends undefined does not match (IoT Hub: "if the expression evaluates to a
  null or undefined value, it's treated as a Boolean false"). So both
  ``tags.x = 'a'`` and ``tags.x != 'a'`` are false for a device without ``x``;
  ask for absence with ``NOT IS_DEFINED(tags.x)``.
- ``*`` alone targets every device. An empty condition is an error: IoT Hub
  requires one, and an empty field is more often a mistake than a wish to
  deploy to the whole fleet.

Invariant: :func:`parse` raises only :class:`TargetConditionError` (never
RecursionError, IndexError, ...), whatever the input; nesting and length are
bounded so that holds.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from edgeship.errors import InputError

__all__ = [
    "ALL_DEVICES",
    "MAX_CONDITION_LENGTH",
    "MAX_DEPTH",
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
    "matches",
    "parse",
    "unparse",
]

MAX_CONDITION_LENGTH = 4096  # characters; IoT Hub's limit on a query is of the same order
MAX_DEPTH = 32  # nested parentheses / NOTs; keeps the recursive parser far from Python's stack limit
MAX_IN_VALUES = 256  # values in one IN list


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


# --- tokenizer -----------------------------------------------------------------------------

_KEYWORDS = {"AND", "OR", "NOT", "IN", "IS_DEFINED", "TRUE", "FALSE"}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)*")
_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_PUNCT = {"(": "(", ")": ")", ",": ",", "*": "*", "=": "=", "!=": "!=", "<>": "!="}


@dataclass(frozen=True)
class _Token:
    kind: str  # "name", "keyword", "string", "number", a punctuation mark, or "end"
    text: str
    column: int  # 1-based
    value: Value | None = None

    def describe(self) -> str:
        if self.kind == "end":
            return "end of input"
        if self.kind == "keyword":
            return self.text.upper()
        if self.kind == "string":
            return f"string {self.text}"
        return f"'{self.text}'"


def _fail(message: str) -> TargetConditionError:
    return TargetConditionError(f"target condition: {message}")


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        col = i + 1
        if ch.isspace():
            i += 1
            continue
        two = text[i : i + 2]
        if two in ("!=", "<>"):
            tokens.append(_Token(_PUNCT[two], two, col))
            i += 2
            continue
        if ch in "(),*=":
            tokens.append(_Token(ch, ch, col))
            i += 1
            continue
        if ch in "'\"":
            value, end = _read_string(text, i)
            tokens.append(_Token("string", text[i:end], col, value))
            i = end
            continue
        number = _NUMBER.match(text, i)
        if number:
            end = number.end()
            if end < n and (text[end].isalnum() or text[end] in "_."):
                raise _fail(f"malformed number at column {col}")
            literal = number.group()
            value_n: Value = float(literal) if any(c in literal for c in ".eE") else int(literal)
            if (isinstance(value_n, float) and not math.isfinite(value_n)) or len(literal) > 64:
                raise _fail(f"number out of range at column {col}")
            tokens.append(_Token("number", literal, col, value_n))
            i = end
            continue
        name = _NAME.match(text, i)
        if name:
            end = name.end()
            if end < n and text[end] == ".":
                raise _fail(f"expected a tag name after '.' at column {end + 2}")
            word = name.group()
            kind = "keyword" if word.upper() in _KEYWORDS else "name"
            tokens.append(_Token(kind, word, col))
            i = end
            continue
        raise _fail(f"unexpected character {ch!r} at column {col}")
    tokens.append(_Token("end", "", n + 1))
    return tokens


def _read_string(text: str, start: int) -> tuple[str, int]:
    """A quoted string; backslash escapes the quote or a backslash. Returns (value, end index)."""
    quote = text[start]
    out: list[str] = []
    i = start + 1
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text) and text[i + 1] in (quote, "\\"):
            out.append(text[i + 1])
            i += 2
            continue
        if ch == quote:
            return "".join(out), i + 1
        out.append(ch)
        i += 1
    raise _fail(f"unterminated string starting at column {start + 1}; close it with {quote}")


# --- parser ----------------------------------------------------------------------------------


class _Parser:
    """Recursive descent over the token list; ``depth`` bounds NOT and parenthesis nesting."""

    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens
        self.pos = 0
        self.depth = 0

    @property
    def peek(self) -> _Token:
        return self.tokens[self.pos]

    def keyword(self, word: str) -> bool:
        token = self.peek
        return token.kind == "keyword" and token.text.upper() == word

    def take(self) -> _Token:
        token = self.tokens[self.pos]
        if token.kind != "end":
            self.pos += 1
        return token

    def expect(self, kind: str, what: str) -> _Token:
        if self.peek.kind != kind:
            raise self.expected(what)
        return self.take()

    def expected(self, what: str) -> TargetConditionError:
        token = self.peek
        return _fail(f"expected {what} at column {token.column}, found {token.describe()}")

    def nest(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _fail(f"nested deeper than {MAX_DEPTH} levels at column {self.peek.column}")

    def condition(self) -> Condition:
        if self.peek.kind == "*":
            self.take()
            if self.peek.kind != "end":
                raise self.expected("end of input after '*'")
            return ALL_DEVICES
        result = self.or_expr()
        if self.peek.kind != "end":
            raise self.expected("AND, OR or end of input")
        return result

    def or_expr(self) -> Condition:
        operands = [self.and_expr()]
        while self.keyword("OR"):
            self.take()
            operands.append(self.and_expr())
        return operands[0] if len(operands) == 1 else Or(tuple(operands))

    def and_expr(self) -> Condition:
        operands = [self.not_expr()]
        while self.keyword("AND"):
            self.take()
            operands.append(self.not_expr())
        return operands[0] if len(operands) == 1 else And(tuple(operands))

    def not_expr(self) -> Condition:
        if self.keyword("NOT"):
            self.take()
            self.nest()
            operand = self.not_expr()
            self.depth -= 1
            return Not(operand)
        return self.primary()

    def primary(self) -> Condition:
        token = self.peek
        if token.kind == "(":
            self.take()
            self.nest()
            inner = self.or_expr()
            self.expect(")", "')'")
            self.depth -= 1
            return inner
        if self.keyword("IS_DEFINED"):
            self.take()
            self.expect("(", "'(' after IS_DEFINED")
            target = self.field()
            self.expect(")", "')'")
            return IsDefined(target)
        if token.kind == "*":
            raise _fail(f"'*' at column {token.column} must be the whole condition")
        target = self.field()
        op = self.peek
        if op.kind in ("=", "!="):
            self.take()
            return Compare(target, "=" if op.kind == "=" else "!=", self.literal())
        negated = False
        if self.keyword("NOT"):
            self.take()
            negated = True
            if not self.keyword("IN"):
                raise self.expected("IN after NOT")
        if self.keyword("IN"):
            self.take()
            result: Condition = In(target, self.value_list())
            return Not(result) if negated else result
        raise self.expected("'=', '!=' or IN")

    def field(self) -> Field:
        token = self.peek
        if token.kind == "name":
            parts = tuple(token.text.split("."))
            if parts == ("deviceId",):
                self.take()
                return Field(parts)
            if parts[0] == "tags" and len(parts) > 1:
                self.take()
                return Field(parts)
        raise self.expected("deviceId or tags.<name>")

    def literal(self) -> Value:
        token = self.peek
        if token.kind in ("string", "number"):
            self.take()
            assert token.value is not None
            return token.value
        if self.keyword("TRUE") or self.keyword("FALSE"):
            self.take()
            return token.text.upper() == "TRUE"
        raise self.expected("a string, a number, TRUE or FALSE")

    def value_list(self) -> tuple[Value, ...]:
        self.expect("(", "'(' after IN")
        values = [self.literal()]
        while self.peek.kind == ",":
            self.take()
            values.append(self.literal())
            if len(values) > MAX_IN_VALUES:
                raise _fail(f"an IN list holds at most {MAX_IN_VALUES} values (column {self.peek.column})")
        self.expect(")", "',' or ')'")
        return tuple(values)


def parse(text: str) -> Condition:
    """Parse a target condition; raise :class:`TargetConditionError` naming the column on any error."""
    if not isinstance(text, str):
        raise TargetConditionError("target condition: must be a string")
    if len(text) > MAX_CONDITION_LENGTH:
        raise _fail(f"longer than {MAX_CONDITION_LENGTH} characters")
    if not text.strip():
        raise _fail("is empty; write one (for example tags.site = 'lab'), or '*' for every device")
    return _Parser(_tokenize(text)).condition()


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


def matches(text: str, device: DeviceFacts) -> bool:
    """Parse and evaluate in one step (the hub caches :func:`parse` results instead)."""
    return evaluate(parse(text), device)


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
