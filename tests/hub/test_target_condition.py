"""Target conditions: grammar, precedence, IoT Hub's undefined semantics, errors with columns."""

from __future__ import annotations

import builtins
import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeship.errors import InputError
from edgeship.hub.targeting.condition import (
    ALL_DEVICES,
    MAX_CONDITION_LENGTH,
    MAX_DEPTH,
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
    evaluate,
    matches,
    parse,
    unparse,
)

LAB_AMD = DeviceFacts("dev-1", {"site": "lab", "arch": "amd64", "floor": 3, "gpu": True, "loc": {"city": "Oslo"}})
LAB_ARM = DeviceFacts("dev-2", {"site": "lab", "arch": "arm64"})
FIELD = DeviceFacts("dev-3", {"site": "field", "arch": "armv7"})
BARE = DeviceFacts("dev-4", {})


def _targets(condition: str) -> list[str]:
    tree = parse(condition)
    return [d.device_id for d in (LAB_AMD, LAB_ARM, FIELD, BARE) if evaluate(tree, d)]


# --- matching -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("tags.site = 'lab'", ["dev-1", "dev-2"]),
        ("tags.site != 'lab'", ["dev-3"]),  # dev-4 has no site: undefined, not a match
        ("tags.site = 'lab' AND tags.arch IN ('amd64','arm64')", ["dev-1", "dev-2"]),
        ("tags.arch IN ('arm64', 'armv7')", ["dev-2", "dev-3"]),
        ("tags.arch NOT IN ('arm64', 'armv7')", ["dev-1"]),
        ("deviceId = 'dev-3'", ["dev-3"]),
        ("deviceId IN ('dev-1', 'dev-4')", ["dev-1", "dev-4"]),
        ("tags.floor = 3", ["dev-1"]),
        ("tags.floor = 3.0", ["dev-1"]),
        ("tags.floor = '3'", []),  # a string never equals a number
        ("tags.gpu = true", ["dev-1"]),
        ("tags.gpu = 1", []),  # a boolean is not a number
        ("tags.loc.city = 'Oslo'", ["dev-1"]),
        ("tags.loc = 'Oslo'", []),  # an object compares with nothing
        ("IS_DEFINED(tags.arch)", ["dev-1", "dev-2", "dev-3"]),
        ("NOT IS_DEFINED(tags.site)", ["dev-4"]),
        ("*", ["dev-1", "dev-2", "dev-3", "dev-4"]),
        ("  *  ", ["dev-1", "dev-2", "dev-3", "dev-4"]),
    ],
)
def test_condition_targets(condition: str, expected: list[str]) -> None:
    assert _targets(condition) == expected


def test_missing_tag_is_undefined_for_equal_not_equal_and_not() -> None:
    assert not matches("tags.ring = 'canary'", BARE)
    assert not matches("tags.ring != 'canary'", BARE)
    assert not matches("NOT (tags.ring = 'canary')", BARE)
    assert not matches("NOT (tags.ring != 'canary')", BARE)


def test_undefined_is_absorbed_by_false_and_and_true_or() -> None:
    assert matches("tags.ring = 'x' OR deviceId = 'dev-4'", BARE)
    assert matches("NOT (tags.ring = 'x' AND deviceId = 'nope')", BARE)  # undefined AND false is false
    assert not matches("NOT (tags.ring = 'x' OR deviceId = 'nope')", BARE)  # stays undefined


def test_not_binds_tighter_than_and_which_binds_tighter_than_or() -> None:
    tree = parse("NOT tags.a = 'x' AND tags.b = 'y' OR tags.c = 'z'")
    a, b, c = (Compare(Field(("tags", n)), "=", v) for n, v in (("a", "x"), ("b", "y"), ("c", "z")))
    assert tree == Or((And((Not(a), b)), c))


def test_parentheses_override_precedence() -> None:
    tree = parse("tags.a = 'x' AND (tags.b = 'y' OR tags.c = 'z')")
    assert isinstance(tree, And) and isinstance(tree.operands[1], Or)
    assert _targets("tags.site = 'field' AND (tags.arch = 'armv7' OR tags.arch = 'amd64')") == ["dev-3"]
    assert _targets("(tags.site = 'field' AND tags.arch = 'armv7') OR tags.arch = 'amd64'") == ["dev-1", "dev-3"]


