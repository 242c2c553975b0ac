"""The dashboard over real HTTP (uvicorn, httpx): sign-in, the session cookie, CSRF, roles, escaping, filters.

The hub is ``rollout_hub``: the real services over SQLite behind the REST app (which
mounts the dashboard at ``/ui``), six devices tagged ``site=lab`` and module digits:1.
The browser-level tests (Chromium) are in ``test_dashboard_browser.py``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from rest_server import serving
from rollout_hub import RolloutHub, rollout_hub

from edgeship.hub.api import OperatorTokens, create_app
from edgeship.hub.services.hub import utcnow
from edgeship.hub.store import TokenStore
from edgeship.hub.ui.session import COOKIE, csrf_token
from edgeship.registry import Model

STATIC = Path(__file__).resolve().parents[2] / "cloud-stub" / "ui" / "static"


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[RolloutHub]:
    with rollout_hub(tmp_path, devices=6) as served:
        yield served


@contextmanager
def _browser(hub: RolloutHub, token: str | None = None) -> Iterator[httpx.Client]:
    """A client that keeps cookies like a browser, signed in with ``token`` (not signed in: None)."""
    with httpx.Client(base_url=hub.url, timeout=10) as client:
        if token is not None:
            signed = client.post("/ui/signin", data={"token": token})
            assert signed.status_code == 303 and signed.headers["location"] == "/ui/fleet", signed.text
        yield client


def _csrf(page: httpx.Response) -> str:
    found = re.search(r'name="csrf-token" content="([0-9a-f]{64})"', page.text)
    assert found, page.text[:500]
    return found.group(1)


def test_pages_need_a_session_and_sign_in_sets_a_strict_cookie(hub: RolloutHub) -> None:
    with _browser(hub) as client:
        for path in ("/ui/fleet", "/ui/devices/dev-0", "/ui/deployments", "/ui/modules"):
            answer = client.get(path)
            assert answer.status_code == 303 and answer.headers["location"] == "/ui/signin", path
        live = client.get("/ui/deployments", headers={"HX-Request": "true"})
        assert live.status_code == 401 and live.headers["HX-Redirect"] == "/ui/signin"
        form = client.get("/ui/signin")
        assert form.status_code == 200
        assert re.search(r'<label for="token">Operator token</label>\s*<input id="token" name="token" type="password"',
                         form.text)

        wrong = client.post("/ui/signin", data={"token": "esh_not-a-token"})
        assert wrong.status_code == 401 and "not valid on this hub" in wrong.text and COOKIE not in client.cookies
        empty = client.post("/ui/signin", data={"token": "  "})
        assert empty.status_code == 401 and "Type an operator token" in empty.text

        planted = client.post("/ui/signin", data={"token": hub.operator}, headers={"Origin": "http://evil.example"})
        assert planted.status_code == 403 and COOKIE not in client.cookies  # no signing in from another site
        signed = client.post("/ui/signin", data={"token": hub.operator})
        assert signed.status_code == 303
        cookie = signed.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=lax" in cookie and "path=/ui" in cookie
        assert "secure" not in cookie  # plain HTTP here; over TLS the cookie is Secure (request.url.scheme)
        fleet = client.get("/ui/fleet")
        assert fleet.status_code == 200 and "ops" in fleet.text and 'data-count="devices">6<' in fleet.text


def test_a_revoked_token_ends_the_session_at_its_next_request(hub: RolloutHub) -> None:
    with _browser(hub, hub.reader) as client:
        assert client.get("/ui/fleet").status_code == 200
        TokenStore(hub.services.store).revoke("dashboard", utcnow())
        assert client.get("/ui/fleet").headers["location"] == "/ui/signin"


def test_the_fleet_filter_takes_a_target_condition_and_shows_its_error_inline(hub: RolloutHub) -> None:
    hub.services.fleet.update_tags("dev-1", {"site": "field", "ring": "canary"})
    with _browser(hub, hub.operator) as client:
        page = client.get("/ui/fleet", params={"condition": "tags.ring = 'canary'"})
        assert page.status_code == 200
        assert 'data-count="devices">1<' in page.text and "/ui/devices/dev-1" in page.text
        assert "/ui/devices/dev-0" not in page.text and "of 6" in page.text
        bad = client.get("/ui/fleet", params={"condition": "tags.site = "})
        assert bad.status_code == 400
        assert re.search(r'<p id="filter-error" class="error" role="alert">target condition: .*column \d+', bad.text)
        assert 'aria-invalid="true"' in bad.text and "tags.site = " in bad.text  # the typed text stays in the field
        status = client.get("/ui/fleet", params={"status": "nonsense"})
        assert status.status_code == 400 and "Unknown status filter" in status.text
        pending = client.get("/ui/fleet", params={"status": "pending", "size": 2})
        assert 'data-count="devices">6<' in pending.text and "page 1 of 3" in pending.text
        module = client.get("/ui/fleet", params={"module": "digits:x"})
        assert module.status_code == 400 and "must be a number" in module.text


def test_device_reported_strings_and_tags_are_shown_as_text(hub: RolloutHub) -> None:
    evil = "<script>alert(1)</script>"
    hub.services.fleet.update_tags("dev-2", {"note": evil, "site": "lab"})
    desired = hub.services.fleet.get_device("dev-2").desired
    assert desired is not None
    hub.services.fleet.record_reported("dev-2", {
        "schemaVersion": 1, "lastAppliedSequence": desired.sequence,
        "status": {"code": 500, "description": '"><img src=x onerror=alert(2)>'},
        "modules": {"digits": {"version": 1, "status": "failed", "lastError": "<b>boom</b>"}},
    })
    with _browser(hub, hub.operator) as client:
        for path in ("/ui/fleet", "/ui/devices/dev-2"):
            page = client.get(path)
            assert page.status_code == 200
            assert "<script>alert" not in page.text and "<img src=x" not in page.text and "<b>boom" not in page.text
            assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
        device = client.get("/ui/devices/dev-2").text
        assert "&#34;&gt;&lt;img src=x onerror=alert(2)&gt;" in device and "&lt;b&gt;boom&lt;/b&gt;" in device
        failing = client.get("/ui/fleet", params={"status": "failing"})
        assert 'data-count="devices">1<' in failing.text and 'data-count="failing">1<' in failing.text


def test_a_rollout_action_needs_the_csrf_token_the_same_origin_and_the_operator_role(hub: RolloutHub) -> None:
    assert hub.create("lab", {"waves": "1,3,6"}).status_code == 201
    with _browser(hub, hub.operator) as client:
        page = client.get("/ui/deployments/lab")
        assert page.status_code == 200 and 'id="rollout-state">rolling-out<' in page.text
        csrf = _csrf(page)
        assert csrf == csrf_token(hub.operator)
        missing = client.post("/ui/deployments/lab/rollout/pause")
        assert missing.status_code == 403 and "no valid CSRF token" in missing.text
        wrong = client.post("/ui/deployments/lab/rollout/pause", data={"csrf": csrf_token("esh_other")})
        assert wrong.status_code == 403
        foreign = client.post("/ui/deployments/lab/rollout/pause", data={"csrf": csrf},
                              headers={"Origin": "https://evil.example"})
        assert foreign.status_code == 403 and "evil.example" in foreign.text
        opaque = client.post("/ui/deployments/lab/rollout/pause", data={"csrf": csrf}, headers={"Origin": "null"})
        assert opaque.status_code == 403 and "unknown origin" in opaque.text
        assert hub.services.rollouts.show("lab").state == "rolling-out"

        paused = client.post("/ui/deployments/lab/rollout/pause", data={"csrf": csrf},
                             headers={"Origin": hub.url})
        assert paused.status_code == 303 and paused.headers["location"] == "/ui/deployments/lab"
        assert hub.services.rollouts.show("lab").state == "paused"
        assert hub.services.rollouts.events("lab")[-1].actor == "ops"  # the same event the REST action writes
        again = client.post("/ui/deployments/lab/rollout/pause", data={"csrf": csrf})
        assert again.status_code == 409 and "paused" in again.text
        by_header = client.post("/ui/deployments/lab/rollout/resume", headers={"X-CSRF-Token": csrf})
        assert by_header.status_code == 303 and hub.services.rollouts.show("lab").state == "rolling-out"

    with _browser(hub, hub.reader) as reader:
        page = reader.get("/ui/deployments/lab")
        assert page.status_code == 200 and "you can look but not act" in page.text
        assert re.search(r'<button type="submit" class="" disabled aria-disabled="true"', page.text)
        refused = reader.post("/ui/deployments/lab/rollout/pause", data={"csrf": _csrf(page)})
        assert refused.status_code == 403 and "read-only" in refused.text
    with hub.client(hub.reader) as rest:  # the same token over REST
        assert rest.get("/deployments/lab/rollout").status_code == 200
        assert rest.post("/deployments/lab/rollout/pause").status_code == 403
    assert hub.services.rollouts.show("lab").state == "rolling-out"


def test_sign_out_needs_the_csrf_token_and_clears_the_cookie(hub: RolloutHub) -> None:
    with _browser(hub, hub.operator) as client:
        csrf = _csrf(client.get("/ui/fleet"))
        assert client.post("/ui/signout").status_code == 403
        out = client.post("/ui/signout", data={"csrf": csrf})
        assert out.status_code == 303 and f'{COOKIE}=""' in out.headers["set-cookie"]
        assert client.get("/ui/fleet").status_code == 303


def test_a_second_hub_process_on_the_same_database_serves_the_session_and_sees_changes(hub: RolloutHub,
                                                                                     tmp_path: Path) -> None:
    """Two apps over one database (as two hub processes): nothing of a session or a page lives in one's memory."""
    other = hub.world.services(f"sqlite:///{hub.world.root / 'hub.db'}")
    try:
        with serving(create_app(other, OperatorTokens(other.store))) as second, _browser(hub, hub.operator) as first, \
                httpx.Client(base_url=second, cookies={COOKIE: first.cookies[COOKIE]}, timeout=10) as client:
            assert hub.create("lab", {"waves": "1,3,6"}).status_code == 201  # made through the first
            live = client.get("/ui/deployments/lab/live", headers={"HX-Request": "true"})
            assert live.status_code == 200 and 'id="rollout-state">rolling-out<' in live.text
            assert 'id="deployment-live"' in live.text and "<html" not in live.text
            acted = client.post("/ui/deployments/lab/rollout/pause", data={"csrf": csrf_token(hub.operator)})
            assert acted.status_code == 303
            assert 'id="rollout-state">paused<' in first.get("/ui/deployments/lab").text
    finally:
        other.store.close()


