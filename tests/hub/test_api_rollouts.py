"""The rollout routes over real HTTP: show, events, pause/resume/approve/abort, and the policy on a deployment.

The hub's REST app runs on uvicorn (``rollout_hub``) over the real services; devices
report through the bridge's entry point and the engine runs through its ``tick``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from rollout_hub import RolloutHub, rollout_hub

WAVES = {"waves": "1,3,6"}


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[RolloutHub]:
    with rollout_hub(tmp_path, devices=6) as served:
        yield served


@pytest.fixture
def ops(hub: RolloutHub) -> Iterator[httpx.Client]:
    with hub.client() as client:
        yield client


def _act(client: httpx.Client, name: str, action: str, reason: str | None = None) -> httpx.Response:
    return client.post(f"/deployments/{name}/rollout/{action}", json={"reason": reason} if reason else None)


def test_a_deployment_in_waves_reaches_wave_one_only_and_shows_its_rollout(hub: RolloutHub,
                                                                             ops: httpx.Client) -> None:
    created = hub.create("lab", {**WAVES, "soak": "5m", "advancePercent": 95})
    assert created.status_code == 201, created.text
    rollout = created.json()["rollout"]
    assert (rollout["deployment"], rollout["state"], rollout["wave"]) == ("lab", "rolling-out", 1)
    assert [(w["wave"], w["status"], w["targeted"]) for w in rollout["waves"]] == [
        (1, "current", 1), (2, "next", 2), (3, "next", 3)]
    assert rollout["policy"]["waves"] == "1,3,6" and rollout["policy"]["soak"] == 300
    assert rollout["policy"]["advancePercent"] == 95 and rollout["waitingFor"]

    shown = ops.get("/deployments/lab/rollout")
    assert shown.status_code == 200
    assert shown.json() == hub.services.rollouts.show("lab").to_dict()  # the view's JSON, as it is
    assert ops.get("/deployments/lab").json()["rollout"] == shown.json()
    assert hub.received("lab") == set(hub.waves("lab")[1])

    (started,) = ops.get("/deployments/lab/events").json()
    assert (started["actor"], started["action"], started["state"]) == ("ops", "started", "rolling-out")
    assert set(started) == {"at", "actor", "action", "state", "reason", "detail"}


def test_a_deployment_without_waves_has_no_rollout(hub: RolloutHub, ops: httpx.Client) -> None:
    assert hub.create("plain", None).status_code == 201
    assert hub.create("unstaged", {"soak": "5m"}).status_code == 201  # no waves: every device at once, as before
    for name in ("plain", "unstaged"):
        shown = ops.get(f"/deployments/{name}")
        assert shown.status_code == 200 and shown.json()["rollout"] is None
        assert shown.json()["status"]["counts"]["targeted"] == 6
        for path in (f"/deployments/{name}/rollout", f"/deployments/{name}/events"):
            missing = ops.get(path)
            assert missing.status_code == 404 and "every targeted device at once" in missing.json()["detail"]
        assert _act(ops, name, "pause").status_code == 404
    assert hub.received("plain") == {f"dev-{n}" for n in range(6)}


def test_pause_resume_and_abort_are_events_with_the_token_name_and_reason(hub: RolloutHub,
                                                                         ops: httpx.Client) -> None:
    assert hub.create("lab", WAVES).status_code == 201
    paused = _act(ops, "lab", "pause", "checking the dashboards")
    assert paused.status_code == 200, paused.text
    assert paused.json()["state"] == "paused" and paused.json()["reason"] == "checking the dashboards"
    again = _act(ops, "lab", "pause")
    assert again.status_code == 409 and again.json()["type"] == "RolloutStateError"
    assert _act(ops, "lab", "resume").json()["state"] == "rolling-out"
    early = _act(ops, "lab", "approve")
    assert early.status_code == 409 and "approv" in early.json()["detail"]

    aborted = _act(ops, "lab", "abort", "wrong model")
    assert aborted.status_code == 200 and aborted.json()["state"] == "aborted"
    assert aborted.json()["reason"] == "wrong model" and aborted.json()["waitingFor"] == ""
    for action in ("abort", "resume", "pause", "approve"):
        assert _act(ops, "lab", action).status_code == 409, action

    events = ops.get("/deployments/lab/events").json()
    assert [(e["action"], e["actor"], e["state"]) for e in events] == [
        ("started", "ops", "rolling-out"), ("paused", "ops", "paused"), ("resumed", "ops", "rolling-out"),
        ("aborted", "ops", "aborted")]
    assert events[1]["reason"] == "checking the dashboards" and events[3]["reason"] == "wrong model"


def test_approval_between_waves_then_completion(hub: RolloutHub, ops: httpx.Client) -> None:
    assert hub.create("lab", {"waves": "1,100%", "approveEachWave": True}).status_code == 201
    (first,) = hub.waves("lab")[1]
    hub.report(first)
    hub.tick()
    waiting = ops.get("/deployments/lab/rollout").json()
    assert waiting["state"] == "waiting-approval" and "approv" in waiting["waitingFor"]
    assert waiting["waves"][0]["succeeded"] == 1 and waiting["waves"][0]["applied"] == 1

    approved = _act(ops, "lab", "approve", "wave 1 is healthy")
    assert approved.status_code == 200, approved.text
    assert (approved.json()["state"], approved.json()["wave"]) == ("rolling-out", 2)
    assert hub.received("lab") == {f"dev-{n}" for n in range(6)}
    for device in hub.waves("lab")[2]:
        hub.report(device)
    hub.tick()
    done = ops.get("/deployments/lab/rollout").json()
    assert done["state"] == "completed" and [w["succeeded"] for w in done["waves"]] == [1, 5]
    actions = [e["action"] for e in ops.get("/deployments/lab/events").json()]
    assert actions[:3] == ["started", "waiting-approval", "wave-started"] and actions[-1] == "completed"


def test_a_failed_device_aborts_and_show_names_it(hub: RolloutHub, ops: httpx.Client) -> None:
    assert hub.create("lab", WAVES).status_code == 201
    (first,) = hub.waves("lab")[1]
    hub.report(first, code=500, running=False)
    hub.tick()
    shown = ops.get("/deployments/lab/rollout").json()
    assert shown["state"] == "aborted" and shown["tripped"] == [first] and shown["reason"]
    assert shown["waves"][0]["failed"] == 1
    assert ops.get("/deployments/lab/events").json()[-1]["actor"] == "hub"
    assert hub.received("lab") == {first}


def test_a_read_only_token_reads_a_rollout_but_cannot_act_on_it(hub: RolloutHub, ops: httpx.Client) -> None:
    assert hub.create("lab", WAVES).status_code == 201
    with hub.client(hub.reader) as reader:
        assert reader.get("/deployments/lab/rollout").json() == ops.get("/deployments/lab/rollout").json()
        assert reader.get("/deployments/lab/events").status_code == 200
        for action in ("pause", "resume", "approve", "abort"):
            refused = _act(reader, "lab", action, "curious")
            assert refused.status_code == 403 and "read-only" in refused.json()["detail"], action
        staged = reader.post("/deployments", json={"name": "x", "targetCondition": "*", "rollout": WAVES,
                                                   "modules": [{"name": "digits", "version": 1}]})
        assert staged.status_code == 403
    assert ops.get("/deployments/lab/rollout").json()["state"] == "rolling-out"
    assert [e["action"] for e in ops.get("/deployments/lab/events").json()] == ["started"]


def test_unknown_deployments_bad_ids_and_bad_actions(hub: RolloutHub, ops: httpx.Client) -> None:
    assert hub.create("lab", WAVES).status_code == 201
    for path in ("/deployments/ghost/rollout", "/deployments/ghost/events"):
        assert ops.get(path).status_code == 404
    assert _act(ops, "ghost", "pause").status_code == 404
    assert ops.get("/deployments/-bad/rollout").status_code == 400
    unknown = ops.post("/deployments/lab/rollout/restart")
    assert unknown.status_code == 422 and unknown.json()["type"] == "RequestValidationError"
    assert ops.get("/deployments/lab/rollout").json()["state"] == "rolling-out"


@pytest.mark.parametrize(("body", "status"), [
    ({"reason": "x" * 1024}, 200),
    ({"reason": "x" * 1025}, 422),
    ({"reason": "why", "actor": "someone-else"}, 422),  # extra keys are refused: the actor is the token's name
    ({"reason": "a\x00b"}, 422),
    ({"reason": 5}, 422),
    ({}, 200),
    (None, 200),
])
def test_an_action_body_is_bounded(hub: RolloutHub, ops: httpx.Client, body: Any, status: int) -> None:
    assert hub.create("lab", WAVES).status_code == 201
    answer = ops.post("/deployments/lab/rollout/pause", json=body)
    assert answer.status_code == status, answer.text
    if status == 200:
        assert ops.get("/deployments/lab/events").json()[-1]["actor"] == "ops"


@pytest.mark.parametrize(("policy", "named"), [
    ({"waves": "1,x"}, "rollout.waves"),
    ({"waves": "1,10%", "advancePercent": 150}, "rollout.advancePercent"),
    ({"waves": "1,10%", "wave": "1"}, "rollout.wave"),
    ({"waves": "1,10%", "soak": "5 minutes"}, "rollout.soak"),
    ({"waves": "1,10%", "abortOn": ["failed", "crashed"]}, "rollout.abortOn"),
    ({"waves": "1,10%", "approveEachWave": "yes"}, "rollout.approveEachWave"),
    ({"exponential": [1, 0.5]}, "rollout.exponential"),
    ({"waves": "1,10%", "exponential": [1, 2]}, "not both"),
])
def test_a_bad_policy_is_400_naming_the_key(hub: RolloutHub, policy: dict[str, Any], named: str) -> None:
    refused = hub.create("lab", policy)
    assert refused.status_code == 400, refused.text
    assert named in refused.json()["detail"]
    with hub.client() as ops:
        assert ops.get("/deployments/lab").status_code == 404  # nothing was created
    assert hub.received("lab") == set()


@pytest.mark.parametrize("number", ["Infinity", "NaN", "1e400"])
@pytest.mark.parametrize("key", ["soak", "abortMin", "advancePercent"])
def test_a_policy_number_that_is_not_finite_is_400(hub: RolloutHub, ops: httpx.Client, key: str,
                                                  number: str) -> None:
    body = ('{"name": "lab", "targetCondition": "*", "modules": [{"name": "digits", "version": 1}], '
            f'"rollout": {{"waves": "1,10%", "{key}": {number}}}}}')
    refused = ops.post("/deployments", content=body, headers={"Content-Type": "application/json"})
    assert refused.status_code == 400, refused.text
    assert f"rollout.{key}" in refused.json()["detail"]


def test_a_policy_that_is_not_a_mapping_is_422(hub: RolloutHub) -> None:
    assert hub.create("lab", ["1,10%"]).status_code == 422  # type: ignore[arg-type]