def test_chains_are_flat_so_long_conditions_do_not_recurse() -> None:
    tree = parse(" OR ".join(f"deviceId = 'd{i}'" for i in range(150)))
    assert isinstance(tree, Or) and len(tree.operands) == 150
    assert matches(" OR ".join(f"deviceId = 'd{i}'" for i in range(150)), DeviceFacts("d149"))


def test_keywords_are_case_insensitive_but_fields_are_not() -> None:
    assert parse("tags.a = 'x' and not tags.b in ('y') Or is_defined(tags.c)") == parse(
        "tags.a = 'x' AND NOT tags.b IN ('y') OR IS_DEFINED(tags.c)"
    )
    with pytest.raises(TargetConditionError, match=r"expected deviceId or tags\.<name> at column 1, found 'DeviceId'"):
        parse("DeviceId = 'x'")
    assert not matches("tags.Site = 'lab'", LAB_AMD)


def test_string_quoting_and_escapes() -> None:
    assert parse("tags.a = \"it's\"") == Compare(Field(("tags", "a")), "=", "it's")
    assert parse("tags.a = 'it\\'s'") == Compare(Field(("tags", "a")), "=", "it's")
    assert parse("tags.a = 'back\\\\slash'") == Compare(Field(("tags", "a")), "=", "back\\slash")
    assert parse("tags.a = 'AND OR ( )'") == Compare(Field(("tags", "a")), "=", "AND OR ( )")
    assert parse("tags.a = ''") == Compare(Field(("tags", "a")), "=", "")


def test_numbers() -> None:
    assert parse("tags.n IN (0, -3, 2.5, 1e3, -1.5E-2)") == In(Field(("tags", "n")), (0, -3, 2.5, 1000.0, -0.015))
    assert matches("tags.n = -3", DeviceFacts("d", {"n": -3}))


def test_not_equal_has_a_sql_spelling() -> None:
    assert parse("tags.a <> 'x'") == parse("tags.a != 'x'")


def test_tag_names_may_hold_dashes_digits_and_keywords_after_the_dot() -> None:
    assert parse("tags.in-use.2nd = 'x'") == Compare(Field(("tags", "in-use", "2nd")), "=", "x")
    assert parse("tags.and = 'x'") == Compare(Field(("tags", "and")), "=", "x")


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        ("tags.site = 'lab' AND (tags.x = 1", "expected ')' at column 34, found end of input"),
        ("tags.site = ", "expected a string, a number, TRUE or FALSE at column 13, found end of input"),
        ("tags.site 'lab'", "expected '=', '!=' or IN at column 11, found string 'lab'"),
        ("tags.site = 'lab' tags.x = 'y'", "expected AND, OR or end of input at column 19, found 'tags.x'"),
        ("tags.site = 'lab' AND", "expected deviceId or tags.<name> at column 22, found end of input"),
        ("site = 'lab'", "expected deviceId or tags.<name> at column 1, found 'site'"),
        ("tags = 'lab'", "expected deviceId or tags.<name> at column 1, found 'tags'"),
        ("tags.site = lab", "expected a string, a number, TRUE or FALSE at column 13, found 'lab'"),
        ("tags.a IN 'x'", "expected '(' after IN at column 11, found string 'x'"),
        ("tags.a IN ()", "expected a string, a number, TRUE or FALSE at column 12, found ')'"),
        ("tags.a IN ('x' 'y')", "expected ',' or ')' at column 16, found string 'y'"),
        ("tags.a NOT = 'x'", "expected IN after NOT at column 12, found '='"),
        ("tags.a = 'x' OR *", "'*' at column 17 must be the whole condition"),
        ("* AND tags.a = 'x'", "expected end of input after '*' at column 3, found AND"),
        ("tags.a = 'unterminated", "unterminated string starting at column 10; close it with '"),
        ("tags. = 'x'", "expected a tag name after '.' at column 6"),
        ("tags.a == 'x'", "expected a string, a number, TRUE or FALSE at column 9, found '='"),
        ("tags.a = 'x'; DROP TABLE devices", "unexpected character ';' at column 13"),
        ("tags.a = 12abc", "malformed number at column 10"),
        ("tags.a = 1e999", "number out of range at column 10"),
        ("IS_DEFINED tags.a", "expected '(' after IS_DEFINED at column 12, found 'tags.a'"),
        ("()", "expected deviceId or tags.<name> at column 2, found ')'"),
    ],
)
def test_syntax_errors_name_the_column_and_what_was_expected(condition: str, message: str) -> None:
    with pytest.raises(TargetConditionError) as info:
        parse(condition)
    assert str(info.value) == f"target condition: {message}"
    assert isinstance(info.value, InputError)


