"""The dashboard in a real browser: Debian's headless Chromium driven by Playwright, against a real hub.

The hub is ``HubServer`` (SQLite, MQTT bridge, REST and ``/ui``) on a real Mosquitto, with
one real ``edgeship agent run`` (process runtime) serving the demo's digits module; a few
more devices exist without an agent (a rollout's later waves, a device whose tags hold
markup). Chromium is ``/usr/bin/chromium`` with ``--no-sandbox`` (never ``playwright
install``); a machine without it fails these tests in CI (``parts.need``).

The tests run in file order on one fleet (one worker, ``docs/testing.md``). With
``EDGESHIP_UI_SCREENSHOTS=DIR`` they also save the screenshots of ``docs/dashboard.md``
(``benchmarks/dashboard/screenshots.py`` sets it).
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from mosquitto import Mosquitto
from parts import free_port, need, port_block

from edgeship.demo.model import sample_request
from edgeship.demo.release import ReleaseSide
from edgeship.hub.api import create_token
from edgeship.hub.server import HubConfig, HubServer
from edgeship.hub.services import ModuleRefSpec

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
AGENT = "edge-1"
RING = ("ring-1", "ring-2", "ring-3", "ring-4")  # devices without an agent: a rollout's waves stay open
EVIL = "<script>alert('tag')</script>"
INSTALL = 240.0  # seconds for the agent's first install (it builds a venv from the module's wheelhouse)
LIVE = 30.0  # seconds for a page region to follow the database
SHOTS = os.environ.get("EDGESHIP_UI_SCREENSHOTS")


@dataclass
class World:
    hub: HubServer
    operator: str
    reader: str
    agent: subprocess.Popen[bytes]
    log: Path
    dialogs: list[str] = field(default_factory=list)

    @property
    def ui(self) -> str:
        return self.hub.api_url + "/ui"

    def module(self) -> dict[str, Any]:
        view = self.hub.services.fleet.get_device(AGENT)
        state = view.reported.state if view.reported else {}
        entry = (state.get("modules") or {}).get("digits")
        return entry if isinstance(entry, dict) else {}

    def wait(self, what: str, check: Any, timeout: float = INSTALL) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.agent.poll() is None, f"the agent exited: {self.log.read_text()[-3000:]}"
            if check():
                return
            time.sleep(0.3)
        raise AssertionError(f"timed out waiting for {what}; agent log: {self.log.read_text()[-2000:]}")


def _quiet() -> Any:
    from rich.console import Console

    return Console(quiet=True)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("dashboard")
    broker = Mosquitto(root / "mosquitto").start()
    release_side = ReleaseSide(root / "release", console=_quiet())
    release_side.release(1)
    hub = HubServer(HubConfig(workspace=release_side.workspace.root, trust_root=release_side.trust_root_file,
                              broker_url=broker.url, port=0)).start()
    agent: subprocess.Popen[bytes] | None = None
    try:
        hub.services.catalog.upload_from_workspace(release_side.workspace.root, "digits", 1)
        hub.services.fleet.create_device(AGENT, {"site": "lab", "arch": "amd64"})
        for device in RING:
            hub.services.fleet.create_device(device, {"site": "field", "ring": "canary"})
        hub.services.fleet.create_device("odd-tags", {"site": "field", "note": EVIL})
        operator = create_token(hub.store, "ops")
        reader = create_token(hub.store, "viewer", role="read-only")
        folder = root / "agent"
        folder.mkdir()
        ports = port_block(40)
        config = folder / "agent.toml"
        config.write_text(
            f'device_id = "{AGENT}"\nhub_url = "{hub.api_url}"\n'
            f"trust_root = {json.dumps(str(release_side.trust_root_file))}\n"
            f"data_dir = {json.dumps(str(folder / 'data'))}\n"
            f'runtime = "process"\nreconcile_interval = 1\ntelemetry_interval = 1\n'
            f"port_range = [{ports}, {ports + 39}]\n"
            f'\n[broker]\nurl = "{broker.url}"\n'
        )
        log = folder / "agent.log"
        with log.open("wb") as out:
            agent = subprocess.Popen([sys.executable, "-m", "edgeship", "agent", "run", "--config", str(config),
                                      "--stop-modules-on-exit"], stdout=out, stderr=subprocess.STDOUT)
        yield World(hub, operator, reader, agent, log)
    finally:
        if agent is not None and agent.poll() is None:
            agent.send_signal(signal.SIGTERM)
            try:
                agent.wait(30)
            except subprocess.TimeoutExpired:
                agent.kill()
        hub.stop()
        broker.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    need(Path(CHROMIUM).is_file(), f"Chromium at {CHROMIUM} (Debian package 'chromium')")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        need(False, "Playwright (pip install -e '.[dev]')")
        raise
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


def _signed_in(browser: Any, world: World, token: str) -> Any:
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    page = context.new_page()
    page.on("dialog", lambda dialog: (world.dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(world.ui + "/")
    assert page.url.endswith("/ui/signin")
    page.get_by_label("Operator token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/ui/fleet")
    return page


@pytest.fixture(scope="module")
def ops(browser: Any, world: World) -> Iterator[Any]:
    page = _signed_in(browser, world, world.operator)
    yield page
    page.context.close()


def _shot(page: Any, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=True)


def _count(page: Any, name: str) -> str:
    return str(page.locator(f'[data-count="{name}"]').first.inner_text())


def test_sign_in_shows_the_fleet_and_a_filter_selects_by_target_condition(ops: Any, world: World) -> None:
    assert ops.locator("header").get_by_text("ops").is_visible()
    assert _count(ops, "devices") == str(2 + len(RING))
    ops.get_by_label("Target condition").fill("tags.ring = 'canary' AND tags.site IN ('field')")
    ops.get_by_role("button", name="Filter").click()
    ops.wait_for_load_state()
    assert _count(ops, "devices") == str(len(RING))
    assert ops.locator("#devices tbody tr").count() == len(RING)
    assert ops.get_by_role("link", name="ring-1").is_visible()
    assert ops.get_by_role("link", name=AGENT).count() == 0

    ops.get_by_label("Target condition").fill("tags.ring = = 'canary'")
    ops.get_by_label("Target condition").press("Enter")
    ops.wait_for_load_state()
    error = ops.get_by_role("alert")
    assert "column" in error.inner_text() and "target condition" in error.inner_text()
    assert ops.get_by_label("Target condition").input_value() == "tags.ring = = 'canary'"
    assert ops.get_by_label("Target condition").get_attribute("aria-invalid") == "true"


CONTRAST = """(selector) => {
    const rgb = (c) => c.match(/[0-9.]+/g).slice(0, 3).map(Number);
    const lum = (c) => { const [r, g, b] = rgb(c).map(v => { v /= 255;
        return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); });
        return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
    const background = (el) => { for (; el; el = el.parentElement) { const c = getComputedStyle(el).backgroundColor;
        if (c !== 'rgba(0, 0, 0, 0)' && c !== 'transparent') return c; } return 'rgb(255, 255, 255)'; };
    return [...document.querySelectorAll(selector)].filter(el => el.offsetParent !== null).map(el => {
        const a = lum(getComputedStyle(el).color), b = lum(background(el));
        return [el.tagName + '.' + el.className, (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05)]; });
}"""


def test_sign_in_and_the_pages_work_from_the_keyboard_with_readable_contrast(browser: Any, world: World) -> None:
    page = browser.new_page()
    try:
        page.goto(world.ui + "/signin")
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.className") == "skip"
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.id") == "token"
        page.keyboard.type(world.reader)
        page.keyboard.press("Enter")
        page.wait_for_url("**/ui/fleet")
        page.keyboard.press("Tab")
        page.keyboard.press("Enter")  # the skip link
        assert page.evaluate("document.activeElement.id") == "main"
        for selector in ("a", "td", "th", "label", "small", "button", ".muted", ".ok", ".role", ".tag", "h1"):
            for element, ratio in page.evaluate(CONTRAST, selector):
                assert ratio >= 4.5, f"{element}: contrast {ratio:.2f} below 4.5:1 (WCAG AA)"
        unlabelled = page.evaluate("""[...document.querySelectorAll('input:not([type=hidden]), select')]
            .filter(el => !el.labels || el.labels.length === 0).map(el => el.name)""")
        assert unlabelled == []
    finally:
        page.context.close()


def test_a_device_whose_tags_hold_markup_shows_them_as_text(ops: Any, world: World) -> None:
    ops.goto(world.ui + "/fleet")
    assert ops.get_by_text(f"note={EVIL}").is_visible()
    assert ops.locator("#devices script").count() == 0
    ops.get_by_role("link", name="odd-tags").click()
    ops.wait_for_url("**/ui/devices/odd-tags")
    assert ops.get_by_text(f"note={EVIL}").is_visible()
    assert world.dialogs == []


def test_a_deployments_counts_change_live_as_the_agent_applies_it(ops: Any, world: World) -> None:
    world.hub.services.deployments.create_deployment("lab", "tags.site = 'lab'", [ModuleRefSpec("digits", 1)],
                                                     priority=10)
    ops.goto(world.ui + "/deployments/lab")
    ops.evaluate("window.__notReloaded = true")
    assert _count(ops, "targeted") == "1"
    assert _count(ops, "reportingSuccess") == "0", "the agent applied it before the page opened; nothing to watch"
    ops.wait_for_function("document.querySelector('[data-count=\"reportingSuccess\"]').textContent.trim() === '1'",
                          timeout=INSTALL * 1000)
    assert ops.evaluate("window.__notReloaded === true"), "the page reloaded instead of updating its region"
    assert _count(ops, "applied") == "1" and _count(ops, "reportingFailure") == "0"
    _shot(ops, "deployment")


def test_a_device_page_charts_its_telemetry_and_reads_its_logs(ops: Any, world: World) -> None:
    world.wait("digits to run", lambda: world.module().get("status") == "running" and world.module().get("port"))
    request, _ = sample_request()
    body = json.dumps(request).encode()

    def traffic() -> None:
        urllib.request.urlopen(urllib.request.Request(
            f"http://127.0.0.1:{world.module()['port']}/score", data=body,
            headers={"Content-Type": "application/json"}), timeout=30).read()

    def charted() -> bool:
        traffic()
        batches = world.hub.services.fleet.recent_telemetry(AGENT, 100)
        requests = [m.get("requests", 0) for b in batches for s in b.batch.get("samples", [])
                    for m in (s.get("modules") or {}).values()]
        return sum(1 for r in requests if r) >= 2

    world.wait("two telemetry samples with requests", charted, timeout=LIVE * 2)
    ops.goto(world.ui + f"/devices/{AGENT}")
    for chart in ("rps", "latency", "cpu", "memory"):
        figure = ops.locator(f"#chart-{chart}")
        assert int(figure.get_attribute("data-points") or 0) > 0, chart
        assert figure.locator("canvas").count() == 1, f"uPlot drew no canvas for {chart}"
    assert ops.locator("#chart-rps .u-legend").inner_text().count("digits v1") == 1
    _shot(ops, "device")
    ops.get_by_role("button", name="Recent logs").click()
    logs = ops.locator("#logs pre.logs")
    logs.wait_for(timeout=LIVE * 1000)
    assert logs.inner_text().strip(), "the logs method answered no text"


def test_a_rollout_is_paused_and_resumed_from_its_page(ops: Any, world: World) -> None:
    from edgeship.hub.rollouts import RolloutPolicy

    world.hub.services.deployments.create_deployment(
        "canary", "tags.ring = 'canary'", [ModuleRefSpec("digits", 1)], priority=20,
        rollout=RolloutPolicy.from_dict({"waves": "1,2,4", "soak": "10m"}), actor="ops")
    ops.goto(world.ui + "/deployments/canary")
    assert ops.locator("#rollout-state").inner_text() == "rolling-out"
    ops.get_by_role("button", name="Pause").click()
    ops.wait_for_url("**/ui/deployments/canary")
    assert ops.locator("#rollout-state").inner_text() == "paused"
    assert world.hub.services.rollouts.show("canary").state == "paused"
    _shot(ops, "rollout")
    ops.get_by_role("button", name="Resume").click()
    ops.wait_for_url("**/ui/deployments/canary")
    assert ops.locator("#rollout-state").inner_text() == "rolling-out"
    events = world.hub.services.rollouts.events("canary")
    assert [(e.action, e.actor) for e in events][-2:] == [("paused", "ops"), ("resumed", "ops")]


def test_the_read_only_role_sees_but_cannot_act_in_the_page_or_over_rest(browser: Any, world: World) -> None:
    page = _signed_in(browser, world, world.reader)
    try:
        page.goto(world.ui + "/deployments/canary")
        pause = page.get_by_role("button", name="Pause")
        assert pause.is_disabled()
        assert page.get_by_text("you can look but not act").is_visible()
        # a hand-made post from the page itself, with the session's CSRF token: the hub refuses it anyway
        page.evaluate("""() => {
            const pause = [...document.querySelectorAll('button')].find(b => b.textContent === 'Pause');
            pause.disabled = false; pause.click(); }""")
        page.wait_for_load_state()
        assert "read-only" in page.get_by_role("alert").inner_text()
    finally:
        page.context.close()
    with httpx.Client(base_url=world.hub.api_url, headers={"Authorization": f"Bearer {world.reader}"}) as rest:
        assert rest.post("/deployments/canary/rollout/pause").status_code == 403
    assert world.hub.services.rollouts.show("canary").state == "rolling-out"


class _Foreign(http.server.BaseHTTPRequestHandler):
    """Another site: a page whose form posts to the dashboard without its CSRF token."""

    target = ""

    def do_GET(self) -> None:
        body = (f'<form id="f" method="post" action="{self.target}"><input name="reason" value="x"></form>'
                "<script>document.getElementById('f').submit()</script>").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: Any) -> None:
        pass


def test_a_cross_site_post_without_the_csrf_token_is_refused(ops: Any, world: World) -> None:
    _Foreign.target = world.ui + "/deployments/canary/rollout/abort"
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _Foreign)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with ops.expect_response(lambda r: r.url == _Foreign.target) as answer:
            ops.goto(f"http://localhost:{server.server_address[1]}/")
        assert answer.value.status in (401, 403)
    finally:
        server.shutdown()
        server.server_close()
    assert world.hub.services.rollouts.show("canary").state == "rolling-out"
    ops.goto(world.ui + "/fleet")
    _shot(ops, "fleet")
    ops.goto(world.ui + "/modules")
    registered = ops.locator("#registered-models tbody tr").first  # the release's model, from the hub's workspace
    assert registered.locator("th").inner_text() == "digits:1"
    assert "digits:1" in registered.locator("td").nth(3).inner_text(), "module digits:1 pins this model's digest"
    _shot(ops, "modules")
