"""N ``edgeship hub serve`` replicas on one real PostgreSQL and one MQTT broker, as processes a test can SIGKILL.

Reusable by any test that needs hub replicas (the broker-cluster kill test too)::

    with PostgresServer() as pg:
        group = ReplicaGroup(workspace, pg.fresh_database(), broker_url, tmp / "logs", count=2)
        group.start()                    # hub-0 and hub-1, MQTT 5 shared subscriptions, own client ids
        group[1].kill()                  # SIGKILL
        group.stop()

Each replica logs in as ``hub-<i>`` (its MQTT client id and persistent session, ADR 0015),
speaks MQTT 5 (``--mqtt5``: shared subscriptions) and serves REST on its own port. They
share one workspace (keys, trust root; ``docs/scale.md`` says why) and one database.
A replica is a ``tests/hub/hub_process.HubProcess`` with a database and a name; PostgreSQL is
``tests/postgres_server.PostgresServer``.
"""

from __future__ import annotations

from pathlib import Path

from hub_process import WAIT, HubProcess
from postgres_server import PostgresServer

__all__ = ["WAIT", "PostgresServer", "Replica", "ReplicaGroup"]


class Replica(HubProcess):
    """One ``edgeship hub serve --db ... --mqtt5 --broker-username hub-<i>`` process."""

    def __init__(self, index: int, workspace: Path, db_url: str, broker_url: str, log: Path, *,
                 password: str | None = None, extra: tuple[str, ...] = ()) -> None:
        super().__init__(workspace, broker_url, log, username=f"hub-{index}", password=password, mqtt5=True,
                         db_url=db_url, extra=extra)
        self.db_url = db_url


class ReplicaGroup:
    """``count`` replicas on one workspace, database and broker; index them as a list."""

    def __init__(self, workspace: Path, db_url: str, broker_url: str, logs: Path, *, count: int = 2,
                 password: str | None = None, extra: tuple[str, ...] = ()) -> None:
        logs.mkdir(parents=True, exist_ok=True)
        self.replicas = [Replica(i, workspace, db_url, broker_url, logs / f"hub-{i}.log", password=password,
                                 extra=extra) for i in range(count)]

    def __getitem__(self, index: int) -> Replica:
        return self.replicas[index]

    def __len__(self) -> int:
        return len(self.replicas)

    def start(self) -> ReplicaGroup:
        for replica in self.replicas:  # all at once: they race for the schema upgrade and the coordinator lease
            replica.start(wait=False)
        for replica in self.replicas:
            replica.wait_ready()
        return self

    def stop(self) -> None:
        for replica in self.replicas:
            replica.stop()

    def logs(self) -> str:
        return "\n".join(f"--- {r.name}\n{r.log.read_text()[-4000:]}" for r in self.replicas if r.log.exists())
