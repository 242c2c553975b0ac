"""``edgeship deploy`` and ``edgeship service ...``: run a stored module on this machine.

The ``local`` target of Azure ML's ``Model.deploy`` (LocalWebservice), with a
signature check first: a module is verified against the trust root before any of
it is unpacked or loaded, and any verification error refuses the deploy. The work
is :class:`edgeship.local_services.LocalServices`' (shared with the Azure ML v1
layer); this module parses options and prints what a user needs to call a service.
``--model NAME:VERSION`` (with ``--ic``/``--dc``, as ``az ml model deploy``) packages
and signs first, through :func:`edgeship.release.package`, the step every release takes.
``service update|run|keys`` take ``az ml service``'s flag names (``-n``, ``--ic``,
``-m``, ``--input-data``, ``--regen``).
"""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from edgeship.cli._common import WorkspaceOpt, console, err_console, print_json, workspace_from
from edgeship.errors import InputError
from edgeship.local_services import CLOUD_TARGETS, DeployRequest, LocalServices, script_env
from edgeship.workspace import Workspace

if TYPE_CHECKING:
    from edgeship.modules.store import StoredModule

__all__ = ["package_models", "print_service", "register", "service_app", "services"]

MAX_INPUT_BYTES = 16 * 1024 * 1024  # 'service run --input-data': the scoring server's own default body limit

