"""Profiling in Docker: the module's image, one container per cpu candidate with the limit enforced.

One profile of a module whose run() computes for SPIN_MS of CPU time, at cpu 0.25 and 1
(about 40 s on vfs: the image build, then two containers). The checks are structural —
the recommendation is the smallest candidate whose measured p90 met the target, memory
is sized from the measured peak — plus what the quota makes certain: under 0.25 of a core
the server cannot do more than 0.25 s of CPU work a second.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from parts import free_port, need

from edgeship.profiling import profile_model
from edgeship.profiling.container import IMAGE_REPO, LABEL_PROFILE, docker_engine, module_image
from edgeship.profiling.recommend import GIB, MEMORY_HEADROOM, recommend
from edgeship.registry import Model
from edgeship.workspace import Workspace

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "packager"))  # the session wheelhouse helper
from bundle_world import session_wheelhouse

MODULE = Path(__file__).resolve().parent / "module"
IC = MODULE / "inferenceconfig.json"
BASE_IMAGE = os.environ.get("EDGESHIP_TEST_BASE_IMAGE", "edgeship-base:bookworm-py3")
SPIN_MS = 25  # CPU time each request computes
BALLAST_MIB = 32

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def test_docker_profile_limits_each_cpu_candidate_and_recommends_the_smallest_that_meets_the_target(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    client = docker_engine()
    need(client is not None, "a Docker engine")
    import docker.errors

    try:
        client.images.get(BASE_IMAGE)
    except docker.errors.ImageNotFound:
        need(False, f"the base image {BASE_IMAGE} (build it with: bash .ci/base-image.sh)")
    ws = Workspace.at(tmp_path / "ws")
    ws.create()
    (tmp_path / "costly.json").write_text(json.dumps({"ms": 0, "mib": BALLAST_MIB, "spin_ms": SPIN_MS}))
    model = Model.register(ws, tmp_path / "costly.json", "costly")
    samples = tmp_path / "samples.jsonl"
    samples.write_text('{"id": 1}\n{"id": 2}\n')
    wheelhouse = session_wheelhouse(tmp_path_factory)
    from edgeship.packager.config import load_inference_config

    image = module_image(client, ws, [model], inference=load_inference_config(IC), base_image=BASE_IMAGE,
                         wheelhouse=wheelhouse)
    try:
        memories = [0.125, 0.25, 0.5, 1.0]
        result = profile_model(
            ws, ["costly:1"], samples, inference_config=IC, latency_target_ms=600_000, cpu_candidates=[1, 0.25],
            memory_candidates=memories, duration_s=2.0, warmup_requests=2, runtime="docker",
            base_image=BASE_IMAGE, wheelhouse=wheelhouse, port=free_port(),
        )
        # The same models, code and wheels: the image built above was reused, not built again.
        assert len(client.images.list(name=IMAGE_REPO, filters={"label": LABEL_PROFILE})) >= 1
        assert module_image(client, ws, [model], inference=load_inference_config(IC), base_image=BASE_IMAGE,
                            wheelhouse=wheelhouse) == image
    finally:
        leftovers = client.containers.list(all=True, filters={"label": LABEL_PROFILE})
        for container in leftovers:
            container.remove(force=True)
        client.images.remove(image, force=True)  # a profile keeps its image as a cache; a test run does not
    assert not leftovers, "a profile's container was left behind"

    data = result.to_json()
    assert data["runtime"] == "docker" and data["cpuLimitsEnforced"] is True
    slow, fast = result.runs  # candidates in ascending order
    assert (slow.cpu_limit, fast.cpu_limit) == (0.25, 1.0)
    assert slow.memory_limit_gb == fast.memory_limit_gb == 1.0  # memory limited to the largest candidate
    for run in result.runs:
        assert run.load.errors == 0 and run.load.total >= 3, run.load.error_texts
        assert run.use.peak_memory_bytes >= BALLAST_MIB * 2**20, run.use
    # Every candidate met a 600 s target: the smallest is recommended, and the headline is its run.
    assert result.recommended_cpu == 0.25
    assert data["latencyPercentile90InMs"] == slow.to_json()["latencyPercentile90InMs"]
    # The quota is enforced: a quarter core does at most a quarter second of CPU work a second.
    assert slow.load.throughput * SPIN_MS / 1000 <= 0.25 * 1.15, slow.load.throughput
    assert slow.use.mean_cpu_cores <= 0.25 * 1.3, slow.use
    peak = max(r.use.peak_memory_bytes for r in result.runs)
    assert result.recommended_memory == min(m for m in memories if m >= peak * (1 + MEMORY_HEADROOM) / GIB)

    # A target between the two measured p90s: the rule now needs the larger candidate.
    slow_p90, fast_p90 = slow.load.percentile_ms(90) or 0, fast.load.percentile_ms(90) or 0
    assert fast_p90 < slow_p90, (fast_p90, slow_p90)
    between = recommend([r.figures() for r in result.runs], (slow_p90 + fast_p90) / 2, memories)
    assert between.cpu == 1.0 and between.cpu_latency_ms == fast_p90
    below = recommend([r.figures() for r in result.runs], fast_p90 / 2, memories)
    assert below.cpu is None and "No cpu candidate met" in below.notes[0]
