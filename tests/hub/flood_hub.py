"""A real hub (``HubServer``) in its own process, so a test can measure its memory (RSS) under a flood.

Run by ``test_inbound_flood.py`` (and by hand for the figures in ADR 0016)::

    python tests/hub/flood_hub.py WORKSPACE mqtt://127.0.0.1:PORT default|unlimited DEVICE...

It starts the hub on the workspace with the given broker, creates the devices, and
prints one JSON line ``{"ready": ...}``. Then it answers one JSON line per command
read from stdin: ``peak-reset`` (zero the kernel's peak-RSS mark), ``stats`` (the
subscriber's counters, the process's RSS and peak RSS, what the hub stored per
device) and ``stop``. ``unlimited`` is the hub before ADR 0016: no rates, no device
share, a budget as large as the old 100,000-message queue of 256 KiB messages.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _limits(mode: str) -> Any:
    from edgeship.hub.bridge.limits import ChannelLimit, InboundLimits

    if mode == "default":
        return InboundLimits()
    unlimited = ChannelLimit(max_bytes=256 * 1024, rate=float("inf"), burst=1)
    huge = 100_000 * (256 * 1024 + 256)
    return InboundLimits(queue_bytes=huge, device_queue_bytes=huge, reported=unlimited, telemetry=unlimited,
                         online=unlimited)


def main(argv: list[str]) -> int:
    from edgeship.hub.server import HubConfig, HubServer

    workspace, broker, mode, *devices = argv
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    hub = HubServer(HubConfig(workspace=Path(workspace), broker_url=broker, port=0, inbound=_limits(mode))).start()
    for device in devices:
        hub.services.fleet.create_device(device)
    _say({"ready": True, "api": hub.api_url, "rssKiB": _status_kib("VmRSS")})
    for line in sys.stdin:
        command = line.strip()
        if command == "peak-reset":
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
            _say({"rssKiB": _status_kib("VmRSS"), "peakKiB": _status_kib("VmHWM")})
        elif command == "stats":
            stats = hub.bridge.subscriber.stats()
            stored = {}
            for device in devices:
                view = hub.services.fleet.get_device(device)
                stored[device] = {"reported": view.reported is not None,
                                  "telemetry": len(hub.services.fleet.recent_telemetry(device, 1000))}
            _say({"handled": stats.handled, "dropped": stats.dropped, "queuedBytes": stats.queued_bytes,
                  "peakQueuedBytes": stats.peak_bytes, "byDevice": stats.by_device,
                  "byReason": {f"{c} {r}": n for (c, r), n in stats.by_reason.items()},
                  "stored": stored, "rssKiB": _status_kib("VmRSS"), "peakKiB": _status_kib("VmHWM")})
        elif command == "stop":
            break
    hub.stop()
    return 0


def _say(data: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(data) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
