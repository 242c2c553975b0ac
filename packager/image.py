"""Container image: a bundle turned into an image with the ``docker`` SDK, saved as ``image.tar``.

Layer order is the contract (see docs/adr/0005-bundle-and-image-layout.md): base
image, non-root user, the virtual environment, the source, and **models last**, so
a model-only change rebuilds exactly one layer whose size is the models' size. The
venv is built in a first stage from the bundle's wheelhouse with
``pip install --no-index --require-hashes``, with no network (``network_mode=none``),
and only the finished venv is copied into the image, so the wheels are not shipped
twice. Everything that varies per build (labels, ``AZUREML_MODEL_DIR``) comes after
the models' ``COPY`` as metadata, which adds no filesystem layer and does not bust
the cache of the layers before it.

``docker save`` output is not byte-stable across builds (layer tars carry build
times); its digest is recorded as built and signed with the module, not reproduced.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from rich.console import Console

from edgeship.errors import PackagingError

__all__ = [
    "APP_ROOT",
    "DEFAULT_BASE_IMAGE",
    "USER_ID",
    "VENV",
    "ImageInfo",
    "build_image",
    "docker_client",
    "push_image",
    "render_dockerfile",
]

DEFAULT_BASE_IMAGE = "python:3.11-slim"
APP_ROOT = "/var/azureml-app"  # where Azure ML v1 images put the app; AZUREML_MODEL_DIR lives under it
VENV = "/opt/edgeship/venv"
USER_ID = 10001  # numeric, so Kubernetes' runAsNonRoot can check it without /etc/passwd
_INSTALL = "/opt/edgeship/install"


@dataclass(frozen=True)
class ImageInfo:
    """A built image. ``size`` is the saved archive's bytes (0 when not saved); ``layers`` the RootFS diff ids."""

    id: str
    tag: str
    archive_path: Path | None
    archive_digest: str | None
    size: int
    image_size: int
    layers: tuple[str, ...]


def docker_client() -> Any:
    """A connected ``docker.DockerClient``; PackagingError when no engine answers."""
    try:
        import docker

        client = docker.from_env(timeout=300)  # seconds; vfs builds and saves are slow
        client.ping()
    except Exception as exc:  # DockerException, connection errors, a missing SDK
        raise PackagingError(f"no Docker engine reachable; start it or pass --no-image ({exc}).") from exc
    return client


def _quote(value: str) -> str:
    """A Dockerfile double-quoted string: JSON escapes plus ``$`` kept literal."""
    return json.dumps(value, ensure_ascii=False).replace("$", "\\$")


