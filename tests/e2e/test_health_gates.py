"""Health gates on real agents: the model's own telemetry stops a bad release, and silence is never health.

One fleet for the module (``rollout_fleet.py``): three ``edgeship agent run`` processes
with the process runtime on a real Mosquitto, a telemetry sample every second, the hub
in this process. The releases are the demo's digits model with a changed entry script.
The fleet runs ``base``, whose ``run()`` takes :data:`PACE` (a model that takes 120 ms):
on a busy 2-core machine a few-millisecond model's p99 moves 2x and more from one
minute to the next (the demo's script, repackaged, measured 2.3x slower than the
version it replaced), while 120 ms and its jitter stay inside one bucket of the scoring
server's latency histogram, so "as fast" measures as fast. The others: ``errors``
(``run()`` raises: the server answers 500), ``slow`` (10x ``PACE``), ``again`` (``base``
as it is, a version no device ran) and ``plain`` (the demo's script unchanged).

:class:`Traffic` POSTs the demo's sample request to every device's scoring port, from
before the first release, so each device has the version a release replaces measured
in the history (the p99 gate's baseline). Each test rolls out at a higher priority
than the ones before it; an aborted rollout gives the fleet back to what ran before it.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timezone

import pytest
from rollout_fleet import GROUP, MODULE, WAIT, RolloutFleet, build_fleet, score

from edgeship.demo.model import sample_request
from edgeship.hub.rollouts import RolloutPolicy, plan_waves
from edgeship.hub.rollouts.report import RolloutView
from edgeship.hub.services import ModuleRefSpec
from edgeship.hub.store import TelemetryHistory
from edgeship.hub.store.history import Aggregate

pytestmark = [pytest.mark.slow, pytest.mark.timeout(480)]

DEVICES = ("gate-1", "gate-2", "gate-3")
RATE = 20.0  # requests per second to each device at most (one at a time: ``base`` answers ~8 a second)
PACE = 0.12  # seconds base's run() takes: its requests fall in the histogram's 100-250 ms bucket, jitter and all
LONG_SOAK = "60s"  # longer than a gate needs to trip: an abort inside it happened during the soak
SHORT_SOAK = "6s"  # a healthy wave: several telemetry samples (one a second) over the gates' minimum
BASELINE = 60  # requests of base each device has in the history before the first release: over the p99 minimum
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
ERROR_GATE = "error_rate <= 1% min 10"
P99_GATE = "p99_ratio <= 1.5 min 20"  # 20 requests: a few samples, so a busy first second does not decide alone


def _answers_500(text: str) -> str:
    assert "def run(data):\n" in text, "the demo's score.py changed shape; update the release that answers 500"
    return text.replace("def run(data):\n", "def run(data):\n    raise RuntimeError('the model store is gone')\n", 1)


def _takes(seconds: float) -> Callable[[str], str]:
    def edit(text: str) -> str:
        assert "def run(data):\n" in text and "import os\n" in text, "the demo's score.py changed shape"
        return text.replace("import os\n", "import os\nimport time\n", 1).replace(
            "def run(data):\n", f"def run(data):\n    time.sleep({seconds})\n", 1)

    return edit


class Traffic:
    """A thread per device POSTing the demo's sample request to its scoring port, ``rate`` times a second.

    The port is read from the device's report, so traffic follows the module from one
    version to the next; ``statuses[(device, version)]`` counts the answers (``0``: no
    connection, as while a version is swapped). A device in ``quiet`` gets nothing.
    """

    def __init__(self, fleet: RolloutFleet, rate: float = RATE) -> None:
        self.fleet, self.period = fleet, 1.0 / rate
        self.body = json.dumps(sample_request()[0]).encode()
        self.statuses: dict[tuple[str, int | None], Counter[int]] = {}
        self.seconds: dict[tuple[str, int | None], list[float]] = {}  # how long each 200 took, as the caller sees
        self.quiet: set[str] = set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(d,), name=f"traffic-{d}", daemon=True)
                         for d in fleet.devices]  # fmt: skip
        for thread in self._threads:
            thread.start()

    def _target(self, device: str) -> tuple[int, int | None] | None:
        try:
            module = self.fleet.module(device)
        except Exception:  # the hub between two reads (or stopped): no target until the next look
            return None
        if not module or module.get("status") != "running" or not module.get("port"):
            return None
        return int(module["port"]), module.get("version")

    def _run(self, device: str) -> None:
        target, looked = None, 0.0
        upcoming = time.monotonic()
        while not self._stop.is_set():
            upcoming += self.period
            now = time.monotonic()
            if now - looked > 0.5:
                target, looked = self._target(device), now
            if target is not None and device not in self.quiet:
                began = time.monotonic()
                status = self._post(target[0])
                took = time.monotonic() - began
                with self._lock:
                    self.statuses.setdefault((device, target[1]), Counter())[status] += 1
                    if status == 200:
                        self.seconds.setdefault((device, target[1]), []).append(took)
            self._stop.wait(max(upcoming - time.monotonic(), 0.0))
            upcoming = max(upcoming, time.monotonic() - 1.0)  # after a stall, do not burst to catch up

    def _post(self, port: int) -> int:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/score", data=self.body,
                                         headers={"Content-Type": "application/json"})  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=10) as reply:
                reply.read()
                return int(reply.status)
        except urllib.error.HTTPError as exc:
            exc.read()
            return int(exc.code)
        except OSError:
            return 0

    def answers(self, device: str, version: int) -> Counter[int]:
        with self._lock:
            return Counter(self.statuses.get((device, version), Counter()))

    def median(self, device: str, version: int) -> float:
        with self._lock:
            taken = sorted(self.seconds.get((device, version), []))
        assert taken, f"no request of {device} was answered 200 by version {version}"
        return taken[len(taken) // 2]

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RolloutFleet]:
    variants = {"base": _takes(PACE), "errors": _answers_500, "slow": _takes(10 * PACE), "again": _takes(PACE),
                "plain": lambda text: text}
    made = build_fleet(tmp_path_factory.mktemp("gates"), devices=DEVICES, telemetry_interval=1.0, variants=variants,
                       base="base")  # fmt: skip
    try:
        yield made
    finally:
        made.close()


@pytest.fixture(scope="module")
def traffic(fleet: RolloutFleet) -> Iterator[Traffic]:
    """Traffic to every device, once each has ``BASELINE`` requests of base in the history."""
    generated = Traffic(fleet)
    try:
        fleet.wait(f"{BASELINE} requests of base in every device's history",
                   lambda: all(_requests(fleet, fleet.versions["base"], d) >= BASELINE for d in DEVICES))  # fmt: skip
        yield generated
    finally:
        generated.close()


def _history(fleet: RolloutFleet, version: int) -> dict[str, Aggregate]:
    """device -> everything the hub's telemetry history holds of ``version`` there."""
    assert fleet.hub is not None
    return TelemetryHistory(fleet.hub.store).window(MODULE, version, DEVICES, EPOCH)


