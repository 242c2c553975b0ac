"""Profiling a real module: an entry script served by the scoring server on the process runtime, under load.

The Docker runtime (cpu limits) is tested in test_profile_docker.py, in the Docker group.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from parts import free_port

from edgeship.errors import InputError
from edgeship.profiling import PROFILE_PROPERTY, ProfilingError, profile_model
from edgeship.profiling.recommend import GIB, MEMORY_HEADROOM
from edgeship.registry import Model
from edgeship.workspace import Workspace

MODULE = Path(__file__).resolve().parent / "module"
IC = MODULE / "inferenceconfig.json"
SERVICE_MS = 20  # run() sleeps this long: one server worker serves one request at a time
BALLAST_MIB = 96  # init() holds this much


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    root = tmp_path_factory.mktemp("profile")
    ws = Workspace.at(root / "ws")
    ws.create()
    (root / "costly.json").write_text(json.dumps({"ms": SERVICE_MS, "mib": BALLAST_MIB}))
    Model.register(ws, root / "costly.json", "costly")
    return ws


def _samples(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "samples.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    return path


def _cli(ws: Workspace, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgeship", "model", "profile", *args, "--runtime", "process",
         "--workspace", str(ws.root)],
        capture_output=True, text=True, timeout=120, check=False,
    )


def test_numbers_are_plausible_and_memory_is_sized_from_the_measured_peak(ws: Workspace, tmp_path: Path) -> None:
    samples = _samples(tmp_path, '{"id": 1}', '{"id": 2}', "[1, 2, 3]", '"{\\"id\\": 4}"')
    memories = [0.05, 0.1, 0.25, 0.5, 1.0, 2.0]
    result = profile_model(
        ws, ["costly:1"], samples, inference_config=IC, concurrency=2, duration_s=2.0, warmup_requests=4,
        runtime="process",
        memory_candidates=memories, port=free_port(),
    )
    (run,) = result.runs
    load = run.load
    assert load.errors == 0 and load.total > 20
    # Little's law in a closed loop: throughput x mean latency = requests in flight (2), less client time.
    in_flight = load.throughput * (load.mean_ms or 0) / 1000
    assert 1.6 <= in_flight <= 2.05, f"{load.throughput=} {load.mean_ms=} {load.wall_s=}"
    p50, p90, p99 = (load.percentile_ms(q) or 0 for q in (50, 90, 99))
    assert 2 * SERVICE_MS * 0.9 <= p50 <= p90 <= p99, (p50, p90, p99)  # two clients queue at one worker
    assert run.use.peak_memory_bytes >= BALLAST_MIB * 2**20, run.use
    needed = run.use.peak_memory_bytes * (1 + MEMORY_HEADROOM) / GIB
    assert result.recommended_memory == min(m for m in memories if m >= needed)
    assert result.recommended_cpu is None and "cannot enforce a CPU limit" in result.to_json()["notes"][0]
    stored = json.loads(Model.get(ws, "costly", 1).properties[PROFILE_PROPERTY])
    assert stored == json.loads(json.dumps(result.to_json()))
    assert stored["latencyPercentile90InMs"] == pytest.approx(p90, abs=0.001)
    details = result.get_details()  # Azure ModelProfile's surface, for Model.profile in the v1 layer
    assert result.state == "Succeeded" and "recommendedCpu" not in details
    assert details["recommendedMemoryInGB"] == result.recommended_memory


def test_cli_reports_json_and_an_unmet_target(ws: Workspace, tmp_path: Path) -> None:
    samples = _samples(tmp_path, '{"id": 1}')
    done = _cli(ws, "-m", "costly:1", "--ic", str(IC), "--input-data", str(samples), "--latency-target-ms", "5",
                "--duration", "1", "--warmup", "2", "--port", str(free_port()), "--no-store", "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["latencyPercentile90InMs"] >= SERVICE_MS
    assert "The unlimited run did not meet the 5 ms p90 target." in data["notes"]
    assert data["recommendedMemoryInGB"] == 0.5 and data["runtime"] == "process"


def test_a_profile_where_every_request_fails_is_an_error(ws: Workspace, tmp_path: Path) -> None:
    samples = _samples(tmp_path, '"not json"')  # the body is the text 'not json': run() fails to parse it
    done = _cli(ws, "-m", "costly:1", "--ic", str(IC), "--input-data", str(samples), "--duration", "1",
                "--warmup", "0", "--port", str(free_port()), "--no-store")
    assert done.returncode == 1
    assert "Every request of the profile failed (first: HTTP 500" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("lines", "options", "message"),
    [
        (["{bad"], {}, "Line 1 of .* is not JSON"),
        ([], {}, "holds no samples"),
        (['{"id": 1}'], {"memory_candidates": [0]}, "--memory-gb takes 1 to 16 positive numbers"),
        (['{"id": 1}'], {"concurrency": 0}, "--concurrency 0 is out of range"),
        (['{"id": 1}'], {"latency_target_ms": -1}, "--latency-target-ms -1 is out of range"),
        (['{"id": 1}'], {"runtime": "podman"}, "--runtime 'podman' is unknown; use one of: auto, docker, process"),
    ],
)
def test_bad_input_is_refused_before_anything_starts(
    ws: Workspace, tmp_path: Path, lines: list[str], options: dict[str, Any], message: str
) -> None:
    with pytest.raises(InputError, match=message):
        profile_model(ws, ["costly:1"], _samples(tmp_path, *lines), inference_config=IC, **options)


def test_cli_bad_candidates_are_one_sentence(ws: Workspace, tmp_path: Path) -> None:
    done = _cli(ws, "-m", "costly:1", "--input-data", str(_samples(tmp_path, "1")), "--cpu", "a,b")
    assert done.returncode == 1 and "--cpu 'a,b' is not a list of numbers" in done.stderr
    assert "Traceback" not in done.stderr


def test_auto_without_a_usable_docker_profiles_on_the_process_runtime_and_says_why(
    ws: Workspace, tmp_path: Path
) -> None:
    missing = "edgeship-no-such-base:0"  # with an engine: the image cannot be built; without: no engine
    result = profile_model(ws, ["costly:1"], _samples(tmp_path, '{"id": 1}'), inference_config=IC, duration_s=1.0,
                           warmup_requests=1, base_image=missing, port=free_port(), store=False)
    assert result.runtime == "process" and result.recommended_cpu is None
    (note,) = result.notes
    assert f"the base image {missing} is not on this machine" in note or "No Docker engine answers" in note, note
    with pytest.raises(ProfilingError, match=f"base image {missing} is not on this machine|needs a Docker engine"):
        profile_model(ws, ["costly:1"], _samples(tmp_path, '{"id": 1}'), inference_config=IC, runtime="docker",
                      base_image=missing, store=False)
