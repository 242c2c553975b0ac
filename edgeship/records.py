"""Frozen value records for the modules the on-device agent imports, without ``dataclasses``.

``@record`` gives a class what ``@dataclass(frozen=True)`` gave it: fields from its
annotations (a base record's first, ``ClassVar`` ones excluded), an ``__init__`` taking
them by position or keyword, defaults, :func:`field` (``default_factory``, ``init=False``
set by ``__post_init__``, ``repr=False``), ``__post_init__``, equality between instances of
the same class, a hash, ``__repr__``, ``__match_args__`` and instances that refuse
assignment; :func:`replace` and :func:`asdict` are ``dataclasses.replace``/``asdict``.

Why not ``dataclasses``: importing it imports ``inspect`` (with ``ast``, ``dis``,
``tokenize``), 0.83 MiB of the agent's idle resident set, and it compiles six methods per
class (0.5 MiB for the ~60 records of the agent's import path). Here every record shares
the same few functions, which read the class's ``__record_fields__`` (ADR 0043).
``typing.NamedTuple`` was not an option: two different NamedTuples with equal fields are
equal (``Stop("m", "s") == Remove("m", "s")``), and a record is not a tuple.
``dataclass_transform`` tells mypy (and other checkers) to treat ``@record`` as a frozen
dataclass, so constructors and attributes are type-checked as before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

__all__ = ["FrozenRecordError", "asdict", "field", "record", "replace"]

_T = TypeVar("_T")
_MISSING: Any = object()

if TYPE_CHECKING:
    from typing_extensions import dataclass_transform
else:

    def dataclass_transform(**_: Any) -> Callable[[_T], _T]:
        return lambda decorator: decorator


class FrozenRecordError(AttributeError):
    """Assigning to or deleting a field of a record (records are immutable values)."""


class _Field:
    __slots__ = ("default", "default_factory", "init", "name", "repr")

    def __init__(self, default: Any, default_factory: Callable[[], Any] | None, init: bool, repr: bool) -> None:
        self.name = ""
        self.default = default
        self.default_factory = default_factory
        self.init = init
        self.repr = repr


def field(
    *, default: Any = _MISSING, default_factory: Callable[[], Any] | None = None, init: bool = True, repr: bool = True
) -> Any:
    """A field's options, as ``dataclasses.field``: a default, a factory for mutable defaults, init, repr."""
    return _Field(default, default_factory, init, repr)


def _is_classvar(annotation: object) -> bool:
    text = annotation if isinstance(annotation, str) else repr(annotation)
    return text.startswith(("ClassVar", "typing.ClassVar"))


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
def record(cls: type[_T]) -> type[_T]:
    """Make ``cls`` a frozen record (see the module docstring)."""
    fields: dict[str, _Field] = dict(getattr(cls, "__record_fields__", {}))
    for name, annotation in cls.__dict__.get("__annotations__", {}).items():  # noqa: RUF063 (inspect is what this avoids)
        if _is_classvar(annotation):
            continue
        value = cls.__dict__.get(name, _MISSING)
        spec = value if isinstance(value, _Field) else _Field(value, None, True, True)
        spec.name = name
        if isinstance(value, _Field):
            if spec.default is _MISSING:
                delattr(cls, name)
            else:
                setattr(cls, name, spec.default)
        fields[name] = spec
    defaulted = False
    for spec in fields.values():
        if not spec.init:
            continue
        if spec.default is not _MISSING or spec.default_factory is not None:
            defaulted = True
        elif defaulted:
            raise TypeError(f"{cls.__name__}: field {spec.name!r} without a default follows one with a default")
    attrs: dict[str, Any] = {
        "__record_fields__": fields,
        "__match_args__": tuple(f.name for f in fields.values() if f.init),
        "__init__": _init,
        "__repr__": _repr,
        "__eq__": _eq,
        "__hash__": _hash,
        "__setattr__": _refuse_setattr,
        "__delattr__": _refuse_delattr,
    }
    for name, value in attrs.items():
        setattr(cls, name, value)
    return cls


def _init(self: Any, *args: Any, **kwargs: Any) -> None:
    cls = type(self)
    fields: dict[str, _Field] = cls.__record_fields__
    names = cls.__match_args__
    if len(args) > len(names):
        raise TypeError(f"{cls.__name__}() takes {len(names)} positional arguments but {len(args)} were given")
    values = dict(zip(names, args, strict=False))
    for name, value in kwargs.items():
        spec = fields.get(name)
        if spec is None or not spec.init:
            raise TypeError(f"{cls.__name__}() got an unexpected keyword argument {name!r}")
        if name in values:
            raise TypeError(f"{cls.__name__}() got multiple values for argument {name!r}")
        values[name] = value
    for name, spec in fields.items():
        if name in values:
            value = values[name]
        elif spec.default_factory is not None:
            value = spec.default_factory()
        elif spec.default is not _MISSING:
            value = spec.default
        elif not spec.init:
            continue
        else:
            raise TypeError(f"{cls.__name__}() missing required argument: {name!r}")
        object.__setattr__(self, name, value)
    post_init = getattr(self, "__post_init__", None)
    if post_init is not None:
        post_init()


def _values(self: Any) -> tuple[Any, ...]:
    return tuple(getattr(self, name) for name in type(self).__record_fields__)


def _repr(self: Any) -> str:
    shown = ", ".join(
        f"{name}={getattr(self, name)!r}" for name, spec in type(self).__record_fields__.items() if spec.repr
    )
    return f"{type(self).__qualname__}({shown})"


def _eq(self: Any, other: object) -> bool:
    if other.__class__ is not self.__class__:
        return NotImplemented
    return _values(self) == _values(other)


def _hash(self: Any) -> int:
    return hash(_values(self))


def _refuse_setattr(self: Any, name: str, value: object) -> None:
    raise FrozenRecordError(f"cannot assign to field {name!r} of a {type(self).__name__} record")


def _refuse_delattr(self: Any, name: str) -> None:
    raise FrozenRecordError(f"cannot delete field {name!r} of a {type(self).__name__} record")


def replace(obj: _T, **changes: Any) -> _T:
    """A copy of the record ``obj`` with ``changes``, checked by its ``__init__`` and ``__post_init__``."""
    fields: dict[str, _Field] = type(obj).__record_fields__  # type: ignore[attr-defined]
    for name in changes:
        if name in fields and not fields[name].init:
            raise ValueError(f"field {name!r} is set by {type(obj).__name__} itself and cannot be replaced")
    values = {name: getattr(obj, name) for name, spec in fields.items() if spec.init}
    return type(obj)(**{**values, **changes})


def asdict(obj: Any) -> Any:
    """The record as a dict, records, lists, tuples and dicts inside it copied the same way."""
    if hasattr(type(obj), "__record_fields__"):
        return {name: asdict(getattr(obj, name)) for name in type(obj).__record_fields__}
    if isinstance(obj, (list, tuple)):
        return type(obj)(asdict(item) for item in obj)
    if isinstance(obj, dict):
        return {asdict(key): asdict(value) for key, value in obj.items()}
    return obj
