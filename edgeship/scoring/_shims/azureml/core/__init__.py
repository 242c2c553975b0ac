"""edgeship stand-in for ``azureml.core`` inside a scoring process (only ``Model`` is provided).

Used only when the real ``azureml-core`` is not importable: the shim folder sits at
the end of ``sys.path``, so a real install is always found first.
"""

from .model import Model

__all__ = ["Model"]