def render_dockerfile(
    *,
    base_image: str,
    entry_script: str | None,
    model_paths: list[str],
    port: int = 5001,
    labels: Mapping[str, str] | None = None,
) -> str:
    """The Dockerfile for a bundle's context; pure, so its layer order is testable without Docker.

    ``entry_script`` is the bundle path (``src/score.py``) or None for a no-code
    module; ``model_paths`` are the models' folders in the bundle
    (``azureml-models/<name>/<version>``...). One model sets ``AZUREML_MODEL_DIR`` to
    its version folder, several to the ``azureml-models`` root, as Azure ML does.

    Each instruction costs a container commit (seconds on the vfs storage driver), so
    static metadata sits right after the user is created, where it is cached across
    builds, and what varies with the models (``AZUREML_MODEL_DIR``, labels) is one
    ``ENV`` and one ``LABEL`` after the models' ``COPY``.
    """
    models_root = f"{APP_ROOT}/azureml-models"
    if len(model_paths) == 1:
        name, version = model_paths[0].split("/")[1:3]
        model_dir = f"{models_root}/{name}/{version}"
    else:
        model_dir = models_root
    cmd = [f"{VENV}/bin/edgeship", "serve"]
    env = {
        "PATH": f"{VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "AML_APP_ROOT": f"{APP_ROOT}/src",
    }
    if entry_script:
        rel = entry_script.removeprefix("src/")
        cmd += ["--entry-script", f"{APP_ROOT}/src/{rel}", "--source-dir", f"{APP_ROOT}/src"]
        env["AZUREML_ENTRY_SCRIPT"] = rel
    cmd += ["--model-dir", APP_ROOT, "--host", "0.0.0.0", "--port", str(port)]
    probe = f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{port}/', timeout=4)"
    lines = [
        f"FROM {base_image} AS venv",
        f"COPY requirements.lock wheelhouse {_INSTALL}/",
        f"RUN python3 -m venv {VENV} \\",
        f" && {VENV}/bin/python -m pip install --no-index --no-cache-dir --disable-pip-version-check \\",
        f"      --find-links {_INSTALL} --require-hashes -r {_INSTALL}/requirements.lock",
        "",
        f"FROM {base_image}",
        "RUN if command -v useradd >/dev/null 2>&1; then \\",
        f"      groupadd --system --gid {USER_ID} edgeship \\",
        f"      && useradd --system --uid {USER_ID} --gid {USER_ID} --no-create-home \\",
        f"         --home-dir {APP_ROOT} --shell /usr/sbin/nologin edgeship; \\",
        "    else \\",
        f"      echo 'edgeship:x:{USER_ID}:{USER_ID}::{APP_ROOT}:/usr/sbin/nologin' >> /etc/passwd \\",
        f"      && echo 'edgeship:x:{USER_ID}:' >> /etc/group; \\",
        "    fi",
        "ENV " + " ".join(f"{key}={_quote(value)}" for key, value in env.items()),
        f"WORKDIR {APP_ROOT}",
        f"EXPOSE {port}",
        "HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \\",
        f"    CMD {json.dumps([f'{VENV}/bin/python', '-c', probe])}",
        f"USER {USER_ID}:{USER_ID}",
        f"CMD {json.dumps(cmd)}",
        f"COPY --from=venv {VENV} {VENV}",
        f"COPY src {APP_ROOT}/src",
    ]
    if model_paths:
        lines.append(f"COPY azureml-models {models_root}")
    lines.append(f"ENV AZUREML_MODEL_DIR={_quote(model_dir)}")
    if labels:
        lines.append("LABEL " + " \\\n      ".join(f"{_quote(k)}={_quote(v)}" for k, v in sorted(labels.items())))
    return "\n".join(lines) + "\n"


def _bundle_members(bundle: Path) -> Iterator[tuple[tarfile.TarInfo, IO[bytes] | None]]:
    """Members of a bundle tar, or of an unpacked bundle folder as normalized tar members."""
    if bundle.is_file():
        with tarfile.open(bundle) as tar:
            for member in tar:
                yield member, tar.extractfile(member) if member.isfile() else None
        return
    for path in sorted(bundle.rglob("*")):
        info = tarfile.TarInfo(path.relative_to(bundle).as_posix())
        info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
        if path.is_dir():
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            yield info, None
        elif path.is_file():
            info.size, info.mode = path.stat().st_size, 0o755 if os.access(path, os.X_OK) else 0o644
            with path.open("rb") as handle:
                yield info, handle


def _read_descriptor(bundle: Path) -> dict[str, Any]:
    """``bundle.json`` of a bundle tar or folder ({} when absent)."""
    if bundle.is_dir():
        path = bundle / "bundle.json"
        return json.loads(path.read_text()) if path.is_file() else {}
    with tarfile.open(bundle) as tar:
        try:
            handle = tar.extractfile("bundle.json")
        except KeyError:
            return {}
        return json.loads(handle.read()) if handle else {}