def _requests(fleet: RolloutFleet, version: int, device: str) -> int:
    found = _history(fleet, version).get(device)
    return found.requests if found else 0


def _p99s(fleet: RolloutFleet, version: int) -> dict[str, list[tuple[int, float]]]:
    """device -> (requests, p99 ms) of its recent samples of ``version``, oldest first (for failure messages)."""
    found: dict[str, list[tuple[int, float]]] = {}
    for device in DEVICES:
        for record in reversed(fleet.services.fleet.recent_telemetry(device, 100)):
            for sample in record.batch.get("samples", []):
                entry = (sample.get("modules") or {}).get(MODULE) or {}
                if entry.get("version") == version and entry.get("requests"):
                    found.setdefault(device, []).append((entry["requests"], entry["latencyMs"]["p99"]))
    return found


def _policy(waves: str, soak: str, *gates: str) -> RolloutPolicy:
    return RolloutPolicy.from_dict({"waves": waves, "soak": soak, "waveTimeout": "10m", "gates": list(gates)})


def _start(fleet: RolloutFleet, name: str, version: int, priority: int, policy: RolloutPolicy) -> str:
    """Create the staged deployment; its wave-1 device."""
    fleet.services.deployments.create_deployment(name, GROUP, [ModuleRefSpec(MODULE, version)], priority,
                                                 rollout=policy, actor="test")  # fmt: skip
    (first,) = [d for d, w in fleet.services.rollouts.members(name).items() if w == 1]
    return first


def _show(fleet: RolloutFleet, name: str) -> RolloutView:
    return fleet.services.rollouts.show(name)


def _until(fleet: RolloutFleet, name: str, state: str, timeout: float = WAIT) -> RolloutView:
    def reached() -> bool:
        view = _show(fleet, name)
        assert view.state in (state, "rolling-out"), f"{name} is {view.state}, not {state}: {view.reason}"
        assert state == "completed" or view.wave == 1, f"{name} went on to wave {view.wave}: {view}"
        return view.state == state

    try:
        fleet.wait(f"{name} to be {state}", reached, timeout=timeout)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the rollout: {_show(fleet, name)}") from exc
    return _show(fleet, name)


def _unhealthy(fleet: RolloutFleet, name: str) -> dict[str, str]:
    """device -> the gate it breached, from the abort event."""
    return dict(fleet.services.rollouts.events(name)[-1].detail.get("unhealthy") or {})


def _back_on_base(fleet: RolloutFleet, device: str, answers: list[int]) -> None:
    base = fleet.versions["base"]
    fleet.wait(f"{device} to run base again", lambda: fleet.settled(device, base))
    assert score((fleet.module(device) or {})["port"]) == answers, f"{device} does not answer as base did"
    assert all(fleet.settled(d, base) for d in DEVICES), fleet.versions_now()


