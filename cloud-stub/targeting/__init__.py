"""Where a deployment picks its devices: target conditions and the layering rule.

Pure functions over data, no database and no MQTT: the hub's service layer loads
devices and deployments, calls in here, and acts on the answer.
"""

from __future__ import annotations

from edgeship.hub.targeting.condition import (
    ALL_DEVICES,
    MAX_CONDITION_LENGTH,
    MAX_DEPTH,
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
    evaluate,
    matches,
    parse,
    unparse,
)
from edgeship.hub.targeting.layering import Deployment, Selection, contributing, select_modules, targets

__all__ = [
    "ALL_DEVICES",
    "MAX_CONDITION_LENGTH",
    "MAX_DEPTH",
    "AllDevices",
    "And",
    "Compare",
    "Condition",
    "Deployment",
    "DeviceFacts",
    "Field",
    "In",
    "IsDefined",
    "Not",
    "Or",
    "Selection",
    "TargetConditionError",
    "contributing",
    "evaluate",
    "matches",
    "parse",
    "select_modules",
    "targets",
    "unparse",
]
