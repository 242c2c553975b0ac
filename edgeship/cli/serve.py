"""``edgeship serve``: run an Azure ML entry script, or one model without code, as a scoring service.

This module only turns options into a :class:`~edgeship.scoring.ServiceConfig`:
it resolves registered models into the ``azureml-models`` layout (the one step
that needs a workspace) and hands a prepared folder to the server core, which a
packaged bundle reaches with ``--model-dir`` and no workspace at all. Once the
config is built, the process ``exec``s into the lean
:mod:`edgeship.scoring.supervisor` (same PID), which serves and, when the data
folder is a temporary one, removes it on the way out.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from edgeship.cli._common import WorkspaceOpt, workspace_from
from edgeship.errors import InputError

__all__ = ["register"]


def _serve(
    entry_script: Annotated[
        Path | None, typer.Option("--entry-script", "-e", help="Azure ML score.py with init() and run(data).")
    ] = None,
    source_dir: Annotated[
        Path | None,
        typer.Option("--source-dir", help="Folder added to sys.path for the script's own modules."),
    ] = None,
    model: Annotated[
        list[str] | None,
        typer.Option("--model", "-m", help="Registered model NAME[:VER] to deploy (repeatable)."),
    ] = None,
    model_dir: Annotated[
        Path | None,
        typer.Option(
            "--model-dir", help="Folder already laid out as azureml-models/<name>/<version>/ (no workspace)."
        ),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir", help="Service folder: model layout and collected data (default: a temp folder)."
        ),
    ] = None,
    port: Annotated[int, typer.Option("--port", "-p", help="TCP port (0 picks a free one).")] = 5001,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    workers: Annotated[
        int, typer.Option("--workers", min=1, max=64, help="Worker processes; each calls init().")
    ] = 1,
    auth_key: Annotated[
        list[str] | None,
        typer.Option(
            "--auth-key",
            help="Bearer key (repeat once for a secondary key); scoring then needs one. "
            "Default: $EDGESHIP_PRIMARY_KEY and $EDGESHIP_SECONDARY_KEY.",
        ),
    ] = None,
    ssl_cert: Annotated[Path | None, typer.Option("--ssl-cert", help="PEM certificate for HTTPS.")] = None,
    ssl_key: Annotated[Path | None, typer.Option("--ssl-key", help="PEM private key for HTTPS.")] = None,
    provider: Annotated[
        list[str] | None,
        typer.Option("--provider", help="ONNX Runtime execution provider, in preference order (repeatable)."),
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="Service name, used as the v2 model name.")
    ] = None,
    error_details: Annotated[
        bool,
        typer.Option(
            "--error-details",
            help="Debugging only: 5xx bodies carry the exception text and file:line (default: a generic "
            "message and a request id; the detail is in the log). Also $EDGESHIP_SCORING_ERROR_DETAILS=1.",
        ),
    ] = False,
    workspace: WorkspaceOpt = None,
) -> None:
    """Serve an entry script (Azure ML v1 contract) or, without --entry-script, one ONNX/TFLite model."""
    from edgeship.registry import parse_model_ref
    from edgeship.scoring import ServiceConfig, check_ssl, lay_out_models, resolve_root
    from edgeship.scoring.config import DEFAULT_PROVIDERS
    from edgeship.scoring.layout import MODELS_FOLDER
    from edgeship.scoring.supervisor import clean_temporary_data_dir, hand_over

    keys = list(auth_key or []) or [  # a container's fixed CMD gets its keys from the environment
        os.environ[v] for v in ("EDGESHIP_PRIMARY_KEY", "EDGESHIP_SECONDARY_KEY") if os.environ.get(v)
    ]
    if len(keys) > 2 or any(not k.strip() for k in keys):
        raise InputError("Give at most two non-empty --auth-key values (primary and secondary).")
    if entry_script is not None and not entry_script.is_file():
        raise InputError(f"Entry script {entry_script} does not exist; pass the path of your score.py.")
    if source_dir is not None and not source_dir.is_dir():
        raise InputError(f"--source-dir {source_dir} is not a folder.")
    if model and model_dir:
        raise InputError(
            "Use either -m NAME:VER (from the workspace) or --model-dir (a prepared layout), not both."
        )
    if entry_script is None and not model and model_dir is None:
        raise InputError(
            "Nothing to serve: give --entry-script score.py, or -m NAME:VER to serve a model without code."
        )
    refs = [parse_model_ref(m) for m in model or []]

    temporary = data_dir is None
    root = (data_dir or Path(tempfile.mkdtemp(prefix="edgeship-serve-"))).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    try:
        if model_dir is not None:
            model_root = resolve_root(model_dir)
        else:
            model_root = root
            shutil.rmtree(root / MODELS_FOLDER, ignore_errors=True)  # rebuilt each start: only these models
            (root / MODELS_FOLDER).mkdir()
            if refs:
                lay_out_models(workspace_from(workspace), refs, root)
        check_ssl(str(ssl_cert) if ssl_cert else None, str(ssl_key) if ssl_key else None)
        config = ServiceConfig(
            model_root=str(model_root),
            data_dir=str(root),
            entry_script=str(entry_script.resolve()) if entry_script else None,
            source_dir=str(source_dir.resolve()) if source_dir else None,
            name=name,
            host=host,
            port=port,
            workers=workers,
            auth_keys=tuple(keys),
            ssl_cert=str(ssl_cert) if ssl_cert else None,
            ssl_key=str(ssl_key) if ssl_key else None,
            providers=tuple(provider) if provider else DEFAULT_PROVIDERS,
            error_details=error_details,
        )
    except BaseException:
        if temporary:
            clean_temporary_data_dir(root)
        raise
    # From here on the CLI stack (typer, rich, pydantic, the registry) is dead weight: the service
    # runs in a lean process that replaces this one (same PID) and owns the temporary folder's cleanup.
    raise typer.Exit(hand_over(config, temporary_data_dir=temporary))


def register(app: typer.Typer) -> None:
    app.command("serve")(_serve)
