"""``edgeship model profile``: measure a model's module under load and recommend its cpu and memoryInGB.

``az ml model profile``'s options where they exist (``-m``, ``--ic``,
``--input-data``); the work is :func:`edgeship.profiling.profile_model`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from edgeship.cli._common import WorkspaceOpt, console, err_console, print_json, workspace_from
from edgeship.errors import InputError
from edgeship.packager.image import DEFAULT_BASE_IMAGE

__all__ = ["register"]


def _floats(text: str, option: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise InputError(f"{option} {text!r} is not a list of numbers; write it as 0.5,1,2.") from None


def profile(
    model: Annotated[list[str], typer.Option("--model", "-m", help="Registered model NAME:VERSION (repeatable).")],
    input_data: Annotated[
        Path,
        typer.Option("--input-data", help="JSON lines, one request body a line (any JSON; a string is sent as is)."),
    ],
    ic: Annotated[
        Path | None, typer.Option("--ic", "--inference-config", help="Azure ML inferenceconfig.json (omit: no code).")
    ] = None,
    latency_target_ms: Annotated[
        float, typer.Option("--latency-target-ms", help="p90 latency the recommendation must meet.")
    ] = 100.0,
    cpu: Annotated[str, typer.Option("--cpu", help="CPU candidates in cores, smallest first wins.")] = "0.5,1,2",
    memory_gb: Annotated[str, typer.Option("--memory-gb", help="Memory candidates in GB.")] = "0.5,1,2",
    concurrency: Annotated[int, typer.Option("--concurrency", help="Requests in flight during the load.")] = 1,
    duration: Annotated[float, typer.Option("--duration", help="Seconds of measured load per run.")] = 10.0,
    warmup: Annotated[int, typer.Option("--warmup", help="Requests sent before measuring.")] = 10,
    server_workers: Annotated[
        int, typer.Option("--server-workers", help="Scoring worker processes (process runtime).")
    ] = 1,
    port: Annotated[int | None, typer.Option("--port", help="Port for the server under test (default: free).")] = None,
    runtime: Annotated[
        str, typer.Option("--runtime", help="auto (Docker when it answers), docker (cpu limits) or process.")
    ] = "auto",
    base_image: Annotated[
        str, typer.Option("--base-image", help="Base of the module image Docker profiles (as edgeship package).")
    ] = DEFAULT_BASE_IMAGE,
    store: Annotated[
        bool, typer.Option("--store/--no-store", help="Keep the result in the model's properties.")
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the profile as JSON.")] = False,
    workspace: WorkspaceOpt = None,
) -> None:
    """Run the model's module under load with the samples; report latency, throughput, peak use and a size."""
    from edgeship.profiling import profile_model

    ws = workspace_from(workspace)
    if port is not None and not 0 < port < 65536:
        raise InputError(f"--port {port} is out of range; give a TCP port between 1 and 65535.")
    if not 1 <= server_workers <= 64:
        raise InputError(f"--server-workers {server_workers} is out of range; give 1 to 64.")
    with err_console.status("Profiling") as status:
        result = profile_model(
            ws,
            model,
            input_data,
            inference_config=ic,
            latency_target_ms=latency_target_ms,
            cpu_candidates=_floats(cpu, "--cpu"),
            memory_candidates=_floats(memory_gb, "--memory-gb"),
            concurrency=concurrency,
            duration_s=duration,
            warmup_requests=warmup,
            server_workers=server_workers,
            port=port,
            store=store,
            runtime=runtime,
            base_image=base_image,
            on_step=lambda text: status.update(f"Profiling: {text}"),
        )
    data = result.to_json()
    if as_json:
        print_json(data)
        return
    _print(data, stored=store)


def _fmt(value: Any, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}" if isinstance(value, float) else str(value)


def _given(value: Any) -> str:
    return "none" if value is None else f"{value:g}"


def _limit(value: Any) -> str:
    return "unlimited" if value is None else f"{value:g}"


def _print(data: dict[str, Any], *, stored: bool) -> None:
    runs = data["runs"]
    table = Table("", *(f"cpu {_limit(r['requestedCpu'])}, memory {_limit(r['requestedMemoryInGB'])}" for r in runs),
                  box=None)
    rows = [
        ("requests", "totalQueries", 0),
        ("errors", None, 0),
        ("latency p50 ms", "latencyPercentile50InMs", 1),
        ("latency p90 ms", "latencyPercentile90InMs", 1),
        ("latency p99 ms", "latencyPercentile99InMs", 1),
        ("mean latency ms", "averageLatencyInMs", 1),
        ("throughput req/s", "measuredQueriesPerSecond", 1),
        ("peak cpu (cores)", "maxUtilizedCpu", 2),
        ("mean cpu (cores)", "averageUtilizedCpu", 2),
        ("peak memory GB", "maxUtilizedMemoryInGB", 3),
    ]
    for label, key, digits in rows:
        values = [r["totalQueries"] - r["successQueries"] if key is None else r[key] for r in runs]
        table.add_row(label, *(_fmt(v, digits) for v in values))
    console.print(table)
    console.print(
        f"Recommended: cpu {_given(data['recommendedCpu'])}, memoryInGB {_given(data['recommendedMemoryInGB'])} "
        f"(p90 target {data['latencyTargetInMs']:g} ms, {data['runtime']} runtime).",
        highlight=False,
    )
    for note in data["notes"]:
        console.print(f"Note: {note}", highlight=False)
    for run in data["runs"]:
        for error in run["errors"][:3]:
            console.print(f"Error seen: {error}", highlight=False)
    if stored:
        console.print(f"Stored in the properties of {', '.join(data['models'])} (edgeship.profile).", highlight=False)


def register(model_app: typer.Typer) -> None:
    model_app.command("profile")(profile)
