"""What the hub's ``telemetry-stored`` confirmation (ADR 0049) saves when the node leading the inbound stream dies.

``stream_capture.py`` showed a NATS cluster acknowledging MQTT QoS 1 publishes its JetStream stream never stored
while the stream elected a new leader. This runs the product's path instead, side by side in one run on each
fresh cluster (``tests/scale/telemetry_agents.py``): PostgreSQL, one ``edgeship hub serve --nats-inbound`` on a
node that does not lead the stream, and two groups of ``--devices`` devices, each the agent's own link, on-disk
queue and sender, on the two nodes that stay up:

- *puback*: the link does not subscribe to ``telemetry-stored``, so the sender never sees a confirmation and a
  batch leaves the queue on the broker's PUBACK (an agent before ADR 0049, or one whose hub never confirmed);
- *confirm*: the agent as shipped, with ``--resend-after`` (the agent's default is 30 s).

Every device pushes a sample every ``--sample-every`` seconds; ``--before-kill`` seconds in, the stream's leader
node is SIGKILLed; sampling goes on ``--after-kill`` seconds, then stops. Measured per group: samples pushed,
samples whose batch left the queue (acknowledged: by the broker or by the hub) but that the hub's store lacks
(*lost*), samples it holds twice, copies sent, and seconds from the end of sampling until every queue of the
group was empty. Each ``--runs`` uses a fresh cluster and database. One JSON line per run.

    python benchmarks/broker/telemetry_confirmation.py --runs 3

Not a test: it records what the engine and the product do.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
for _extra in (REPO / "tests", REPO / "tests" / "scale", REPO / "tests" / "hub", REPO / "benchmarks" / "fleet"):
    if str(_extra) not in sys.path:
        sys.path.insert(0, str(_extra))

from postgres_server import PostgresServer  # noqa: E402
from telemetry_agents import (  # noqa: E402
    TelemetryDevice,
    TelemetryWorld,
    missing_and_twice,
    stored_samples,
    stream_leader,
    telemetry_world,
)

from edgeship.hub.store.telemetry import KEEP_PER_DEVICE  # noqa: E402

SETTLE = 3.0  # seconds the store must stay unchanged before the count is taken


def _wait(done: object, timeout: float, world: TelemetryWorld) -> bool:
    deadline = time.monotonic() + timeout
    while not done():  # type: ignore[operator]
        if world.pump.error is not None:
            raise RuntimeError(f"the pump thread failed: {world.pump.error!r}")
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def _empty(devices: list[TelemetryDevice]) -> bool:
    return all(len(device.queue) == 0 for device in devices)


def run_once(folder: Path, db_url: str, args: argparse.Namespace) -> dict[str, object]:
    groups = {"puback": (args.devices, False), "confirm": (args.devices, True)}
    load_start = os.getloadavg()[0]
    with telemetry_world(folder, db_url, groups, resend_after=args.resend_after,
                         sample_every=args.sample_every) as world:  # fmt: skip
        world.start()
        world.pump.sampling.set()
        ready = _wait(lambda: all(d.queue.hub_confirms for d in world.groups["confirm"])
                      and all(d.pushed and len(d.queue) <= 2 for d in world.groups["puback"]),
                      args.connect_wait, world)  # fmt: skip
        if not ready:
            raise RuntimeError(f"the devices were not all sending within {args.connect_wait:g} s")
        time.sleep(args.before_kill)
        leader = world.cluster.nodes[world.victim].name
        leader_now = stream_leader(world.cluster, world.hub_node)  # it may have moved since the stream was made
        world.cluster.kill(world.victim)
        time.sleep(args.after_kill)
        world.pump.sampling.clear()
        stopped = time.monotonic()
        drained: dict[str, float | None] = dict.fromkeys(groups)
        while None in drained.values() and time.monotonic() - stopped < args.drain_wait:
            for name, devices in world.groups.items():
                if drained[name] is None and _empty(devices):
                    drained[name] = round(time.monotonic() - stopped, 1)
            time.sleep(0.1)
        previous: list[tuple[str, int]] | None = None
        while (stored := stored_samples(db_url)) != previous:  # the hub stores what the stream still holds
            previous = stored
            time.sleep(SETTLE)
        most = max(len(device.pushed) for device in world.devices)
        if most > KEEP_PER_DEVICE:  # a device's oldest batches may have been pruned: the count would be wrong
            raise RuntimeError(f"a device pushed {most} samples, more than the {KEEP_PER_DEVICE} batches the hub "
                               "keeps per device; sample less often or for less time")
        figures: dict[str, object] = {"killed": leader, "leader_at_kill": leader_now, "load_start": load_start}
        for name, devices in world.groups.items():
            missing, twice = missing_and_twice(devices, stored)
            unsent = sum(len(d.queue) for d in devices)
            figures[name] = {"pushed": sum(len(d.pushed) for d in devices), "lost": len(missing) - unsent,
                             "still_queued": unsent, "twice": len(twice),
                             "copies": sum(d.sender.copies for d in devices), "queues_empty_after_s": drained[name]}
    figures["load_end"] = os.getloadavg()[0]
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--devices", type=int, default=20, help="devices per group")
    parser.add_argument("--sample-every", type=float, default=0.4, help="seconds between a device's samples")
    parser.add_argument("--resend-after", type=float, default=2.0, help="the confirming senders' first resend delay")
    parser.add_argument("--before-kill", type=float, default=5.0)
    parser.add_argument("--after-kill", type=float, default=10.0)
    parser.add_argument("--connect-wait", type=float, default=60.0)
    parser.add_argument("--drain-wait", type=float, default=120.0)
    args = parser.parse_args()
    with PostgresServer() as postgres:
        for _run in range(args.runs):
            with tempfile.TemporaryDirectory(prefix="edgeship-telemetry-confirmation-") as tmp:
                print(json.dumps(run_once(Path(tmp), postgres.fresh_database(), args)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