def _write_context(bundle: Path, out: IO[bytes], dockerfile: bytes) -> None:
    """Stream the bundle's installable parts plus ``dockerfile`` into ``out`` as a build context."""
    seen: set[str] = set()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as ctx:
        for member, handle in _bundle_members(bundle):
            top = member.name.split("/", 1)[0]
            if top not in {"requirements.lock", "wheelhouse", "src", "azureml-models"}:
                continue
            if not (member.isfile() or member.isdir()):
                raise PackagingError(f"bundle entry {member.name} is neither a file nor a folder; rebuild it.")
            seen.add(top)
            ctx.addfile(member, handle)
        if not {"requirements.lock", "wheelhouse"} <= seen:
            raise PackagingError(f"{bundle} has no requirements.lock or wheelhouse; it is not an edgeship bundle.")
        if "src" not in seen:  # a no-code module: an empty source folder keeps the layer list the same
            info = tarfile.TarInfo("src")
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            ctx.addfile(info)
        info = tarfile.TarInfo("Dockerfile")
        info.size, info.mode = len(dockerfile), 0o644
        ctx.addfile(info, io.BytesIO(dockerfile))


def _ensure_base(client: Any, base_image: str, console: Console) -> None:
    import docker.errors

    try:
        client.images.get(base_image)
        return
    except docker.errors.ImageNotFound:
        pass
    try:
        with console.status(f"[bold]image[/]: pulling base image {base_image}"):
            client.images.pull(base_image)
    except docker.errors.APIError as exc:
        raise PackagingError(
            f"base image {base_image} is not on this machine and could not be pulled ({exc.explanation}); "
            "pull or build it first, or pass another --base-image."
        ) from exc


def build_image(
    bundle: Path,
    *,
    tag: str,
    base_image: str = DEFAULT_BASE_IMAGE,
    labels: Mapping[str, str] | None = None,
    module_digest: str | None = None,
    bundle_digest: str | None = None,
    port: int = 5001,
    archive_path: Path | None = None,
    console: Console | None = None,
    client: Any = None,
) -> ImageInfo:
    """Build ``tag`` from a bundle (tar or unpacked folder) and, with ``archive_path``, save it there.

    Labels: ``org.opencontainers.image.*``, ``io.edgeship.module.digest`` (the given
    module digest, else the bundle's), ``io.edgeship.bundle.digest`` and
    ``io.edgeship.env-lock.digest``; ``labels`` are added last and win.
    """
    console = console or Console(stderr=True)
    client = client or docker_client()
    import docker.errors

    bundle = Path(bundle)
    if not bundle.exists():
        raise PackagingError(f"bundle {bundle} does not exist; build it first.")
    if bundle_digest is None and bundle.is_file():
        from edgeship.registry.blobs import sha256_file

        bundle_digest = "sha256:" + sha256_file(bundle)
    descriptor = _read_descriptor(bundle)
    model_paths = [str(m["path"]) for m in descriptor.get("models", [])]
    if not descriptor:
        raise PackagingError(f"{bundle} lacks bundle.json; rebuild it with build_bundle.")
    all_labels = {
        "org.opencontainers.image.title": tag.rsplit(":", 1)[0].rsplit("/", 1)[-1],
        "org.opencontainers.image.base.name": base_image,
        "org.opencontainers.image.vendor": "edgeship",
        "io.edgeship.env-lock.digest": str(descriptor.get("envLockDigest", "")),
    }
    if bundle_digest:
        all_labels["io.edgeship.bundle.digest"] = bundle_digest
    if module_digest or bundle_digest:
        all_labels["io.edgeship.module.digest"] = str(module_digest or bundle_digest)
    all_labels.update(labels or {})
    dockerfile = render_dockerfile(
        base_image=base_image,
        entry_script=descriptor.get("entryScript"),
        model_paths=model_paths,
        port=port,
        labels=all_labels,
    )
    _ensure_base(client, base_image, console)
    with tempfile.TemporaryFile(prefix="edgeship-ctx-") as context:
        _write_context(bundle, context, dockerfile.encode())
        context.seek(0)
        image_id = _stream_build(client, context, tag, console)
    image = client.images.get(image_id)
    info = ImageInfo(
        id=image.id,
        tag=tag,
        archive_path=None,
        archive_digest=None,
        size=0,
        image_size=int(image.attrs.get("Size", 0)),
        layers=tuple(image.attrs.get("RootFS", {}).get("Layers", [])),
    )
    if archive_path is None:
        return info
    try:
        digest, size = _save(image, Path(archive_path), console)
    except docker.errors.APIError as exc:
        raise PackagingError(f"docker save of {tag} failed: {exc.explanation}") from exc
    return ImageInfo(info.id, tag, Path(archive_path), digest, size, info.image_size, info.layers)


