"""Model names and ``NAME[:VERSION]`` references, with Azure ML's naming rule."""

from __future__ import annotations

import re
from dataclasses import dataclass

from edgeship.errors import InputError

__all__ = ["NAME_RULE", "ModelRef", "parse_model_ref", "validate_model_name"]

NAME_RULE = (
    "1-255 characters: letters, digits, '-', '_' and '.', starting with a letter or digit"
)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")


def validate_model_name(name: str) -> str:
    if not _NAME.fullmatch(name or ""):
        raise InputError(f"Invalid model name {name!r}: a name has {NAME_RULE}.")
    return name


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: int | None = None

    def __str__(self) -> str:
        return self.name if self.version is None else f"{self.name}:{self.version}"


def parse_model_ref(text: str, *, require_version: bool = False) -> ModelRef:
    """Parse ``NAME`` or ``NAME:VERSION`` (version a positive integer)."""
    name, sep, version = text.partition(":")
    validate_model_name(name)
    if not sep:
        if require_version:
            raise InputError(f"{text!r} names no version; write it as NAME:VERSION, e.g. {name}:1.")
        return ModelRef(name)
    if not version.isdigit() or int(version) < 1:
        raise InputError(f"Invalid version in {text!r}: a version is a whole number from 1, e.g. {name}:1.")
    return ModelRef(name, int(version))
