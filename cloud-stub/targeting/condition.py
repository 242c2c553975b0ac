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
from dataclasses import dataclass

from edgeship.hub.targeting.expression import (
    ALL_DEVICES,
    AllDevices,
    And,
    Compare,
    Condition,
    DeviceFacts,
    Field,
    In,
    IsDefined,
    Not,
    Or,
    TargetConditionError,
    Value,
    evaluate,
    unparse,
)

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


def matches(text: str, device: DeviceFacts) -> bool:
    """Parse and evaluate in one step (the hub caches :func:`parse` results instead)."""
    return evaluate(parse(text), device)
