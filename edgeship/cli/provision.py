"""Serial provisioning commands: ``edgeship device flash`` (operator) and ``edgeship agent provision`` (device).

Thin: the protocol, the bundle and its installation live in
:mod:`edgeship.provisioning`; this module reads options and files, shows progress
and prints one line of result. :func:`register` adds the two commands to the
``device`` group (``edgeship.cli.fleet``) and the ``agent`` group
(``edgeship.cli.agent``), so neither of those modules needs to know about serial lines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from edgeship.cli._common import console, err_console
from edgeship.errors import InputError

__all__ = ["flash", "receive", "register"]


def register(app: typer.Typer) -> None:
    """Add ``device flash`` and ``agent provision``; ``app`` is unused (the groups are already on it)."""
    from edgeship.cli.agent import app as agent_app
    from edgeship.cli.fleet import device_app

    device_app.command("flash")(flash)
    agent_app.command("provision")(receive)


def _read_text(path: Path | None, what: str) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"Cannot read the {what} {path} ({exc.strerror}); check the path.") from exc


def _progress(label: str) -> Progress:
    return Progress(
        TextColumn(label), BarColumn(), DownloadColumn(), TimeRemainingColumn(), console=err_console, transient=True
    )


def flash(
    device_id: Annotated[str, typer.Argument(help="The device's id (its MQTT identity).")],
    port: Annotated[str, typer.Option("--port", "-p", help="Serial port, e.g. /dev/ttyUSB0.", show_default=False)],
    broker: Annotated[str, typer.Option("--broker", help="Broker URL the device connects to (mqtt:// or mqtts://).")],
    hub_url: Annotated[str, typer.Option("--hub-url", help="Hub URL the device downloads modules from.")],
    trust_root: Annotated[
        Path, typer.Option("--trust-root", help="Trust-root envelope ('edgeship keys trust-root' writes it).")
    ],
    baud: Annotated[int, typer.Option("--baud", help="Line speed in bit/s.")] = 115200,
    username: Annotated[
        str | None, typer.Option("--username", help="Broker username (default: the device id with a password).")
    ] = None,
    password_file: Annotated[
        Path | None, typer.Option("--password-file", help="File holding the device's broker password.")
    ] = None,
    ca_file: Annotated[Path | None, typer.Option("--ca-file", help="Broker CA certificate (PEM).")] = None,
    client_cert: Annotated[Path | None, typer.Option("--client-cert", help="Device certificate (PEM).")] = None,
    client_key: Annotated[Path | None, typer.Option("--client-key", help="Device private key (PEM).")] = None,
    retries: Annotated[int, typer.Option("--retries", help="Sends of one frame before giving up.")] = 10,
    ack_timeout: Annotated[float, typer.Option("--ack-timeout", help="Seconds to wait for each answer.")] = 1.0,
) -> None:
    """Send a device its identity, broker credentials, CA and trust root over a serial cable."""
    from edgeship.provisioning import LinkLimits, ProvisioningBundle, send_bundle
    from edgeship.provisioning.serial_port import open_serial

    password = _read_text(password_file, "password file")
    bundle = ProvisioningBundle.build(
        device_id=device_id,
        broker_url=broker,
        username=username if username is not None else (device_id if password is not None else None),
        password=password.strip() if password is not None else None,
        ca_cert_pem=_read_text(ca_file, "CA certificate"),
        client_cert_pem=_read_text(client_cert, "client certificate"),
        client_key_pem=_read_text(client_key, "client key"),
        hub_url=hub_url,
        trust_root=_read_text(trust_root, "trust root"),
    )
    data = bundle.to_bytes()  # refuses an oversized bundle before the port is opened
    if retries < 1 or ack_timeout <= 0:
        raise InputError("--retries must be at least 1 and --ack-timeout above 0.")
    limits = LinkLimits(ack_timeout=ack_timeout, retries=retries)
    with open_serial(port, baud) as stream, _progress(f"flash {device_id}") as bar:
        stream.discard_input()
        task = bar.add_task("send", total=len(data))
        report = send_bundle(
            stream, data, limits=limits, progress=lambda done, _total: bar.update(task, completed=done)
        )
    console.print(
        f"Provisioned [bold]{device_id}[/] over {port}: {report.size} bytes in {report.seconds:.1f} s, "
        f"sha256 {report.sha256[:16]}…, {report.retransmits} retransmissions.",
        highlight=False,
    )


def receive(
    serial: Annotated[str, typer.Option("--serial", "-s", help="Serial port, e.g. /dev/ttyS0.", show_default=False)],
    baud: Annotated[int, typer.Option("--baud", help="Line speed in bit/s.")] = 115200,
    config: Annotated[Path, typer.Option("--config", "-c", help="Where to write agent.toml.")] = Path("agent.toml"),
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds to wait for the operator (0: forever).")
    ] = 300.0,
    data_dir: Annotated[
        str, typer.Option("--data-dir", help="The agent's data folder, written into agent.toml.")
    ] = "agent-data",
) -> None:
    """Wait for 'edgeship device flash' on the serial line and write the agent's config."""
    from edgeship.provisioning import InstalledFiles, ProvisioningBundle, install_bundle, receive_bundle
    from edgeship.provisioning.serial_port import open_serial

    if timeout < 0:
        raise InputError("--timeout must be 0 (wait forever) or a number of seconds.")
    installed: list[InstalledFiles] = []

    def accept(data: bytes) -> None:
        installed.append(install_bundle(ProvisioningBundle.from_bytes(data), config, data_dir=data_dir))

    err_console.print(f"Waiting for the operator on {serial} …", highlight=False)
    with open_serial(serial, baud) as stream, _progress("receive") as bar:
        task = bar.add_task("receive", total=None)
        receive_bundle(
            stream, accept, wait=timeout or None,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )  # fmt: skip
    result = installed[0]
    console.print(
        f"Provisioned: wrote {result.config} and {len(result.files) - 1} more files beside it.", highlight=False
    )

