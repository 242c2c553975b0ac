"""``edgeship keys ...``: create, list and export signing keys; write trust roots.

Thin: every decision lives in :mod:`edgeship.signing`. ``cryptography`` is imported
only when a keys command runs, so ``edgeship`` itself starts without it; a missing
package becomes one clear error naming the extra to install.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from edgeship.cli._common import WorkspaceOpt, console, print_json, workspace_from
from edgeship.errors import InputError, SigningKeyError
from edgeship.fsutil import atomic_write_text

if TYPE_CHECKING:
    from edgeship.signing import Keyring, PublicKey, Signer, TrustRoot

__all__ = ["keys_app", "register"]

keys_app = typer.Typer(
    help="Create and export Ed25519 signing keys; write trust roots.", no_args_is_help=True
)

RoleOpt = Annotated[str, typer.Option("--role", "-r", help="root, release or hub.", show_default=False)]


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")


def _keyring(workspace: Path | None) -> Keyring:
    try:
        from edgeship.signing import Keyring
    except ModuleNotFoundError as exc:
        raise InputError(
            f"Signing needs the '{exc.name}' package; install it with pip install 'edgeship[packager]'."
        ) from exc
    return Keyring(workspace_from(workspace))


@keys_app.command("create")
def create(
    role: RoleOpt,
    name: Annotated[str | None, typer.Option("--name", "-n", help="Key name (default: the role).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the public record as JSON.")] = False,
    workspace: WorkspaceOpt = None,
) -> None:
    """Generate an Ed25519 key; the private half is written 0600 and never printed."""
    info = _keyring(workspace).create(role, name)
    if as_json:
        print_json(info.to_dict())
        return
    console.print(f"Created {info.role} key [bold]{info.name}[/] (keyid {info.keyid})", highlight=False)


@keys_app.command("list")
def list_keys(
    role: Annotated[str | None, typer.Option("--role", "-r", help="Only keys of this role.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    workspace: WorkspaceOpt = None,
) -> None:
    """List the workspace's signing keys (public information only)."""
    infos = _keyring(workspace).list(role)
    if as_json:
        print_json([i.to_dict() for i in infos])
        return
    table = Table("name", "role", "keyid", "created")
    for i in infos:
        table.add_row(i.name, i.role, i.keyid, i.created)
    console.print(table)
    if not infos:
        console.print("No keys yet; create one with 'edgeship keys create --role release'.")


@keys_app.command("export-public")
def export_public(
    name: Annotated[str, typer.Argument(help="Workspace key name.")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to FILE, not stdout.")] = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Print (or write) a key's public half and key id as JSON, for a trust root elsewhere."""
    info = _keyring(workspace).get(name)
    if output is None:
        print_json(info.to_dict())
        return
    atomic_write_text(output, json.dumps(info.to_dict(), indent=2, sort_keys=True) + "\n")
    console.print(f"Wrote the public key {info.name} ({info.keyid}) to {output}", highlight=False)


@keys_app.command("trust-root")
def trust_root(
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the signed trust root.")],
    release: Annotated[
        list[str] | None, typer.Option(show_default=False, help="Release key name (repeatable).")
    ] = None,
    hub: Annotated[
        list[str] | None, typer.Option(show_default=False, help="Hub key name (repeatable).")
    ] = None,
    root: Annotated[
        list[str] | None,
        typer.Option(
            show_default=False, help="Root key name (repeatable; default: every root key in the workspace)."
        ),
    ] = None,
    release_threshold: Annotated[int, typer.Option(help="Release signatures required.")] = 1,
    hub_threshold: Annotated[int, typer.Option(help="Hub signatures required.")] = 1,
    root_threshold: Annotated[int, typer.Option(help="Root signatures required for a rotation.")] = 1,
    previous: Annotated[
        Path | None,
        typer.Option(
            help="The trust root this one replaces: bumps the version and signs with its root keys."
        ),
    ] = None,
    sign_with: Annotated[
        list[str] | None, typer.Option(help="Extra signing key (repeatable), e.g. a retiring root key.")
    ] = None,
    version: Annotated[int | None, typer.Option(help="Version (default 1, or previous + 1).")] = None,
    expires_days: Annotated[
        int | None, typer.Option(help="Expire after this many days (default: never).")
    ] = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Write a trust root from workspace keys, signed by its root keys (see ADR 0003)."""
    ring = _keyring(workspace)
    from edgeship.signing import TrustRoot, load_trust_root, rotate, sign_trust_root

    if not release or not hub:
        raise InputError("A trust root needs at least one --release and one --hub key name.")
    root_names = root or [i.name for i in ring.list("root")]
    if not root_names:
        raise SigningKeyError(
            "No root key in the workspace; create one with 'edgeship keys create --role root' "
            "(root keys sign the trust root and every later rotation)."
        )
    old: TrustRoot | None = None
    if previous is not None:
        old = load_trust_root(_read(previous))
    new = TrustRoot.build(
        root=_public_keys(ring, root_names, "root"),
        release=_public_keys(ring, release, "release"),
        hub=_public_keys(ring, hub, "hub"),
        root_threshold=root_threshold,
        release_threshold=release_threshold,
        hub_threshold=hub_threshold,
        version=version if version is not None else (old.version + 1 if old else 1),
        expires=datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=expires_days)
        if expires_days is not None
        else None,
    )
    signers = _signers(ring, root_names, old, sign_with or [])
    envelope = sign_trust_root(new, signers)
    # Check before writing that the agent will accept what we write.
    if old is not None:
        rotate(old, envelope)
    else:
        load_trust_root(envelope)
    atomic_write_text(output, envelope.to_json())
    console.print(
        f"Wrote trust root version {new.version} to {output}, signed by {', '.join(s.name for s in signers)}",
        highlight=False,
    )
    for role_name, role_def in new.roles.items():
        console.print(f"  {role_name}: {role_def.threshold} of {len(role_def.keyids)}", highlight=False)


def _public_keys(ring: Keyring, names: list[str], role: str) -> list[PublicKey]:
    keys = []
    for name in names:
        info = ring.get(name)
        if info.role != role:
            raise InputError(f"Key {name!r} was created for role {info.role}, not {role}; pick a {role} key.")
        keys.append(info.public_key)
    return keys


def _signers(ring: Keyring, root_names: list[str], old: TrustRoot | None, extra: list[str]) -> list[Signer]:
    """The new root's keys, every workspace key of the old root role, and ``extra``."""
    names = list(dict.fromkeys(root_names + extra))
    if old is not None:
        old_ids = set(old.role("root").keyids)
        names += [i.name for i in ring.list() if i.keyid in old_ids and i.name not in names]
    return [ring.signer(name) for name in names]


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"Cannot read {path}: {exc.strerror}.") from exc
