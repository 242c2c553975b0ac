"""``edgeship deploy`` and ``edgeship service ...``: run a stored module on this machine.

The ``local`` target of Azure ML's ``Model.deploy`` (LocalWebservice), with a
signature check first: a module is verified against the trust root before any of
it is unpacked or loaded, and any verification error refuses the deploy. Running
is the job of :mod:`edgeship.agent.runtimes`; this module only picks a runtime,
keeps one small record per service and prints what a user needs to call it.
``--model NAME:VERSION`` (with ``--ic``/``--dc``, as ``az ml model deploy``) packages
and signs first, through :func:`edgeship.release.package`, the step every release takes.

On disk, in the workspace::

    services/<name>.json     the record: runtime, module, port, auth keys (mode 0600)
    services/process/        the process runtime's state (unpacked bundles, venvs, logs)

Docker services live in the engine (containers named ``edgeship-<name>``).
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer
from rich.table import Table

from edgeship.cli._common import WorkspaceOpt, console, err_console, print_json, workspace_from
from edgeship.errors import EdgeshipError, InputError, RuntimeFailure
from edgeship.fsutil import atomic_write_text
from edgeship.workspace import Workspace

if TYPE_CHECKING:
    from edgeship.agent.runtimes import ModuleRuntime, RestartPolicy
    from edgeship.modules.plain import ModuleManifest
    from edgeship.modules.store import StoredModule

__all__ = ["register", "service_app"]

RUNTIMES = ("docker", "process", "auto")
KEYS_FILE = "service-keys.json"  # written by the packager beside a module whose auth is enabled

service_app = typer.Typer(help="List, inspect and delete services started by 'edgeship deploy'.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("deploy")(deploy)
    app.add_typer(service_app, name="service")


def _services_dir(ws: Workspace) -> Path:
    return ws.root / "services"


def _record_path(ws: Workspace, name: str) -> Path:
    from edgeship.agent.runtimes.base import validate_service_name

    return _services_dir(ws) / f"{validate_service_name(name)}.json"


def _read_record(ws: Workspace, name: str) -> dict[str, Any]:
    path = _record_path(ws, name)
    try:
        return dict(json.loads(path.read_text()))
    except FileNotFoundError:
        raise InputError(f"No service {name} in this workspace; see 'edgeship service list'.") from None
    except ValueError as exc:
        raise InputError(f"The record {path} is damaged ({exc}); delete it and deploy again.") from exc


def _runtime(ws: Workspace, kind: str) -> ModuleRuntime:
    from edgeship.agent.runtimes import ProcessRuntime

    if kind == "process":
        return ProcessRuntime(_services_dir(ws) / "process")
    from edgeship.agent.runtimes.docker import DockerRuntime

    return DockerRuntime()


def _choose_runtime(ws: Workspace, wanted: str, manifest: ModuleManifest) -> ModuleRuntime:
    """``auto``: Docker when the module has an image and an engine answers, else a process."""
    if wanted not in RUNTIMES:
        raise InputError(f"--runtime {wanted!r} is unknown; use one of {', '.join(RUNTIMES)}.")
    if wanted != "auto":
        return _runtime(ws, wanted)
    if manifest.image is not None and manifest.image.archive is not None:
        try:
            return _runtime(ws, "docker")
        except RuntimeFailure:
            pass
    return _runtime(ws, "process")


def _keys(module_dir: Path, manifest: ModuleManifest) -> tuple[str, ...]:
    """The packaged keys when the packager wrote them, else two fresh ones; none without auth."""
    if not manifest.auth_enabled:
        return ()
    packaged = module_dir / KEYS_FILE
    if packaged.is_file():
        data = json.loads(packaged.read_text())
        return tuple(str(data[k]) for k in ("primaryKey", "secondaryKey") if data.get(k))
    return (secrets.token_urlsafe(32), secrets.token_urlsafe(32))


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _uris(port: int, manifest: ModuleManifest) -> dict[str, str]:
    from edgeship.agent.runtimes import v2_model_name

    base = f"http://127.0.0.1:{port}"
    return {"scoring": f"{base}/score", "v2": f"{base}/v2/models/{v2_model_name(manifest)}/infer"}


def deploy(
    name: Annotated[str, typer.Option("--name", "-n", help="Service name (lowercase letters, digits, - _ .).")],
    module: Annotated[str | None, typer.Option(
        "--module", help="Stored module NAME[:VERSION] (default: latest).", show_default=False)] = None,
    model: Annotated[list[str] | None, typer.Option(
        "--model", "-m", help="Instead of --module: package registered model NAME:VERSION first (repeatable).",
        show_default=False)] = None,
    ic: Annotated[Path | None, typer.Option(
        "--ic", help="With --model: Azure ML inferenceconfig.json/.yml (omit for no-code serving).",
        show_default=False)] = None,
    dc: Annotated[Path | None, typer.Option(
        "--dc", help="With --model: Azure ML deploymentconfig.json/.yml.", show_default=False)] = None,
    runtime: Annotated[str, typer.Option("--runtime", help="docker, process or auto.")] = "auto",
    port: Annotated[int | None, typer.Option("--port", "-p", help="Host port (default: a free one).")] = None,
    trust_root: Annotated[
        Path | None,
        typer.Option("--trust-root", help="Trust root file (default: this workspace's own release keys)."),
    ] = None,
    restart: Annotated[str, typer.Option("--restart", help="always, on-failure or never.")] = "on-failure",
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait until healthy.")] = 120.0,
    workspace: WorkspaceOpt = None,
) -> None:
    """Verify a stored module, run it on this machine, wait until healthy and print how to call it."""
    from edgeship.agent.runtimes import ModuleSpec
    from edgeship.modules.store import ModuleStore
    from edgeship.modules.verify import load_trust_root_file, local_trust_root, verify_module_dir
    from edgeship.registry import parse_model_ref

    ws = workspace_from(workspace)
    if (module is None) == (not model):
        raise InputError("Give --module NAME[:VERSION] to run a stored module, or --model NAME:VERSION to package "
                         "one first (not both).")
    if model:
        stored = _package(ws, model, ic, dc)
    else:
        if ic is not None or dc is not None:
            raise InputError("--ic and --dc go with --model; a stored --module is packaged already.")
        assert module is not None
        ref = parse_model_ref(module)
        stored = ModuleStore(ws).get(ref.name, ref.version)
    try:
        trust = load_trust_root_file(trust_root) if trust_root else local_trust_root(ws)
        verified = verify_module_dir(stored.directory, trust)
    except EdgeshipError as exc:
        raise type(exc)(f"Refusing to deploy {stored.ref}: {exc}") from exc
    manifest = verified.manifest
    record_path = _record_path(ws, name)
    if record_path.exists():
        old = _read_record(ws, name)
        err_console.print(f"Replacing service {name} ({old.get('module')}, {old.get('runtime')}).")
        _delete(ws, name, old)
    engine = _choose_runtime(ws, runtime, manifest)
    chosen_port = port or _free_port()
    spec = ModuleSpec(
        name=name,
        module_dir=verified.directory,
        manifest=manifest,
        port=chosen_port,
        auth_keys=_keys(verified.directory, manifest),
        restart=cast("RestartPolicy", restart),  # ModuleSpec refuses an unknown policy
    )
    uris = _uris(chosen_port, manifest)
    record: dict[str, Any] = {
        "name": name,
        "runtime": engine.kind,
        "module": manifest.ref,
        "moduleDigest": stored.digest,
        "port": chosen_port,
        "keys": list(spec.auth_keys),
        "uris": uris,
        "createdAt": time.time(),
    }
    _services_dir(ws).mkdir(parents=True, exist_ok=True)
    atomic_write_text(record_path, json.dumps(record, indent=2, sort_keys=True) + "\n", mode=0o600)
    with err_console.status(f"Installing {manifest.ref} as {name} ({engine.kind} runtime)"):
        engine.install(spec)
    with err_console.status(f"Starting {name} and waiting until it is healthy"):
        engine.start(name)
        try:
            engine.wait_healthy(name, timeout)
        except RuntimeFailure:
            engine.stop(name)  # keep it installed, so 'edgeship service logs' still works
            raise
    console.print(f"Service [bold]{name}[/] runs {manifest.ref} ({engine.kind} runtime) and is healthy.")
    console.print(f"Scoring URI: {uris['scoring']}", highlight=False)
    console.print(f"v2 URI:      {uris['v2']}", highlight=False)
    if spec.auth_keys:
        console.print(f"Primary key:   {spec.auth_keys[0]}", highlight=False)
        console.print(f"Secondary key: {spec.auth_keys[-1]}", highlight=False)
        console.print("Send 'Authorization: Bearer <key>' with each request.", highlight=False)


def _package(ws: Workspace, models: list[str], ic: Path | None, dc: Path | None) -> StoredModule:
    """Package and sign the models as a bundle module (no image: both local runtimes can run a bundle)."""
    from edgeship.registry import parse_model_ref
    from edgeship.release import PackageOptions, package

    refs = [parse_model_ref(m, require_version=True) for m in models]
    with err_console.status(f"Packaging {', '.join(str(r) for r in refs)}"):
        stored, warnings = package(ws, refs, PackageOptions(inference_config=ic, deployment_config=dc, image=False))
    for warning in warnings:
        err_console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    err_console.print(f"Packaged and signed module {stored.ref}.", highlight=False)
    return stored


def _delete(ws: Workspace, name: str, record: dict[str, Any]) -> None:
    from edgeship.agent.runtimes import UnknownServiceError

    # Already gone from the runtime (a container removed by hand): forget the record anyway.
    with contextlib.suppress(UnknownServiceError):
        _runtime(ws, str(record.get("runtime", "process"))).remove(name)
    _record_path(ws, name).unlink(missing_ok=True)


def _records(ws: Workspace) -> list[dict[str, Any]]:
    folder = _services_dir(ws)
    names = sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []
    return [_read_record(ws, n) for n in names]


@service_app.command("list")
def list_services(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (keys left out).")] = False,
    workspace: WorkspaceOpt = None,
) -> None:
    """Services of this workspace with their runtime state."""
    ws = workspace_from(workspace)
    rows: list[dict[str, Any]] = []
    for record in _records(ws):
        row = {k: record.get(k) for k in ("name", "module", "runtime", "port", "uris")}
        try:
            status = _runtime(ws, str(record["runtime"])).status(str(record["name"]))
            row.update(state=status.state, restartCount=status.restart_count, lastError=status.last_error)
        except RuntimeFailure as exc:
            row.update(state="unknown", restartCount=None, lastError=str(exc))
        rows.append(row)
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print("No services; start one with 'edgeship deploy -n NAME --module M:V'.")
        return
    table = Table("name", "module", "runtime", "state", "restarts", "scoring URI", box=None)
    for row in rows:
        uri = (row.get("uris") or {}).get("scoring", "")
        table.add_row(row["name"], row["module"], row["runtime"], row["state"], str(row["restartCount"]), uri)
    console.print(table)


@service_app.command("logs")
def logs(
    name: Annotated[str, typer.Argument(help="Service name.")],
    tail: Annotated[int, typer.Option("--tail", "-t", min=0, help="Lines from the end.")] = 100,
    workspace: WorkspaceOpt = None,
) -> None:
    """The last lines the service's scoring server wrote."""
    ws = workspace_from(workspace)
    record = _read_record(ws, name)
    typer.echo(_runtime(ws, str(record["runtime"])).logs(name, tail), nl=False)


@service_app.command("delete")
def delete(
    name: Annotated[str, typer.Argument(help="Service name.")],
    workspace: WorkspaceOpt = None,
) -> None:
    """Stop the service and remove it (unpacked bundles, venvs and images stay for reuse)."""
    ws = workspace_from(workspace)
    _delete(ws, name, _read_record(ws, name))
    console.print(f"Deleted service {name}.")