def test_a_release_answering_500_is_aborted_by_the_error_rate_gate_during_the_soak_of_wave_1(
    fleet: RolloutFleet, traffic: Traffic,
) -> None:
    bad, before = fleet.versions["errors"], {d: score((fleet.module(d) or {})["port"]) for d in DEVICES}
    since, started = fleet.docs.mark(), time.monotonic()
    first = _start(fleet, "answers-500", bad, 10, _policy("1,100%", LONG_SOAK, ERROR_GATE))
    view = _until(fleet, "answers-500", "aborted")
    took = time.monotonic() - started
    assert took < 60, f"aborted {took:.0f} s after the start: not during wave 1's {LONG_SOAK} soak"
    assert (view.wave, view.tripped, view.waves[0].unhealthy, view.waves[0].succeeded) == (1, (first,), 1, 0), view
    assert _unhealthy(fleet, "answers-500")[first].startswith("digits: error_rate 100% ("), view
    answered = traffic.answers(first, bad)
    assert answered[500] >= 10 and not [s for s in answered if 400 <= s < 500 or s == 200], (
        f"the release answered {dict(answered)}: every request it served should be a 500")
    measured = _history(fleet, bad)[first]
    assert measured.requests >= 10 and (measured.server_errors, measured.client_errors) == (measured.requests, 0), (
        f"the 500s were not counted as server errors in the telemetry history: {measured}")
    assert fleet.docs.offered(bad, since) == {first}, "the release reached devices outside wave 1"
    _back_on_base(fleet, first, before[first])


def test_the_p99_gate_aborts_a_release_10x_slower_and_passes_one_as_fast(
    fleet: RolloutFleet, traffic: Traffic,
) -> None:
    slow, again = fleet.versions["slow"], fleet.versions["again"]
    before = {d: score((fleet.module(d) or {})["port"]) for d in DEVICES}
    since = fleet.docs.mark()
    first = _start(fleet, "slow", slow, 20, _policy("1,100%", LONG_SOAK, P99_GATE))
    view = _until(fleet, "slow", "aborted")
    assert (view.tripped, view.waves[0].unhealthy) == ((first,), 1), view
    reason = _unhealthy(fleet, "slow")[first]
    assert reason.startswith("digits: p99_ratio ") and float(reason.split()[2]) >= 5, reason
    slower = traffic.median(first, slow) / traffic.median(first, fleet.versions["base"])
    assert slower >= 8, f"the slow release answers only {slower:.1f}x slower than base (median, as the caller sees)"
    assert fleet.docs.offered(slow, since) == {first}
    _back_on_base(fleet, first, before[first])

    _start(fleet, "as-fast", again, 30, _policy("1,100%", SHORT_SOAK, P99_GATE))
    try:
        view = _until(fleet, "as-fast", "completed", timeout=2 * WAIT)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; {_unhealthy(fleet, 'as-fast')}; p99 per sample: {_p99s(fleet, again)}") from exc
    assert [(w.succeeded, w.unhealthy, w.no_data) for w in view.waves] == [(1, 0, 0), (2, 0, 0)], view
    fleet.wait("every device to run the release", lambda: all(fleet.settled(d, again) for d in DEVICES))
    assert fleet.hub is not None
    baseline, measured = TelemetryHistory(fleet.hub.store).baseline(MODULE, again, DEVICES), _history(fleet, again)
    ratios = {d: (measured[d].p99_ms or 0) / (baseline[d].p99_ms or 1) for d in DEVICES}
    assert all(0.67 <= r <= 1.5 for r in ratios.values()), f"the same code measured a p99 ratio of {ratios}"


def test_a_device_without_traffic_is_no_data_and_never_counts_as_healthy(
    fleet: RolloutFleet, traffic: Traffic,
) -> None:
    name, release = "silent", fleet.versions["plain"]
    policy = _policy("1,100%", SHORT_SOAK, ERROR_GATE)
    (first,) = plan_waves(policy, name, DEVICES).waves[0]
    traffic.quiet.add(first)
    try:
        since = fleet.docs.mark()
        assert _start(fleet, name, release, 40, policy) == first
        fleet.wait(f"{first} to run the release", lambda: fleet.settled(first, release))
        fleet.wait(f"{name}'s wave 1 to be no-data once soaked", lambda: _show(fleet, name).waves[0].no_data == 1)
        time.sleep(3)  # engine passes go by with the soak long over: the wave must not advance
        view = _show(fleet, name)
        assert (view.state, view.wave) == ("rolling-out", 1), view
        assert (view.waves[0].no_data, view.waves[0].succeeded, view.waves[0].soaking) == (1, 0, 0), view
        assert fleet.docs.offered(release, since) == {first}, "wave 2 went out on a device without data"
        assert not traffic.answers(first, release), "the quiet device was scored"
    finally:
        traffic.quiet.discard(first)
    # the same device with traffic: healthy, and the rollout goes on
    view = _until(fleet, name, "completed", timeout=2 * WAIT)
    assert [(w.succeeded, w.no_data) for w in view.waves] == [(1, 0), (2, 0)], view
