"""Module names: what a target accepts, and a valid one derived from a permissive model name.

Why: the registry is as permissive as Azure ML's (v1 scripts register names such as
``sklearn_regression_model.pkl``), but an ACI container group, a Kubernetes object and
an IoT Edge module need a DNS label. The module name defaults to the first model's
name; for those targets a name that is not a DNS label becomes one (lowercase, runs of
other characters to ``-``) instead of failing after the wheelhouse was built, and a
name the user gave is checked before any work, with what to pass instead.
"""

from __future__ import annotations

import re

from edgeship.errors import InputError

__all__ = ["DNS_TARGETS", "check_module_name", "derive_module_name"]

DNS_TARGETS = ("aci", "aks", "iotedge", "fpga")  # targets whose artifacts carry the name as a DNS label
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def derive_module_name(model_name: str, target: str | None) -> str:
    """The default module name for ``model_name``: itself, or for a DNS target a DNS label made from it."""
    if target not in DNS_TARGETS or _DNS_LABEL.match(model_name):
        return model_name
    label = re.sub(r"[^a-z0-9]+", "-", model_name.lower()).strip("-")[:63].rstrip("-")
    return label or "module"


def check_module_name(name: str, target: str | None, *, given: bool) -> str:
    """``name`` if ``target`` accepts it, else an InputError saying what to pass (before any work is done)."""
    if target in DNS_TARGETS and not _DNS_LABEL.match(name):
        where = "-n/--name" if given else "the model's name"
        raise InputError(
            f"Module name {name!r} ({where}) is not usable for target {target}, which needs a DNS label: "
            f"lowercase letters, digits and '-', at most 63 characters; pass -n {derive_module_name(name, target)}."
        )
    return name
