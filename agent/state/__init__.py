"""What the agent keeps on disk between runs: the accepted document, the applied sequence, its services."""

from __future__ import annotations

from edgeship.agent.state.store import AgentState, ServiceRecord, StateStore

__all__ = ["AgentState", "ServiceRecord", "StateStore"]