service_app = typer.Typer(help="List, inspect, call, update and delete services started by 'edgeship deploy'.",
                          no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("deploy")(deploy)
    app.add_typer(service_app, name="service")


def services(ws: Workspace) -> LocalServices:
    return LocalServices(ws, progress=lambda what: err_console.status(what))


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
    from edgeship.modules.store import ModuleStore
    from edgeship.registry import parse_model_ref

    ws = workspace_from(workspace)
    local = services(ws)
    local.record_path(name)  # the name is checked before any work
    if (module is None) == (not model):
        raise InputError("Give --module NAME[:VERSION] to run a stored module, or --model NAME:VERSION to package "
                         "one first (not both).")
    env: dict[str, str] = {}
    if model:
        stored = package_models(ws, model, ic, dc, target="local")
        if dc is not None:
            from edgeship.packager.config import load_deployment_config

            env = script_env(load_deployment_config(dc, target="local").scoring_timeout_ms)
    else:
        if ic is not None or dc is not None:
            raise InputError("--ic and --dc go with --model; a stored --module is packaged already.")
        assert module is not None
        ref = parse_model_ref(module)
        stored = ModuleStore(ws).get(ref.name, ref.version)
    record = local.deploy(
        DeployRequest(name=name, module=stored, runtime=runtime, port=port, restart=restart, timeout=timeout,
                      trust_root=trust_root, env=env),
        replaced=_say_replaced(name),
    )
    print_service(record)


def _say_replaced(name: str) -> Any:
    def say(old: dict[str, Any]) -> None:
        err_console.print(f"Replacing service {name} ({old.get('module')}, {old.get('runtime')}).")

    return say


def print_service(record: dict[str, Any]) -> None:
    """What a user needs to call a service: its URIs and keys."""
    name, kind, keys = record["name"], record["runtime"], record.get("keys") or []
    if kind in CLOUD_TARGETS:
        console.print(f"Service [bold]{name}[/] is module {record['module']}, signed and written for "
                      f"{kind.upper()}: {record['artifacts']}", highlight=False)
    else:
        uris = record["uris"]
        console.print(f"Service [bold]{name}[/] runs {record['module']} ({kind} runtime) and is healthy.")
        console.print(f"Scoring URI: {uris['scoring']}", highlight=False)
        console.print(f"v2 URI:      {uris['v2']}", highlight=False)
    if keys:
        console.print(f"Primary key:   {keys[0]}", highlight=False)
        console.print(f"Secondary key: {keys[-1]}", highlight=False)
        console.print("Send 'Authorization: Bearer <key>' with each request.", highlight=False)


def package_models(ws: Workspace, models: list[str], ic: Path | None, dc: Path | None, *,
                   target: str | None, image: bool | None = None) -> StoredModule:
    """Package and sign the models (no image for a local target: both local runtimes can run a bundle)."""
    from edgeship.packager.config import derive_module_name
    from edgeship.registry import parse_model_ref
    from edgeship.release import PackageOptions, package

    refs = [parse_model_ref(m, require_version=True) for m in models]
    options = PackageOptions(inference_config=ic, deployment_config=dc, target=target,
                             module_name=derive_module_name(refs[0].name, target),
                             image=False if target in (None, "local") else image)
    with err_console.status(f"Packaging {', '.join(str(r) for r in refs)}"):
        stored, warnings = package(ws, refs, options)
    for warning in warnings:
        err_console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    err_console.print(f"Packaged and signed module {stored.ref}.", highlight=False)
    return stored


@service_app.command("list")
def list_services(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (keys left out).")] = False,
    workspace: WorkspaceOpt = None,
) -> None:
    """Services of this workspace with their runtime state."""
    local = services(workspace_from(workspace))
    rows: list[dict[str, Any]] = []
    for record in local.records():
        row = {k: record.get(k) for k in ("name", "module", "runtime", "port", "uris")}
        state, restarts, error = local.state(record)
        row.update(state=state, restartCount=restarts, lastError=error)
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
    typer.echo(services(workspace_from(workspace)).logs(name, tail), nl=False)


@service_app.command("delete")
def delete(
    name: Annotated[str, typer.Argument(help="Service name.")],
    workspace: WorkspaceOpt = None,
) -> None:
    """Stop the service and remove it (unpacked bundles, venvs and images stay for reuse)."""
    services(workspace_from(workspace)).delete(name)
    console.print(f"Deleted service {name}.")


@service_app.command("update")
def update(
    name: Annotated[str, typer.Option("--name", "-n", help="Service name.")],
    model: Annotated[list[str] | None, typer.Option(
        "--model", "-m", help="Registered model NAME:VERSION to serve instead (repeatable).",
        show_default=False)] = None,
    module: Annotated[str | None, typer.Option(
        "--module", help="Or: stored module NAME[:VERSION] to run instead.", show_default=False)] = None,
    ic: Annotated[Path | None, typer.Option("--ic", help="Azure ML inferenceconfig.json/.yml.",
                                            show_default=False)] = None,
    dc: Annotated[Path | None, typer.Option("--dc", help="Azure ML deploymentconfig.json/.yml.",
                                            show_default=False)] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait until healthy.")] = 120.0,
    workspace: WorkspaceOpt = None,
) -> None:
    """Run other models or another module under the same name, port and keys (as 'az ml service update')."""
    from edgeship.modules.store import ModuleStore
    from edgeship.registry import parse_model_ref

    ws = workspace_from(workspace)
    local = services(ws)
    old = local.record(name)
    if old["runtime"] in CLOUD_TARGETS:
        raise InputError(f"Service {name} is a module written for {str(old['runtime']).upper()}; package it "
                         f"again with 'edgeship model deploy -n {name} --overwrite'.")
    if (module is None) == (not model):
        raise InputError("Give -m NAME:VERSION (with --ic) to package new models, or --module NAME[:VERSION].")
    if model:
        stored = package_models(ws, model, ic, dc, target="local")
    else:
        if ic is not None or dc is not None:
            raise InputError("--ic and --dc go with -m; a stored --module is packaged already.")
        assert module is not None
        ref = parse_model_ref(module)
        stored = ModuleStore(ws).get(ref.name, ref.version)
    env = dict(old.get("env") or {})
    if dc is not None:
        from edgeship.packager.config import load_deployment_config

        env = script_env(load_deployment_config(dc, target="local").scoring_timeout_ms)
    record = local.deploy(
        DeployRequest(name=name, module=stored, runtime=str(old["runtime"]), port=old["port"], timeout=timeout,
                      env=env),
        keys=tuple(old.get("keys") or ()),
    )
    print_service(record)


@service_app.command("run")
def run(
    name: Annotated[str, typer.Option("--name", "-n", help="Service name.")],
    input_data: Annotated[str, typer.Option(
        "--input-data", "-d", help="The request body, or @FILE to read it from a file.")],
    workspace: WorkspaceOpt = None,
) -> None:
    """POST the input to the service's scoring URI (with its key) and print the answer, as 'az ml service run'."""
    record = services(workspace_from(workspace)).record(name)
    if record["runtime"] in CLOUD_TARGETS:
        raise InputError(f"Service {name} runs on {str(record['runtime']).upper()}, not here; call its scoring URI "
                         "there, or deploy it locally with 'edgeship deploy'.")
    status, body = call_service(record, read_input(input_data))
    if status >= 400:
        raise InputError(f"Service {name} answered HTTP {status}: {body.decode(errors='replace')[:500]}")
    typer.echo(body.decode(errors="replace"))


def read_input(text: str) -> bytes:
    if text.startswith("@"):
        path = Path(text[1:])
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise InputError(
                f"--input-data {text}: cannot read {path} ({exc.strerror}); name an existing file.") from exc
        if size > MAX_INPUT_BYTES:
            raise InputError(f"--input-data {text} is {size} bytes; the limit is {MAX_INPUT_BYTES}.")
        return path.read_bytes()
    data = text.encode()
    if len(data) > MAX_INPUT_BYTES:
        raise InputError(f"--input-data is {len(data)} bytes; the limit is {MAX_INPUT_BYTES}.")
    return data


def call_service(record: dict[str, Any], body: bytes, timeout: float = 60.0) -> tuple[int, bytes]:
    """POST ``body`` to the record's scoring URI with its primary key: (status, body)."""
    headers = {"Content-Type": "application/json"}
    keys = record.get("keys") or []
    if keys:
        headers["Authorization"] = f"Bearer {keys[0]}"
    uri = str(record["uris"]["scoring"])
    if not uri.startswith("http://127.0.0.1:"):
        raise InputError(f"The record of service {record['name']} names {uri}, not a local service; deploy it again.")
    request = urllib.request.Request(uri, data=body, headers=headers, method="POST")  # noqa: S310 - checked above
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:  # noqa: S310
            return int(reply.status), reply.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()
    except OSError as exc:
        raise InputError(f"Service {record['name']} did not answer at {record['uris']['scoring']} ({exc}); "
                         f"see 'edgeship service list' and 'edgeship service logs {record['name']}'.") from exc


@service_app.command("keys")
def keys(
    name: Annotated[str, typer.Option("--name", "-n", help="Service name.")],
    regen: Annotated[str | None, typer.Option(
        "--regen", "--key", help="Make a new Primary or Secondary key (the service restarts with it).",
        show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    workspace: WorkspaceOpt = None,
) -> None:
    """The service's auth keys (as 'az ml service get-keys'); --regen makes a new one (as 'regen-key')."""
    local = services(workspace_from(workspace))
    found = local.regenerate_key(name, regen) if regen is not None else tuple(local.record(name).get("keys") or ())
    if not found:
        raise InputError(f"Service {name} has no auth keys (auth is off); deploy it with authEnabled true.")
    if as_json:
        print_json({"primaryKey": found[0], "secondaryKey": found[-1]})
        return
    console.print(f"Primary key:   {found[0]}", highlight=False)
    console.print(f"Secondary key: {found[-1]}", highlight=False)
