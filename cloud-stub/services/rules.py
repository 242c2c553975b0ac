"""What the hub accepts from an operator: names, tags, direct-method calls. Pure checks, no I/O.

Every rule raises an ``InputError`` (400) that names the rule, and each one runs
before a value reaches the store, so a malformed value never becomes a database
error (PostgreSQL refuses NUL characters in text and NaN in JSON). The REST schemas
show the same rules (``tests/hub/test_api_openapi.py`` keeps them equal).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from edgeship.errors import InputError
from edgeship.hub.targeting import Condition, parse
from edgeship.mqtt.identity import validate_device_id, validate_new_device_id  # one rule (ADR 0015)
from edgeship.registry.refs import NAME_RULE, validate_model_name

__all__ = [
    "DEPLOYMENT_ID",
    "DIGEST",
    "MAX_METHOD_TIMEOUT",
    "MAX_MODULE_NAME",
    "MAX_TAGS_BYTES",
    "MAX_TAG_DEPTH",
    "METHOD",
    "MIN_METHOD_TIMEOUT",
    "check_method_call",
    "check_tags",
    "parsed_condition",
    "validate_deployment_id",
    "validate_device_id",
    "validate_module_name",
    "validate_new_device_id",
]

DEPLOYMENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
TAG_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # what a target condition can name (tags.a.b)
METHOD = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # a direct method name (one topic segment)
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
MAX_MODULE_NAME = 128  # characters of a module name the store keeps (the registry allows 255)
MAX_TAGS_BYTES = 8 * 1024  # bytes of a device's tags as JSON, like IoT Hub's 8 KB twin tags
MAX_TAG_DEPTH = 5  # nesting of tag objects
MAX_METHOD_TIMEOUT = 300.0  # seconds an operator may wait for a direct method
MIN_METHOD_TIMEOUT = 0.1  # below this no device can answer over MQTT: the call could only time out


def validate_deployment_id(deployment_id: str) -> str:
    if not isinstance(deployment_id, str) or not DEPLOYMENT_ID.fullmatch(deployment_id):
        raise InputError(
            f"Deployment name {deployment_id!r} must be 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit."
        )
    return deployment_id


def validate_module_name(name: str) -> str:
    """A module name the hub can store and look up: the registry's rule, at most 128 characters.

    Checked before every lookup too, so a malformed name is a 400 naming the rule rather
    than a database error (PostgreSQL refuses NUL characters in text).
    """
    validate_model_name(name)
    if len(name) > MAX_MODULE_NAME:
        raise InputError(f"Module name {name[:40]!r}... has {len(name)} characters; the hub keeps names of at "
                         f"most {MAX_MODULE_NAME} ({NAME_RULE} otherwise).")
    return name


def check_tags(tags: Any, where: str = "tags", depth: int = 0) -> None:
    if not isinstance(tags, dict):
        raise InputError(f"{where} must be a JSON object of tag names to values.")
    if depth >= MAX_TAG_DEPTH:
        raise InputError(f"{where} nests deeper than {MAX_TAG_DEPTH} levels.")
    for name, value in tags.items():
        if not isinstance(name, str) or not TAG_NAME.fullmatch(name):
            raise InputError(f"Tag name {name!r} in {where} must be 1-64 letters, digits, '_' or '-'.")
        if isinstance(value, dict):
            check_tags(value, f"{where}.{name}", depth + 1)
        elif value is not None and not isinstance(value, (str, int, float, bool)):
            raise InputError(f"Tag {where}.{name} must be a string, number, boolean, null or object.")
        elif isinstance(value, float) and not math.isfinite(value):  # PostgreSQL's json refuses NaN and Infinity
            raise InputError(f"Tag {where}.{name} must be a finite number; JSON has no NaN or Infinity.")
    if depth == 0 and len(json.dumps(tags)) > MAX_TAGS_BYTES:
        raise InputError(f"Tags are larger than {MAX_TAGS_BYTES} bytes as JSON; keep tags small.")


def check_method_call(method: str, args: Any, timeout: float) -> None:
    """A direct method call a device can be sent: a name that is one topic segment, plain JSON, a sane wait."""
    if not isinstance(method, str) or not METHOD.fullmatch(method):
        raise InputError(f"Method name {method!r} must be 1-64 letters, digits, '.', '_' or '-'.")
    if not isinstance(args, Mapping):
        raise InputError("Direct method arguments must be a JSON object.")
    try:
        json.dumps(dict(args), allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InputError(f"Direct method arguments must be plain JSON (finite numbers, no NaN): {exc}.") from exc
    if not MIN_METHOD_TIMEOUT <= timeout <= MAX_METHOD_TIMEOUT:
        raise InputError(
            f"Direct method timeout {timeout} s must be between {MIN_METHOD_TIMEOUT} and {MAX_METHOD_TIMEOUT} s."
        )


@lru_cache(maxsize=1024)
def parsed_condition(text: str) -> Condition:
    """Conditions are re-parsed on every evaluation otherwise; they are immutable, so cache them."""
    return parse(text)
