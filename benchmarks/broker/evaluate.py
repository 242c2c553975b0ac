"""Evaluate MQTT engines for edgeship's fleet side by side in one run: what ADR 0039 chose from.

Per engine (one Mosquitto as the baseline; a 3-node NATS cluster on loopback, once with
replicated file consumers (R3) and once with one in-memory consumer per subscription
(R1, the default edgeship generates)), with N simulated devices
(``benchmarks/fleet/simulator.py``, verification off: this measures the broker):

1. **subscribe**: N sessions connect and subscribe (QoS 1, ``desired`` and
   ``commands/+/+``), spread over the nodes; wall time until every SUBACK;
2. **fan-out**: a publisher (the hub's role, on the last node) sends one retained QoS 1
   document per device; wall time until every device reported it applied (QoS 1
   reports back through the broker);
3. **failover** (clusters): SIGKILL the first node; its devices connect to the next node
   (what a failing-over agent does); wall time until they are subscribed, the number
   of refused SUBACKs (0x80) and retries on the way, then a new document to every
   device: all N must report it;
4. **reconnect storm**: every session drops and reconnects at once; wall time until
   each has its retained document again.

CPU seconds of the broker processes (``/proc/<pid>/stat``) are recorded per phase.
Run (about 3 minutes at 1,000 devices)::

    python benchmarks/broker/evaluate.py --devices 1000 --out benchmarks/broker/results-<date>.json
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
for extra in (ROOT / "tests", ROOT / "tests" / "scale", ROOT / "benchmarks" / "fleet"):
    sys.path.insert(0, str(extra))

import paho.mqtt.client as paho  # noqa: E402
from nats_cluster import NatsCluster  # noqa: E402
from run import mosquitto  # noqa: E402  (the fleet benchmark's Mosquitto: large queues, no persistence)
from simulator import Fleet, device_ids  # noqa: E402

from edgeship.hub.broker.nats import NatsSettings, NatsUser, hash_password_bcrypt  # noqa: E402
from edgeship.mqtt import device_topic, parse_broker_url  # noqa: E402
from edgeship.mqtt.client import make_client  # noqa: E402

PASSWORD = "bench-password"
STUCK = 15.0  # seconds without CONNACK/SUBACK before a session is dropped and retried (an agent's keep-alive would)


def cpu_seconds(pids: Sequence[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def envelope(sequence: int) -> bytes:
    """What ``Fleet._ack_unverified`` reads: a DSSE-shaped envelope carrying only the sequence."""
    return json.dumps({"payload": base64.b64encode(json.dumps({"sequence": sequence}).encode()).decode()}).encode()


class Devices:
    """Simulated devices, a fleet per broker address; stepped together from one thread."""

    def __init__(self, urls: Sequence[str], ids: Sequence[str]) -> None:
        self.fleets = [Fleet(url, ids[i::len(urls)], None, verify=False) for i, url in enumerate(urls)]  # type: ignore[arg-type]
        self.refused = 0
        self.retried_connects = 0
        self._attempt: dict[str, float] = {}  # device id -> when its last connect attempt started
        for fleet in self.fleets:
            self._count_refusals(fleet)

    def _count_refusals(self, fleet: Fleet) -> None:
        for device in fleet.devices:
            inner = device.client.on_subscribe

            def on_subscribe(client: paho.Client, data: Any, mid: int, codes: Any, props: Any,
                             inner: Any = inner) -> None:  # fmt: skip
                if any(getattr(code, "is_failure", False) for code in codes):
                    self.refused += 1
                    base = device_topic(data.device_id, "commands")
                    client.subscribe([(data.desired, 1), (f"{base}/+/+", 1)])  # the agent's retry
                    return
                inner(client, data, mid, codes, props)

            device.client.on_subscribe = on_subscribe

    def connect(self, timeout: float, fleets: Sequence[Fleet] | None = None) -> None:
        """Every session connected and subscribed; a refused or dropped connect is retried, as an agent would."""
        deadline = time.monotonic() + timeout
        self._attempt.clear()
        for fleet in fleets if fleets is not None else self.fleets:
            with contextlib.suppress(TimeoutError):  # retried below
                fleet.connect(min(STUCK, max(deadline - time.monotonic(), 1.0)))
        while not all(d.ready for fleet in self.fleets for d in fleet.devices):
            if time.monotonic() > deadline:
                missing = sum(1 for fleet in self.fleets for d in fleet.devices if not d.ready)
                raise TimeoutError(f"{missing} sessions did not connect and subscribe in {timeout} s")
            now = time.monotonic()
            for fleet in fleets if fleets is not None else self.fleets:
                for device in fleet.devices:
                    if device.ready:
                        continue
                    sock = device.client.socket()
                    if sock is None:
                        self.retried_connects += 1
                        self._attempt[device.device_id] = now
                        with contextlib.suppress(OSError):
                            device.client.reconnect()
                    elif now - self._attempt.setdefault(device.device_id, now) > STUCK:
                        with contextlib.suppress(OSError):  # no CONNACK or SUBACK: drop it, retried next round
                            sock.shutdown(socket.SHUT_RDWR)
            self.run_until(lambda: False, 1.0)

    def applied(self, sequence: int) -> int:
        return sum(1 for fleet in self.fleets for d in fleet.devices if d.last_applied == sequence)

    def received(self) -> int:
        return sum(fleet.counts["desired_in"] for fleet in self.fleets)

    def run_until(self, done: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                return False
            for fleet in self.fleets:
                fleet.step(0.005)
        return True

    def close(self) -> None:
        for fleet in self.fleets:
            fleet.close()


def publish_all(url: str, ids: Sequence[str], sequence: int) -> paho.Client:
    settings = parse_broker_url(url)
    client = make_client(settings, "hub", persistent=False, max_inflight=1000)
    client.connect(settings.host, settings.port)
    client.loop_start()
    for device_id in ids:
        client.publish(device_topic(device_id, "desired"), envelope(sequence), qos=1, retain=True)
    return client


def measure(name: str, urls: list[str], pids: Callable[[], list[int]], ids: list[str],
            kill: Callable[[int], None] | None, timeout: float) -> dict[str, Any]:  # fmt: skip
    result: dict[str, Any] = {"engine": name, "devices": len(ids), "load_start": os.getloadavg()[0]}
    devices = Devices(urls[:-1] if len(urls) > 1 else urls, ids)
    publisher_url = urls[-1]

    def phase(label: str, work: Callable[[], None]) -> None:
        cpu, started = cpu_seconds(pids()), time.monotonic()
        try:
            work()
        finally:  # a phase that timed out is recorded too: its time, CPU and how far it got
            ready = sum(1 for fleet in devices.fleets for d in fleet.devices if d.ready)
            result[label] = {"seconds": round(time.monotonic() - started, 3),
                             "broker_cpu": round(cpu_seconds(pids()) - cpu, 2), "ready_sessions": ready,
                             "retried_connects": devices.retried_connects, "refused_subacks": devices.refused}
            devices.retried_connects = devices.refused = 0
            print(f"{name}: {label} {result[label]}", flush=True)

    try:
        phase("subscribe", lambda: devices.connect(timeout))

        def fan_out(sequence: int) -> Callable[[], None]:
            def work() -> None:
                client = publish_all(publisher_url, ids, sequence)
                ok = devices.run_until(lambda: devices.applied(sequence) == len(ids), timeout)
                client.disconnect()
                client.loop_stop()
                if not ok:
                    raise TimeoutError(f"{len(ids) - devices.applied(sequence)} devices did not apply {sequence}")
            return work

        phase("fan_out", fan_out(1))
        if kill is not None:
            first = devices.fleets[0]
            kill(0)
            moved = Fleet(urls[1], [d.device_id for d in first.devices], None, verify=False)  # type: ignore[arg-type]
            first.close()
            devices.fleets[0] = moved
            devices._count_refusals(moved)
            phase("failover_subscribe", lambda: devices.connect(timeout, [moved]))
            phase("fan_out_after_kill", fan_out(2))
        for fleet in devices.fleets:
            fleet.disconnect()
        before = devices.received()

        def storm() -> None:
            devices.connect(timeout)
            if not devices.run_until(lambda: devices.received() >= before + len(ids), timeout):
                raise TimeoutError(f"{before + len(ids) - devices.received()} devices got no retained document")

        phase("reconnect_storm", storm)
    except Exception as exc:  # a failed engine is a result too
        result["error"] = f"{type(exc).__name__}: {exc}"
        print(f"{name}: {result['error']}", flush=True)
    finally:
        devices.close()
    result["load_end"] = os.getloadavg()[0]
    return result


VARIANTS = {
    "nats-r1-memory": NatsSettings(consumer_replicas=1, consumer_memory_storage=True),
    "nats-r3-memory": NatsSettings(consumer_replicas=3, consumer_memory_storage=True),
    "nats-r3-file": NatsSettings(consumer_replicas=3, consumer_memory_storage=False),
}


def run(count: int, variants: list[str], timeout: float) -> list[dict[str, Any]]:
    ids = device_ids("dev.", 0, count)  # device ids with '.', as edgeship allows
    results = []
    with tempfile.TemporaryDirectory(prefix="broker-eval-") as tmp:
        if "mosquitto" in variants:
            with mosquitto(Path(tmp)) as (url, pid):
                results.append(measure("mosquitto", [url], lambda: [pid], ids, None, timeout))
        hashed = hash_password_bcrypt(PASSWORD)
        for variant, settings in VARIANTS.items():
            if variant not in variants:
                continue
            cluster = NatsCluster(Path(tmp) / variant, [NatsUser("hub", hashed)], settings=settings).start()
            try:
                urls = [url.replace("mqtt://", f"mqtt://hub:{PASSWORD}@") for url in cluster.urls]
                alive = lambda c=cluster: [p.pid for p in c.processes if p is not None]  # noqa: E731
                results.append(measure(variant, urls, alive, ids, cluster.kill, timeout))
            finally:
                cluster.stop()
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--variants", default="mosquitto," + ",".join(VARIANTS))
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per phase before it counts as failed")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # stop the brokers on the way out
    results = run(args.devices, args.variants.split(","), args.timeout)
    record = {"command": " ".join(["python", *sys.argv]), "cpus": os.cpu_count(), "results": results}
    print(json.dumps(record, indent=2))
    if args.out:
        args.out.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
