"""What replicas on one PostgreSQL agree on: one lease holder, change notices, unique sequences, shared tokens.

Real PostgreSQL (``replicas.PostgresServer``), real Mosquitto and real ``edgeship hub
serve`` processes where a replica is involved; the lease and notice tests use the store
modules directly on the real server, and "losing the connection" is the server
terminating it (``pg_terminate_backend``), as a dead network or a failover would.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from hub_workspace import make_hub_workspace
from replicas import PostgresServer, ReplicaGroup

from edgeship.hub.api import create_token
from edgeship.hub.server import HubConfig, HubServer
from edgeship.hub.store import HubStore, Outbox, TokenStore
from edgeship.hub.store.lease import AdvisoryLeases, LocalLeases, leases_for
from edgeship.hub.store.notify import LocalFeed, NotifyFeed
from edgeship.signing import Keyring, TrustRoot, sign_trust_root
from edgeship.signing.dsse import Envelope

HERE = Path(__file__).resolve().parent


def _terminate(db_url: str, application: str) -> int:
    """End, from the server side, every connection with this application name; returns how many."""
    plain = db_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as conn:
        rows = conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                            (application,)).fetchall()
    return len(rows)


def test_one_replica_holds_the_coordinator_lease_and_another_takes_it_when_its_connection_is_lost(
    postgres: PostgresServer,
) -> None:
    db = postgres.fresh_database()
    first, second = AdvisoryLeases(db, application="lease-a"), AdvisoryLeases(db, application="lease-b")
    try:
        assert first.acquire("coordinator") and first.held("coordinator")
        assert not second.acquire("coordinator") and not second.held("coordinator")
        assert first.check() and first.held("coordinator")

        assert _terminate(db, "lease-a") == 1
        assert not first.check() and not first.held("coordinator")  # it knows before its next piece of work
        assert second.acquire("coordinator")
        assert not first.acquire("coordinator")  # reconnected, but the lease is the other replica's now
    finally:
        first.close()
        second.close()
    assert isinstance(leases_for("sqlite:///x.db"), LocalLeases) and LocalLeases().acquire("coordinator")


def test_a_change_notice_reaches_the_other_replica_and_a_reconnected_listener_catches_up(
    postgres: PostgresServer,
) -> None:
    db = postgres.fresh_database()
    sender, listener = NotifyFeed(db, application="feed-a"), NotifyFeed(db, application="feed-b")
    runs: list[str] = []
    ran = threading.Event()

    def reload() -> None:
        runs.append("trust")
        ran.set()

    listener.on("trust", reload)
    listener.start()
    try:
        assert listener.connected.wait(10)
        assert ran.wait(5)  # the first connect runs every handler once
        ran.clear()
        sender.announce("trust")
        assert ran.wait(5) and listener.received == 1
        ran.clear()
        listener.connected.clear()
        assert _terminate(db, "feed-b") == 1  # a notice sent now would be lost: the reconnect runs the handler
        assert listener.connected.wait(10) and ran.wait(5)
        assert len(runs) == 3
        with pytest.raises(ValueError, match="unknown change topic"):
            sender.announce("nonsense")
    finally:
        sender.stop()
        listener.stop()
    LocalFeed().announce("trust")  # SQLite: nothing to tell, nothing fails


def test_two_processes_issuing_at_once_never_store_one_sequence_twice(tmp_path: Path, postgres: PostgresServer,
                                                                        mosquitto: Any) -> None:
    ws, _world = make_hub_workspace(tmp_path / "ws")
    db = postgres.fresh_database()
    with HubServer(HubConfig(workspace=ws.root, db_url=db, broker_url=mosquitto.url, port=0)) as hub:
        hub.services.catalog.upload_from_workspace(ws.root, "digits", 1)
        hub.services.fleet.create_devices((f"dev-{i:03}", {"site": "lab"}) for i in range(100))
    rounds = 3
    racers = [subprocess.Popen([sys.executable, str(HERE / "race_issue.py"), str(ws.root), db, str(rounds)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    stored = []
    for racer in racers:
        out, err = racer.communicate(timeout=120)
        assert racer.returncode == 0, err[-3000:]
        stored.append(int(out.strip().splitlines()[-1]))
    # forced: a racer re-signs each device whose newest document is older than its pass's start, so it skips the
    # devices the other racer re-signed meanwhile; every pass re-signs at least what the other did not
    assert min(stored) > 0 and sum(stored) >= 100 * rounds, stored

    plain = db.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain) as conn:
        rows = conn.execute("SELECT device_id, sequence, envelope FROM desired ORDER BY device_id, sequence").fetchall()
        counters = dict(conn.execute("SELECT id, last_sequence FROM devices").fetchall())
    by_device: dict[str, list[int]] = {}
    for device, sequence, envelope in rows:
        payload = json.loads(Envelope.from_json(envelope).payload)
        assert (payload["deviceId"], payload["sequence"]) == (device, sequence)  # signed what was stored
        by_device.setdefault(device, []).append(sequence)
    for device, sequences in by_device.items():
        assert sequences == list(range(1, len(sequences) + 1)), (device, sequences)  # no gap, no repeat
        assert counters[device] == sequences[-1]
    assert sum(len(sequences) - 1 for sequences in by_device.values()) == sum(stored)  # each stored one, once


def test_a_trust_root_rotation_to_a_new_hub_key_and_a_token_revocation_through_one_replica_hold_on_the_other(
    tmp_path: Path, postgres: PostgresServer, mosquitto: Any,
) -> None:
    ws, world = make_hub_workspace(tmp_path / "ws")
    ring = Keyring(ws)
    ring.create("hub", name="hub2")  # held by every replica (one workspace), listed by no root yet
    hub2 = ring.signer("hub2")
    db = postgres.fresh_database()
    store = HubStore(db)
    operator, doomed = create_token(store, "ops"), create_token(store, "doomed")
    group = ReplicaGroup(ws.root, db, mosquitto.url, tmp_path / "logs", count=2)
    group.start()
    try:
        a, b = (httpx.Client(base_url=r.url, headers={"Authorization": f"Bearer {operator}"}, timeout=30)
                for r in group.replicas)
        assert httpx.get(f"{group[1].url}/devices", headers={"Authorization": f"Bearer {doomed}"}).status_code == 200
        TokenStore(store).revoke("doomed", datetime.now(timezone.utc))  # as 'edgeship hub token revoke' does
        assert httpx.get(f"{group[1].url}/devices", headers={"Authorization": f"Bearer {doomed}"}).status_code == 401

        root = TrustRoot.build(root=[world.root_key.public_key], release=[world.release.public_key],
                               hub=[hub2.public_key], version=2)
        rotated = a.put("/trust-root", content=sign_trust_root(root, [world.root_key]).to_json().encode(),
                        headers={"Content-Type": "application/json"})
        assert rotated.status_code == 200, rotated.text
        deadline = time.monotonic() + 10
        while b.get("/trust-root").json()["version"] != 2:
            assert time.monotonic() < deadline, group.logs()
            time.sleep(0.1)
        created = b.post("/devices", json={"id": "dev-new", "tags": {}})
        assert created.status_code == 201, created.text
        envelope = _newest_envelope(db, "dev-new")
        assert [s.keyid for s in envelope.signatures] == [hub2.keyid]  # B signs with the key the new root lists
    finally:
        group.stop()
        store.close()


def _newest_envelope(db: str, device: str) -> Envelope:
    plain = db.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain) as conn:
        row = conn.execute("SELECT envelope FROM desired WHERE device_id = %s ORDER BY sequence DESC LIMIT 1",
                           (device,)).fetchone()
    assert row is not None
    return Envelope.from_json(row[0])


def _issued_after_a_replica_dies(tmp_path: Path, postgres: PostgresServer, mosquitto: Any, *, dies: str,
                                 reason: str, devices: slice, what: str) -> None:  # fmt: skip
    """Two replicas on one database, hub-a coordinating; ``reason``'s re-evaluation intent is committed for
    ``devices`` (of three) and never issued, then replica ``dies`` stops (its leases end with it, as with a SIGKILL:
    the server ends the connection; its row stays for the sweep). The survivor must issue exactly those devices'
    documents, coordinate, and leave nothing pending."""
    ws, _world = make_hub_workspace(tmp_path / "ws")
    db = postgres.fresh_database()
    ids = [f"dev-{i}" for i in range(3)]
    config = HubConfig(workspace=ws.root, db_url=db, broker_url=mosquitto.url, port=0)
    with HubServer(config) as seed:
        seed.services.catalog.upload_from_workspace(ws.root, "digits", 1)
        seed.services.fleet.create_devices((d, {"site": "lab"}) for d in ids)
    store = HubStore(db)
    replicas: dict[str, HubServer] = {}
    try:
        for client_id in ("hub-a", "hub-b"):
            replicas[client_id] = HubServer(dataclasses.replace(config, client_id=client_id)).start()
        assert replicas["hub-a"].replication.leading() and not replicas["hub-b"].replication.leading()
        before = {d: r.sequence for d, r in store.latest_desired(ids).items()}
        Outbox(store).add(reason, ids[devices], force=True)  # committed; its issuing never ran
        replicas[dies].stop()
        deadline = time.monotonic() + 20
        while {d: r.sequence for d, r in store.latest_desired(ids).items()} == before:
            assert time.monotonic() < deadline, what
            time.sleep(0.2)
        survivor = replicas["hub-b" if dies == "hub-a" else "hub-a"]
        assert survivor.replication.leading()
        after = {d: r.sequence for d, r in store.latest_desired(ids).items()}
        assert after == {d: before[d] + (1 if d in ids[devices] else 0) for d in ids}
        assert Outbox(store).pending() == []
    finally:
        for replica in replicas.values():
            replica.stop()
        store.close()


def test_a_replica_taking_the_periodic_work_over_finishes_what_the_dead_coordinator_committed(
    tmp_path: Path, postgres: PostgresServer, mosquitto: Any,
) -> None:
    """The coordinator committed a change with its re-evaluation intent (a rollout's next wave) and died before
    issuing it; the replica that takes the lease over issues it then, not at its next refresh (600 s later).

    Found by ``test_cluster_rollout_kill`` under load: the engine's replica was killed right after starting wave 2,
    and the survivor ran the rollout on, waiting for wave 2's 80 devices, which were never sent their documents.
    """
    _issued_after_a_replica_dies(tmp_path, postgres, mosquitto, dies="hub-a", reason="rollout lab wave-started",
                                 devices=slice(None, 2),
                                 what="the replica that took over did not issue the committed wave")  # fmt: skip


def test_a_replica_killed_between_a_change_and_its_documents_has_them_issued_by_the_coordinator(
    tmp_path: Path, postgres: PostgresServer, mosquitto: Any,
) -> None:
    """A replica that is not the coordinator committed a change with its re-evaluation intent (a REST request) and
    died before issuing it; the coordinator's sweep finds it gone and issues it, not at its next refresh (600 s)."""
    _issued_after_a_replica_dies(tmp_path, postgres, mosquitto, dies="hub-b", reason="tags changed through hub-b",
                                 devices=slice(1, None),
                                 what="the coordinator did not issue the gone replica's committed change")  # fmt: skip
