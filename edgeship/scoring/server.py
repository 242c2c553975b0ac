"""Start a scoring service: build it (load, ``init()``), bind, serve; supervise workers.

One worker serves in this process. Several workers are separate processes
(``python -m edgeship.scoring.worker``) sharing one listening socket; each
loads the script and calls ``init()`` itself, then reports ``ready`` or its
error on a pipe. The first failure stops every worker and surfaces as one
:class:`ScoringError`, so a broken ``init()`` never leaves a half-up service or a
restart loop. A worker that dies later stops the service too: restarting is the
job of the supervisor above us (the agent, Docker's restart policy, systemd).
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgeship.errors import ConfigError, InputError, ScoringError
from edgeship.scoring.config import ENV_CONFIG, ServiceConfig
from edgeship.scoring.failures import ENV_ERROR_DETAILS

__all__ = ["ENV_FD", "ENV_STATUS_FD", "build_app", "check_ssl", "serve", "serve_app"]

ENV_FD = "EDGESHIP_SCORING_FD"
ENV_STATUS_FD = "EDGESHIP_SCORING_STATUS_FD"
_READY_TIMEOUT = 600.0  # seconds a worker may spend in import + init()


def build_app(config: ServiceConfig) -> Any:
    """Set the Azure ML environment, load the entry script or model, call ``init()``; returns the ASGI app."""
    from edgeship.scoring.app import ScoringApp
    from edgeship.scoring.entry import EntryScript
    from edgeship.scoring.layout import azureml_model_dir, scan_models
    from edgeship.scoring.metrics import Metrics
    from edgeship.scoring.service import ModelService, ScriptService, Service

    root = Path(config.model_root)
    deployed = scan_models(root) if config.models_dir.is_dir() else []
    os.environ["AZUREML_MODEL_DIR"] = azureml_model_dir(root, deployed)
    os.environ["EDGESHIP_DATA_DIR"] = config.data_dir
    os.environ.update(config.extra_env)
    service: Service
    if config.entry_script:
        script = EntryScript.load(config.entry_script, config.source_dir)
        script.init()
        service = ScriptService(script, config.name or Path(config.entry_script).stem)
    else:
        if len(deployed) != 1:
            raise ScoringError(
                f"Serving without an entry script needs exactly one model, found {len(deployed)}; "
                "pass -m NAME:VER once, or give --entry-script."
            )
        from edgeship.scoring.backends import load_backend

        model = deployed[0]
        backend = load_backend(model.path, config.providers)
        service = ModelService(backend, config.name or model.name, str(model.version))
    details = config.error_details or _env_flag(ENV_ERROR_DETAILS)
    if details:
        _setup_logging()
        logging.getLogger("edgeship.scoring").warning(
            "Error details are on: a 5xx body carries the exception text and the entry script's file:line. "
            "Use this only for debugging on a trusted network."
        )
    return ScoringApp(service, config.auth_keys, Metrics(), config.max_body_bytes, details,
                      scoring_timeout_ms=scoring_timeout_ms(os.environ.get(ENV_SCORING_TIMEOUT)))


ENV_SCORING_TIMEOUT = "SCORING_TIMEOUT_MS"  # Azure ML's name; a deploymentconfig's scoringTimeoutMs sets it
_MAX_SCORING_TIMEOUT_MS = 3_600_000  # an hour, the Azure ML inference server's own default


def scoring_timeout_ms(value: str | None) -> int | None:
    """``SCORING_TIMEOUT_MS`` as milliseconds (None when unset); a bad value is a ConfigError saying what to write."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if not text.isdigit() or not 1 <= int(text) <= _MAX_SCORING_TIMEOUT_MS:
        raise ConfigError(f"{ENV_SCORING_TIMEOUT}={value!r} is not usable; give whole milliseconds from 1 to "
                          f"{_MAX_SCORING_TIMEOUT_MS}, or unset it for no limit.")
    return int(text)


def _env_flag(name: str) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"{name} is {value!r}; set it to 1 (on) or 0 (off).")


def check_ssl(cert: str | None, key: str | None) -> None:
    """Both or neither, readable, and a matching pair: one clear error before anything starts."""
    if bool(cert) != bool(key):
        raise InputError("--ssl-cert and --ssl-key go together; give both files or neither.")
    if cert and key:
        import ssl  # only when TLS is asked for: libssl is a few MiB the supervisor need not carry

        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            raise InputError(
                f"Cannot use {cert} with {key} for TLS ({exc}); give a PEM certificate and its key."
            ) from exc


