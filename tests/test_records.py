"""``edgeship.records`` behaves as ``@dataclass(frozen=True)`` for what the agent's records use (ADR 0043)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import pytest

from edgeship.records import FrozenRecordError, asdict, field, record, replace


@record
class Part:
    digest: str
    size: int = 0


@record
class Entry:
    kind: ClassVar[str] = "entry"
    name: str
    parts: tuple[Part, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    secret: str | None = field(default=None, repr=False)


@record
class Named(Entry):
    kind: ClassVar[str] = "named"
    label: str = "x"
    upper: str = field(init=False)

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a name is required")
        object.__setattr__(self, "upper", self.name.upper())


@dataclasses.dataclass(frozen=True)
class DataPart:
    digest: str
    size: int = 0


@dataclasses.dataclass(frozen=True)
class DataEntry:
    kind: ClassVar[str] = "entry"
    name: str
    parts: tuple[DataPart, ...] = ()
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    secret: str | None = dataclasses.field(default=None, repr=False)


def test_a_record_reads_compares_hashes_and_prints_as_the_frozen_dataclass() -> None:
    a, b = Entry("m", (Part("sha256:1", 5),), secret="s"), DataEntry("m", (DataPart("sha256:1", 5),), secret="s")
    assert repr(a).replace("Entry", "DataEntry").replace("Part", "DataPart") == repr(b)  # the secret left out
    assert (a.name, a.parts[0].size, a.env, a.secret, a.kind) == (b.name, b.parts[0].size, b.env, b.secret, b.kind)
    assert asdict(a) == dataclasses.asdict(b) == {"name": "m", "parts": ({"digest": "sha256:1", "size": 5},),
                                                  "env": {}, "secret": "s"}  # fmt: skip
    assert Part("d", 1) == Part("d", 1) and hash(Part("d", 1)) == hash(Part("d", 1)) and Part("d", 1) != Part("d", 2)
    assert Entry("m").__match_args__ == DataEntry("m").__match_args__ == ("name", "parts", "env", "secret")
    assert Entry("m").env is not Entry("m").env  # a fresh dict from the factory for each record


def test_records_of_different_classes_are_never_equal() -> None:
    @record
    class Stop:
        module: str

    @record
    class Remove:
        module: str

    assert Stop("m") != Remove("m") and Stop("m") != ("m",)


def test_a_record_refuses_assignment_and_deletion() -> None:
    part = Part("d", 1)
    with pytest.raises(FrozenRecordError, match="cannot assign to field 'size' of a Part record"):
        part.size = 2  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del part.size  # type: ignore[misc]


def test_a_subclass_adds_its_fields_after_the_base_and_sets_its_own_in_post_init() -> None:
    named = Named("m", label="y")
    assert (named.name, named.label, named.upper, named.kind) == ("m", "y", "M", "named")
    assert Named.__match_args__ == ("name", "parts", "env", "secret", "label")
    with pytest.raises(ValueError, match="a name is required"):
        Named("")


def test_replace_checks_the_copy_and_refuses_a_field_set_by_the_record() -> None:
    named = Named("m")
    assert replace(named, name="n").upper == "N" and named.upper == "M"
    with pytest.raises(ValueError, match="field 'upper' is set by Named itself"):
        replace(named, upper="X")
    with pytest.raises(ValueError, match="a name is required"):
        replace(named, name="")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: Part(), "missing required argument: 'digest'"),
        (lambda: Part("d", 1, 2), "takes 2 positional arguments but 3 were given"),
        (lambda: Part("d", digest="e"), "multiple values for argument 'digest'"),
        (lambda: Part("d", colour=1), "unexpected keyword argument 'colour'"),
        (lambda: Named("m", upper="X"), "unexpected keyword argument 'upper'"),
    ],
)
def test_bad_arguments_are_refused_as_by_a_dataclass(call: object, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        call()  # type: ignore[operator]


def test_a_field_without_a_default_after_one_with_a_default_is_refused() -> None:
    with pytest.raises(TypeError, match="field 'b' without a default follows one with a default"):

        @record
        class Bad:
            a: int = 0
            b: int