def _stream_build(client: Any, context: IO[bytes], tag: str, console: Console) -> str:
    import docker.errors

    image_id: str | None = None
    tail: list[str] = []
    try:
        with console.status(f"[bold]image[/]: building {tag}") as status:
            stream = client.api.build(
                fileobj=context,
                custom_context=True,
                tag=tag,
                rm=True,
                forcerm=True,
                network_mode="none",
                pull=False,
                decode=True,
            )
            for chunk in stream:
                if "error" in chunk:
                    last = str(chunk.get("error", "")).strip()
                    raise PackagingError(f"the image build failed: {last} (last output: {' | '.join(tail[-3:])})")
                line = str(chunk.get("stream", "")).strip()
                if line:
                    tail = [*tail[-20:], line]
                    if line.startswith("Step "):
                        status.update(f"[bold]image[/]: {line[:100]}")
                        console.log(f"image: {line[:120]}", style="dim")
                aux = chunk.get("aux")
                if isinstance(aux, dict) and "ID" in aux:
                    image_id = str(aux["ID"])
    except docker.errors.APIError as exc:
        raise PackagingError(f"the Docker engine refused the build: {exc.explanation}") from exc
    if image_id is None:
        raise PackagingError(f"the image build of {tag} ended without an image id: {' | '.join(tail[-3:])}")
    console.log(f"image: built {tag} ({image_id[:19]})")
    return image_id


def _save(image: Any, target: Path, console: Console) -> tuple[str, int]:
    """``docker save`` into ``target`` atomically; returns (``sha256:<hex>``, bytes)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with console.status(f"[bold]image[/]: saving to {target.name}") as status, os.fdopen(fd, "wb") as out:
            for chunk in image.save(named=True):
                out.write(chunk)
                digest.update(chunk)
                size += len(chunk)
                if size % (64 << 20) < len(chunk):
                    status.update(f"[bold]image[/]: saving to {target.name} ({size >> 20} MiB)")
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    console.log(f"image: saved {target.name} ({size >> 20} MiB)")
    return "sha256:" + digest.hexdigest(), size


def push_image(tag: str, registry: str, *, client: Any = None, console: Console | None = None) -> str:
    """Tag ``tag`` under ``registry`` and push it; returns the pushed reference with its digest."""
    import docker.errors

    console = console or Console(stderr=True)
    client = client or docker_client()
    repo, _, version = tag.rpartition(":") if ":" in tag.rsplit("/", 1)[-1] else (tag, "", "latest")
    remote = f"{registry.rstrip('/')}/{repo.rsplit('/', 1)[-1]}"
    pushed: str | None = None
    try:
        client.images.get(tag).tag(remote, tag=version)
        with console.status(f"[bold]image[/]: pushing {remote}:{version}"):
            for chunk in client.api.push(remote, tag=version, stream=True, decode=True):
                if "error" in chunk:
                    raise PackagingError(f"pushing {remote}:{version} failed: {chunk['error']}")
                aux = chunk.get("aux")
                if isinstance(aux, dict) and "Digest" in aux:
                    pushed = str(aux["Digest"])
    except docker.errors.APIError as exc:
        raise PackagingError(f"pushing {remote}:{version} failed: {exc.explanation}") from exc
    return f"{remote}@{pushed}" if pushed else f"{remote}:{version}"
