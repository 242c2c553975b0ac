"""What the agent keeps on disk between runs: the accepted document, the applied sequence, its services
(``store.py``), and the number of its last published report (``report_number.py``)."""

from __future__ import annotations

from edgeship.agent.state.report_number import ReportNumbers
from edgeship.agent.state.store import AgentState, ServiceRecord, StateStore

__all__ = ["AgentState", "ReportNumbers", "ServiceRecord", "StateStore"]