def test_models_and_modules_show_the_signature_and_size(hub: RolloutHub) -> None:
    with _browser(hub, hub.reader) as client:
        page = client.get("/ui/modules")
        assert page.status_code == 200 and "digits:1" in page.text
        assert re.search(r'<span class="ok">met \(1 of 1\)</span>', page.text)
        assert hub.world.release.keyid[:12] in page.text


def test_the_models_page_lists_the_workspace_registry_and_which_modules_pin_each_model(hub: RolloutHub,
                                                                                       tmp_path: Path) -> None:
    (tmp_path / "m.onnx").write_bytes(b"weights" * 100)
    Model.register(hub.workspace, tmp_path / "m.onnx", "digits", tags={"note": "<i>x</i>"}, model_framework="onnx")
    Model.register(hub.workspace, tmp_path / "m.onnx", "other")
    with serving(create_app(hub.services, OperatorTokens(hub.services.store), registry=hub.workspace)) as url, \
            httpx.Client(base_url=url, timeout=10) as client:
        assert client.post("/ui/signin", data={"token": hub.reader}).status_code == 303
        page = client.get("/ui/modules").text
    table = page[page.index('id="registered-models"'):]
    assert "digits:1" in table and "other:1" in table and "onnx" in table
    assert "note=&lt;i&gt;x&lt;/i&gt;" in table  # tags are text here too
    with _browser(hub, hub.reader) as client:  # an app given no registry shows none
        assert 'id="registered-models"' not in client.get("/ui/modules").text


