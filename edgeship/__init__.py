"""edgeship: ship machine-learning models to the edge.

The core package holds the workspace, the model registry, the scoring server and
the CLI; the component packages ``edgeship.agent``, ``edgeship.packager``,
``edgeship.fpga`` and ``edgeship.hub`` live in their own top-level folders.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
