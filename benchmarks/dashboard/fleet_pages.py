"""How fast the dashboard's fleet page answers over HTTP with a 10,000-device hub (issue 18: "well under a second").

A hub over SQLite in a temp dir (the hub world of ``tests/hub``: real services, an offline
link), N devices with tags (``ring`` canary for 1 in 10, ``site`` lab/field), each with
its first document, a report (digits:1 or, for 1 in 20, digits:2 failed with code 500)
and presence (online for half); one deployment over all of them. The REST app with the
dashboard mounted runs on uvicorn; a signed-in client asks each page ``--repeat`` times
and the median, min and max wall times of a whole HTTP answer are printed as JSON, with
the median CPU time of this process per answer (server and client threads: what the
answer costs, whatever the machine's load) and the load average at start and end.

Side by side in the same run, in this process without HTTP: a deployment's status as the
service reads it now (columns, ``services/status_columns.py``) and as it read it before
(the store's records: every newest signed document and an ORM object per report), with
a check that both give the same answer; and the deployments list's statuses, one fleet read
per deployment against one read for them all (``--deployments N`` makes N deployments).

    python benchmarks/dashboard/fleet_pages.py --devices 10000 --repeat 7
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "tests"))
sys.path.insert(0, str(HERE.parents[1] / "tests" / "hub"))

from hub_world import HubWorld  # noqa: E402
from rest_server import serving  # noqa: E402

from edgeship.hub.api import OperatorTokens, create_app, create_token  # noqa: E402
from edgeship.hub.services import ModuleRefSpec, OfflineLink  # noqa: E402
from edgeship.hub.services.rules import parsed_condition  # noqa: E402
from edgeship.hub.status import deployment_status  # noqa: E402

PAGES = {
    "fleet first page": "/ui/fleet",
    "fleet filtered by condition": "/ui/fleet?condition=tags.ring+%3D+%27canary%27+AND+tags.site+%3D+%27lab%27",
    "fleet filtered by status": "/ui/fleet?status=failing",
    "fleet filtered by module": "/ui/fleet?module=digits%3A2",
    "fleet page 100 (live region)": "/ui/fleet?page=100",
    "fleet invalid condition": "/ui/fleet?condition=tags.ring+%3D%3D",
    "deployments (counts)": "/ui/deployments",
    "deployment page": "/ui/deployments/fleet",
    "deployment live region (every 2 s)": "/ui/deployments/fleet/live",
}


def build(n: int, deployments: int = 1) -> tuple[HubWorld, object, str]:
    root = Path(tempfile.mkdtemp(prefix="edgeship-dashboard-bench-"))
    world = HubWorld(root)
    hub = world.services(f"sqlite:///{root / 'hub.db'}", link=OfflineLink())
    hub.catalog.upload_module(world.module("digits", 1))
    ids = [f"dev-{i:05d}" for i in range(n)]
    hub.fleet.create_devices([(d, {"ring": "canary" if i % 10 == 0 else "main", "site": "lab" if i % 2 else "field",
                                   "arch": "amd64"}) for i, d in enumerate(ids)])
    hub.deployments.create_deployment("fleet", "tags.arch = 'amd64'", [ModuleRefSpec("digits", 1)])
    for extra in range(2, deployments + 1):  # more layers over the same fleet, below "fleet": overridden everywhere
        hub.deployments.create_deployment(f"fleet-{extra}", "tags.arch = 'amd64'", [ModuleRefSpec("digits", 1)],
                                          priority=-extra)
    sequences = {d.id: d.last_sequence for d in hub.store.list_devices()}
    reports = []
    for i, d in enumerate(ids):
        bad = i % 20 == 0
        reports.append((d, {"schemaVersion": 1, "deviceId": d, "lastAppliedSequence": sequences[d],
                            "status": {"code": 500 if bad else 200, "description": "failed" if bad else "ok"},
                            "modules": {"digits": {"version": 2 if bad else 1, "status": "failed" if bad else "running",
                                                   "restartCount": 0, "port": 5001}}}))
    for start in range(0, n, 1000):
        hub.fleet.record_reported_many(reports[start:start + 1000])
    for d in ids[::2]:
        hub.fleet.record_online(d, True)
    token = create_token(hub.store, "bench")
    return world, hub, token


def status_side_by_side(hub: object, repeat: int) -> None:
    """One deployment's status over the fleet: the record read (before) and the column read (now), alternated."""
    store, deployments, rollouts = hub.store, hub.deployments, hub.rollouts  # type: ignore[attr-defined]
    record = store.get_deployment("fleet")

    def before() -> object:
        return deployment_status(record.id, parsed_condition(record.target_condition), store.list_devices(),
                                 store.latest_desired(), store.reported(), held=rollouts.held(record.id))

    def now() -> object:
        return deployments.deployment_status("fleet")

    records = deployments.list_deployments()

    def list_before() -> object:  # the deployments list: one fleet read per deployment
        return [deployments.deployment_status(r.id) for r in records]

    def list_now() -> object:  # one fleet read for them all
        return deployments.statuses(records)

    cpu: dict[str, list[float]] = {"records (before)": [], "columns (now)": [],
                                   f"list of {len(records)}, a read each": [], f"list of {len(records)}, one read": []}
    for _ in range(repeat):
        for label, read in (("records (before)", before), ("columns (now)", now),
                            (f"list of {len(records)}, a read each", list_before),
                            (f"list of {len(records)}, one read", list_now)):
            c0 = time.process_time()
            answer = read()
            cpu[label].append(time.process_time() - c0)
        assert answer == list_before(), "one read for the list disagrees with a read per deployment"
        assert now() == before(), "the column read disagrees with the record read"
    medians = {label: statistics.median(values) for label, values in cpu.items()}
    for label, values in cpu.items():
        print(json.dumps({"status read": label, "cpu_median_s": round(medians[label], 3),
                          "cpu_min_s": round(min(values), 3), "cpu_max_s": round(max(values), 3)}), flush=True)
    ratio = medians["columns (now)"] / medians["records (before)"]
    print(json.dumps({"status read ratio now/before": round(ratio, 2)}), flush=True)
    each, once = (medians[f"list of {len(records)}, {how}"] for how in ("a read each", "one read"))
    print(json.dumps({f"list of {len(records)} ratio one read/a read each": round(once / each, 2)}), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=10000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--deployments", type=int, default=1, help="deployments over the fleet (the list page)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    world, hub, token = build(args.devices, args.deployments)
    print(json.dumps({"devices": args.devices, "setup_seconds": round(time.perf_counter() - started, 1)}), flush=True)
    load_start = os.getloadavg()
    status_side_by_side(hub, args.repeat)
    with serving(create_app(hub, OperatorTokens(hub.store))) as url, httpx.Client(base_url=url, timeout=60) as client:
        assert client.post("/ui/signin", data={"token": token}).status_code == 303
        for label, path in PAGES.items():
            times, cpu = [], []
            for _ in range(args.repeat):
                t0, c0 = time.perf_counter(), time.process_time()
                answer = client.get(path)
                times.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
                assert answer.status_code in (200, 400), (path, answer.status_code)
            print(json.dumps({"page": label, "path": path, "status": answer.status_code, "bytes": len(answer.content),
                              "median_s": round(statistics.median(times), 3), "min_s": round(min(times), 3),
                              "max_s": round(max(times), 3), "cpu_median_s": round(statistics.median(cpu), 3)}),
                  flush=True)
        # side by side, same run: the REST API's whole device list (what a client that pages on its own side reads)
        times, cpu = [], []
        for _ in range(args.repeat):
            t0, c0 = time.perf_counter(), time.process_time()
            listed = client.get("/devices", headers={"Authorization": f"Bearer {token}"})
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            assert listed.status_code == 200
        print(json.dumps({"page": "REST GET /devices (every device, for comparison)", "status": listed.status_code,
                          "bytes": len(listed.content), "median_s": round(statistics.median(times), 3),
                          "min_s": round(min(times), 3), "max_s": round(max(times), 3),
                          "cpu_median_s": round(statistics.median(cpu), 3)}), flush=True)
    print(json.dumps({"load_start": [round(x, 2) for x in load_start],
                      "load_end": [round(x, 2) for x in os.getloadavg()]}), flush=True)
    hub.store.close()  # type: ignore[attr-defined]
    shutil.rmtree(world.root, ignore_errors=True)  # the hub database and blobs of this run
    return 0


if __name__ == "__main__":
    sys.exit(main())