@pytest.mark.parametrize("condition", ["", "   ", "\n"])
def test_empty_condition_is_an_error_that_suggests_star(condition: str) -> None:
    with pytest.raises(TargetConditionError, match=r"is empty; .* '\*' for every device"):
        parse(condition)


def test_nesting_and_length_are_bounded() -> None:
    ok = "(" * MAX_DEPTH + "tags.a = 'x'" + ")" * MAX_DEPTH
    assert parse(ok) == Compare(Field(("tags", "a")), "=", "x")
    with pytest.raises(TargetConditionError, match=f"nested deeper than {MAX_DEPTH} levels"):
        parse("(" * (MAX_DEPTH + 1) + "tags.a = 'x'" + ")" * (MAX_DEPTH + 1))
    with pytest.raises(TargetConditionError, match="nested deeper"):
        parse("NOT " * (MAX_DEPTH + 1) + "tags.a = 'x'")
    with pytest.raises(TargetConditionError, match=f"longer than {MAX_CONDITION_LENGTH} characters"):
        parse("tags.a = '" + "x" * MAX_CONDITION_LENGTH + "'")


def test_python_code_is_a_syntax_error_not_code() -> None:
    for text in ("__import__('os').system('true')", "tags.a = __import__('os')", "tags.__class__ = 'x'"):
        try:
            tree = parse(text)
        except TargetConditionError:
            continue
        # Only a tag literally named "__class__" can make it this far, and it is just data.
        assert tree == Compare(Field(("tags", "__class__")), "=", "x")
        assert not evaluate(tree, DeviceFacts("d", {}))


# --- properties -------------------------------------------------------------------------------

_names = st.sampled_from(["site", "arch", "a", "b", "in-use", "_z", "n1"])
_fields = st.one_of(
    st.just(Field(("deviceId",))),
    st.lists(_names, min_size=1, max_size=3).map(lambda parts: Field(("tags", *parts))),
)
_values = st.one_of(
    st.text(max_size=8),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=False, allow_infinity=False, width=32).filter(lambda f: f == f),
    st.booleans(),
)
_leaves = st.one_of(
    st.builds(Compare, _fields, st.sampled_from(["=", "!="]), _values),
    st.builds(In, _fields, st.lists(_values, min_size=1, max_size=4).map(tuple)),
    st.builds(IsDefined, _fields),
)
_trees: st.SearchStrategy[Condition] = st.recursive(
    _leaves,
    lambda inner: st.one_of(
        st.builds(Not, inner),
        st.lists(inner, min_size=2, max_size=3).map(lambda ops: And(tuple(ops))),
        st.lists(inner, min_size=2, max_size=3).map(lambda ops: Or(tuple(ops))),
    ),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_parser_never_crashes_on_random_text(text: str) -> None:
    try:
        tree = parse(text)
    except TargetConditionError:
        return
    evaluate(tree, LAB_AMD)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="tagsdeviceId.=!<>()',\"*ANDORNOTIN 0123456789-_", max_size=60))
def test_parser_never_crashes_on_condition_shaped_text(text: str) -> None:
    with contextlib.suppress(TargetConditionError):
        parse(text)


@settings(max_examples=100, deadline=None)
@given(_trees)
def test_unparse_then_parse_is_the_identity(tree: Condition) -> None:
    assert parse(unparse(tree)) == tree


@settings(max_examples=100, deadline=None)
@given(_trees, st.dictionaries(_names, _values, max_size=4))
def test_not_never_turns_undefined_into_a_match(tree: Condition, tags: dict[str, object]) -> None:
    device = DeviceFacts("d", tags)
    assert not (evaluate(tree, device) and evaluate(Not(tree), device))


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=60))
def test_parsing_and_evaluating_never_call_eval_or_exec(text: str) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("eval/exec called")

    saved = builtins.eval, builtins.exec, builtins.compile
    builtins.eval = builtins.exec = builtins.compile = refuse  # type: ignore[assignment]
    try:
        with contextlib.suppress(TargetConditionError):
            evaluate(parse(text), LAB_AMD)
    finally:
        builtins.eval, builtins.exec, builtins.compile = saved


def test_all_devices_constant_is_what_star_parses_to() -> None:
    assert parse("*") is ALL_DEVICES or parse("*") == ALL_DEVICES