def test_every_asset_is_served_from_the_package(hub: RolloutHub) -> None:
    with _browser(hub, hub.operator) as client:
        page = client.get("/ui/devices/dev-0").text
        assets = re.findall(r'(?:src|href)="(/ui/static/[^"]+)"', page)
        assert {"/ui/static/vendor/htmx.min.js", "/ui/static/vendor/uPlot.iife.min.js", "/ui/static/app.js",
                "/ui/static/app.css"} <= set(assets)
        assert not re.search(r'(?:src|href)="(?:https?:)?//', page)  # nothing from another host
        for asset in assets:
            served = client.get(asset)
            assert served.status_code == 200 and served.content == (STATIC / asset.removeprefix("/ui/static/"))\
                .read_bytes()
    for licence in ("uPlot.LICENSE", "htmx.LICENSE", "README.md"):
        assert (STATIC / "vendor" / licence).is_file()


def test_logs_come_from_the_devices_logs_method_as_text_and_a_silent_device_is_said_so(hub: RolloutHub) -> None:
    with _browser(hub, hub.reader) as client:  # read-only may read logs, as over REST
        offline = client.get("/ui/devices/dev-0/logs", params={"module": "digits"}, headers={"HX-Request": "true"})
        assert offline.status_code == 200 and 'role="alert">No logs (no answer):' in offline.text
        calls: list[tuple[str, str, dict[str, object]]] = []

        def answer(device: str, method: str, args: dict[str, object], timeout: float) -> dict[str, object]:
            calls.append((device, method, dict(args)))
            return {"status": 200, "result": {"module": "digits", "logs": "ready\n<script>alert(3)</script>\n"}}

        hub.world.link.answer = answer  # type: ignore[assignment]
        logs = client.get("/ui/devices/dev-0/logs", params={"module": "digits", "tail": 20})
        assert calls == [("dev-0", "logs", {"module": "digits", "tail": 20})]
        assert "&lt;script&gt;alert(3)&lt;/script&gt;" in logs.text and "<script>alert(3)" not in logs.text
        assert client.get("/ui/devices/dev-0/logs", params={"module": "digits", "tail": 0}).status_code == 422
