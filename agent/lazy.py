"""A module imported at its first use, for the one library import the agent does not need at idle.

paho-mqtt 2.x runs ``import urllib.request`` at its import, and uses it only in
``Client._get_proxy``, after it found PySocks (``socks``), which is not an agent
dependency: without it paho returns before touching ``urllib.request``. The agent's
own downloader needs urllib's opener only while it downloads (``fetch/opener.py``).
So ``python -m edgeship.agent`` puts a stand-in for :data:`LAZY_MODULES` in
``sys.modules`` before paho-mqtt is imported: an agent that has not downloaded since
it started (a device after a reboot, with its modules cached) does not hold
``urllib.request``, ``urllib.response`` and ``urllib.error`` (0.3 MiB of
its resident set, ADR 0043).

The stand-in is a plain module object: ``import urllib.request`` binds it without
running the module's code; the first attribute looked up on it (PEP 562's
``__getattr__``) imports the real module, which replaces it in ``sys.modules`` and on
the ``urllib`` package, so every later lookup finds the real module. After that first
use nothing differs from an ordinary import. ``importlib.util.LazyLoader`` would not
do: on Python 3.11 an ``import`` statement reads the module's ``__spec__`` and so
loads it at once.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType

__all__ = ["LAZY_MODULES", "import_lazily"]

LAZY_MODULES = ("urllib.request",)


def import_lazily(name: str) -> None:
    """Put a stand-in for ``name`` in ``sys.modules`` that imports the real module at its first use.

    Does nothing when ``name`` is imported already or cannot be found.
    """
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    if spec is None:
        return
    stand_in = ModuleType(name)
    stand_in.__spec__ = spec

    def load(attribute: str) -> object:
        if sys.modules.get(name) is stand_in:
            del sys.modules[name]
        return getattr(importlib.import_module(name), attribute)

    stand_in.__getattr__ = load  # type: ignore[method-assign]
    sys.modules[name] = stand_in
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, stand_in)
