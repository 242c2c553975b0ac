"""N ``edgeship hub serve`` replicas on one real PostgreSQL and one MQTT broker, as processes a test can SIGKILL.

Reusable by any test that needs hub replicas (the broker-cluster kill test too)::

    with PostgresServer(tmp / "pg") as pg:
        group = ReplicaGroup(workspace, pg.fresh_database(), broker_url, tmp / "logs", count=2)
        group.start()                    # hub-0 and hub-1, MQTT 5 shared subscriptions, own client ids
        group[1].kill()                  # SIGKILL
        group.stop()

Each replica logs in as ``hub-<i>`` (its MQTT client id and persistent session, ADR 0015),
speaks MQTT 5 (``--mqtt5``: shared subscriptions) and serves REST on its own port. They
share one workspace (keys, trust root; ``docs/scale.md`` says why) and one database.
PostgreSQL runs from Debian's binaries in a temp dir (as the ``postgres`` user when
root, since root cannot run ``initdb``); missing, the test fails in CI (``parts.need``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from parts import free_port
from postgres_server import PostgresServer

__all__ = ["WAIT", "PostgresServer", "Replica", "ReplicaGroup"]

WAIT = 120.0  # seconds for a replica to answer /healthz


class Replica:
    """One ``edgeship hub serve --db ... --mqtt5 --broker-username hub-<i>`` process."""

    def __init__(self, index: int, workspace: Path, db_url: str, broker_url: str, log: Path, *,
                 password: str | None = None, extra: tuple[str, ...] = ()) -> None:
        self.name = f"hub-{index}"
        self.workspace, self.db_url, self.broker_url, self.log = workspace, db_url, broker_url, log
        self.password, self.extra = password, extra
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, wait: bool = True) -> Replica:
        env = {**os.environ, **({"EDGESHIP_BROKER_PASSWORD": self.password} if self.password else {})}
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "edgeship", "hub", "serve", "-w", str(self.workspace), "--db", self.db_url,
                 "--broker", self.broker_url, "--broker-username", self.name, "--mqtt5", "--port", str(self.port),
                 *self.extra],
                stdout=out, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = WAIT) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"{self.name} exited: {self.log.read_text()[-3000:]}"
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"{self.name} did not answer within {timeout} s: {self.log.read_text()[-3000:]}")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind (its database connections and MQTT session just break)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


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