def _bind(host: str, port: int) -> socket.socket:
    """Bind without listening: clients are refused (not left waiting) until a worker is ready."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # An explicit IPPROTO_TCP, not 0: asyncio turns Nagle off (TCP_NODELAY) only on sockets whose
    # proto says TCP, and uvicorn writes headers and body separately, so with proto 0 every
    # keep-alive response waited ~40 ms for the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise InputError(
            f"Cannot listen on {host}:{port} ({exc.strerror}); choose another --port or --host."
        ) from exc
    sock.set_inheritable(True)
    return sock


def _setup_logging() -> None:
    log = logging.getLogger("edgeship.scoring")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)


def uvicorn_config(app: Any, config: ServiceConfig) -> Any:
    """The uvicorn settings every scoring process runs with."""
    import uvicorn

    return uvicorn.Config(
        app,
        # "auto" takes httptools and uvloop when installed (the scoring extra pulls both; uvloop not
        # on Windows) and falls back to h11 and asyncio: never pin h11 or asyncio here.
        http="auto",
        loop="auto",
        lifespan="on",
        log_level="warning",
        access_log=False,
        server_header=False,
        ssl_certfile=config.ssl_cert,
        ssl_keyfile=config.ssl_key,
        timeout_keep_alive=30,
    )


def serve_app(app: Any, config: ServiceConfig, sockets: list[socket.socket]) -> None:
    """Run uvicorn on already-bound sockets until SIGINT/SIGTERM."""
    import uvicorn

    _setup_logging()
    uvicorn.Server(uvicorn_config(app, config)).run(sockets=sockets)


def serve(config: ServiceConfig, announce: Callable[[str], None] = print) -> None:
    check_ssl(config.ssl_cert, config.ssl_key)
    sock = _bind(config.host, config.port)
    try:
        url = f"{config.scheme}://{config.host}:{sock.getsockname()[1]}"
        if config.workers <= 1:
            app = build_app(config)
            announce(f"Serving {app.service.name} on {url} (1 worker); Ctrl-C stops it.")
            serve_app(app, config, [sock])
        else:
            _supervise(config, sock, url, announce)
    finally:
        sock.close()


def _spawn(
    config: ServiceConfig, sock: socket.socket, metrics_dir: str
) -> tuple[subprocess.Popen[bytes], int]:
    read_end, write_end = os.pipe()
    env = {
        **os.environ,
        ENV_CONFIG: config.to_json(),
        ENV_FD: str(sock.fileno()),
        ENV_STATUS_FD: str(write_end),
        "PROMETHEUS_MULTIPROC_DIR": metrics_dir,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgeship.scoring.worker"], env=env, pass_fds=(sock.fileno(), write_end)
    )
    os.close(write_end)
    return proc, read_end


def _wait_ready(workers: list[tuple[subprocess.Popen[bytes], int]], stopping: Callable[[], bool]) -> bool:
    """Block until every worker said ``ready`` (True) or a stop was asked for (False); raise on the
    first error or early exit."""
    selector = selectors.DefaultSelector()
    buffers: dict[int, bytes] = {}
    for proc, fd in workers:
        selector.register(fd, selectors.EVENT_READ, proc)
        buffers[fd] = b""
    deadline = time.monotonic() + _READY_TIMEOUT
    pending = len(workers)
    try:
        while pending:
            if stopping():  # SIGTERM during a long init(): stop now, not after it
                return False
            left = deadline - time.monotonic()
            if left <= 0:
                raise ScoringError(f"Workers did not finish init() within {_READY_TIMEOUT:.0f} s.")
            events = selector.select(timeout=min(0.2, left))
            for key, _ in events:
                fd = int(key.fd)
                chunk = os.read(fd, 65536)
                buffers[fd] += chunk
                if not chunk or b"\n" in buffers[fd]:
                    selector.unregister(fd)
                    pending -= 1
                    line = buffers[fd].split(b"\n", 1)[0].decode("utf-8", "replace")
                    if line != "ready":
                        proc = key.data
                        message = line.removeprefix("error ") if line else ""
                        raise ScoringError(
                            message or f"A worker exited with code {proc.wait()} before it was ready."
                        )
        return True
    finally:
        selector.close()
        for _, fd in workers:
            os.close(fd)


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + 10
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _supervise(config: ServiceConfig, sock: socket.socket, url: str, announce: Callable[[str], None]) -> None:
    import shutil

    metrics_dir = tempfile.mkdtemp(prefix="edgeship-metrics-")
    stopping = False

    def _request_stop(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, _request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    workers = [_spawn(config, sock, metrics_dir) for _ in range(config.workers)]
    procs = [proc for proc, _ in workers]
    try:
        if not _wait_ready(workers, lambda: stopping):
            return
        announce(f"Serving on {url} ({config.workers} workers); Ctrl-C stops it.")
        while not stopping:
            for proc in procs:
                if proc.poll() is not None:
                    raise ScoringError(
                        f"Worker {proc.pid} exited with code {proc.returncode}; the service stopped."
                    )
            time.sleep(0.2)
    finally:
        _stop(procs)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        shutil.rmtree(metrics_dir, ignore_errors=True)
