"""Model profiling: latency, throughput and peak resources under load, and a sizing recommendation.

``profile_model`` is the entry point (``edgeship model profile``, and ``Model.profile``
in the Azure ML v1 layer); it returns a :class:`ProfileResult`.
"""

from edgeship.profiling.profile import PROFILE_PROPERTY, MeasuredRun, ProfileResult, profile_model, stored_profile
from edgeship.profiling.target import ProfilingError

__all__ = ["PROFILE_PROPERTY", "MeasuredRun", "ProfileResult", "ProfilingError", "profile_model", "stored_profile"]
