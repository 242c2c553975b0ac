"""``package_module``: registered models + Azure ML configs → a signed module directory.

The order of the steps is the order of trust: everything that goes into the
module is built first (wheelhouse, bundle, image, target artifacts), then listed
by digest in the manifest, and the manifest alone is signed. The output folder and
the workspace copy appear only when every step has succeeded (``atomic_dir``), so
a failure or Ctrl-C leaves no half-written module behind and releases the
reserved version.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from rich.console import Console

from edgeship.errors import InputError, PackagingError
from edgeship.fsutil import atomic_dir, atomic_write_bytes
from edgeship.modules.manifest import (
    ENVELOPE_FILE,
    MANIFEST_FILE,
    ArtifactRef,
    BundleRef,
    EnvironmentRef,
    ImageRef,
    ModelPin,
    ModuleManifest,
    Parts,
    Resources,
)
from edgeship.modules.plain import SCHEMA_VERSION, SCHEMA_VERSIONS
from edgeship.modules.store import ModuleStore, StoredModule
from edgeship.modules.verify import file_digest
from edgeship.packager.bundle import BundleInfo, build_bundle
from edgeship.packager.config import (
    DeploymentConfig,
    InferenceConfig,
    check_module_name,
    derive_module_name,
    load_deployment_config,
    load_inference_config,
)
from edgeship.packager.targets import TargetSpec, target_spec, write_target
from edgeship.packager.wheelhouse import build_wheelhouse
from edgeship.registry import Model, ModelRef
from edgeship.signing import MODULE_PAYLOAD_TYPE, Keyring, Signer, sign_envelope
from edgeship.workspace import Workspace

__all__ = ["KEYS_FILE", "PackageRequest", "PackageResult", "package_module"]

KEYS_FILE = "service-keys.json"
PARTS_PREFIX = "parts/"  # packager/parts.py's PARTS_DIR
DEFAULT_BASE_IMAGE = "python:3.11-slim"
_TARGETS = ("local", "iotedge", "aci", "aks", "fpga")
FPGA_VARIANT_TAG = "fpga-int8"  # the tag edgeship.fpga.variant gives int8 variants (ADR 0008)
_SWAGGER_TIMEOUT_S = 120  # seconds the entry script may take to import when the OpenAPI document is made


@dataclass(frozen=True)
class PackageRequest:
    """What the user asked for; every path is as given on the command line."""

    models: Sequence[ModelRef]
    output: Path
    inference_config: Path | None = None
    deployment_config: Path | None = None
    target: str | None = None
    base_image: str = DEFAULT_BASE_IMAGE
    image: bool | None = None  # None: build when a Docker engine answers
    name: str | None = None
    signing_keys: Sequence[str] = ()  # release key names; empty: every release key of the workspace
    push: str | None = None
    variant: str = "fp32"
    accelerator: str = "none"
    execution_providers: Sequence[str] = ("CPUExecutionProvider",)
    force: bool = False  # replace an existing folder that is not a module directory
    schema_version: int = SCHEMA_VERSION  # 2: artifacts also as content-addressed parts (ADR 0028); 1: bundle only
    resources_from_profile: bool = False  # cpu/memoryInGB from the models' stored profile (edgeship.profiling.sizing)


@dataclass(frozen=True)
class PackageResult:
    manifest: ModuleManifest
    output: Path
    stored: StoredModule
    warnings: tuple[str, ...] = field(default=())


def _resolve_models(workspace: Workspace, refs: Sequence[ModelRef]) -> list[Model]:
    if not refs:
        raise InputError("Give at least one model with -m NAME:VERSION.")
    models = []
    for ref in refs:
        if ref.version is None:
            raise InputError(
                f"Pin the model version for packaging: write {ref.name}:VERSION (modules are reproducible)."
            )
        model = Model.get(workspace, ref.name, ref.version)
        model.ensure_intact()
        models.append(model)
    if len({m.name for m in models}) != len(models):
        raise InputError("A module holds one version per model name; remove the duplicate -m.")
    return models


def _require_fpga_variants(models: Sequence[Model]) -> None:
    """FPGA modules carry int8 variants only: an fp32 model would be shipped to hardware that cannot run it."""
    for model in models:
        if model.tags.get("variant") != FPGA_VARIANT_TAG:
            raise InputError(
                f"Model {model.name}:{model.version} is not an int8 FPGA variant (no tag variant={FPGA_VARIANT_TAG}); "
                f"run 'edgeship fpga quantize -m {model.name}:{model.version} --calibration DATA' first and package "
                "the version it registers."
            )
        if model.tags.get("scales", "pow2") != "pow2":
            raise InputError(
                f"Model {model.name}:{model.version} is an int8 CPU variant (scales={model.tags['scales']}) that FPGAs "
                f"cannot run; quantize {model.tags.get('parent', model.name)} again with 'edgeship fpga quantize' "
                "without --scales float."
            )


def _signers(workspace: Workspace, names: Sequence[str]) -> list[Signer]:
    ring = Keyring(workspace)
    chosen = list(names) or [k.name for k in ring.list("release")]
    if not chosen:
        raise InputError(
            "No release key to sign the module with; create one with 'edgeship keys create --role release'."
        )
    signers = []
    for name in chosen:
        info = ring.get(name)
        if info.role != "release":
            raise InputError(f"Key {name!r} has role {info.role!r}; modules are signed with release keys.")
        signers.append(ring.signer(name))
    return signers


def _openapi_digest(entry_script: Path, source_dir: Path, warnings: list[str]) -> str | None:
    """Digest of the OpenAPI document the scoring server will serve, made in a child process.

    Importing the script runs the user's top-level code, so it happens in a separate
    interpreter with a time limit; ``init()`` is never called.
    """
    probe = (
        "import importlib.util, json, sys\n"
        "from pathlib import Path\n"
        "from edgeship.scoring.shims import install_shims\n"
        "from edgeship.scoring.swagger import build_swagger\n"
        "install_shims()\n"
        "script = Path(sys.argv[1]); sys.path.insert(0, sys.argv[2])\n"
        "spec = importlib.util.spec_from_file_location('score', script)\n"
        "mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)\n"
        "try:\n"
        "    doc = build_swagger(mod.run, 'score', script.parent, '2')\n"
        "except Exception:\n"
        "    sys.exit(3)\n"
        "sys.stdout.write(json.dumps(doc, sort_keys=True))\n"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", probe, str(entry_script), str(source_dir)],
            capture_output=True,
            timeout=_SWAGGER_TIMEOUT_S,
            cwd=source_dir,
        )
    except subprocess.TimeoutExpired:
        warnings.append(f"importing {entry_script.name} took over {_SWAGGER_TIMEOUT_S} s; no OpenAPI digest recorded.")
        return None
    if done.returncode == 3:
        return None  # no inference-schema decorators: no document
    if done.returncode != 0:
        last = (done.stderr.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
        warnings.append(f"could not import {entry_script.name} to make its OpenAPI document: {last}")
        return None
    return _bytes_digest(done.stdout)


def _bytes_digest(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def _docker_wanted(request: PackageRequest, warnings: list[str]) -> bool:
    if request.image is False:
        return False
    from edgeship.packager.image import docker_client

    try:
        docker_client()
    except PackagingError:
        if request.image:
            raise
        warnings.append("no Docker engine reachable: packaged the bundle only (pass --image to require an image).")
        return False
    return True


def package_module(workspace: Workspace, request: PackageRequest, console: Console | None = None) -> PackageResult:
    """Build, sign and store one module; see the module docstring for the guarantees."""
    console = console or Console(stderr=True)
    workspace.require()
    output = _checked_output(request.output, request.force)
    request = replace(request, output=output)
    if request.schema_version not in SCHEMA_VERSIONS:
        raise InputError(f"--schema-version {request.schema_version} is unknown; use 1 or 2.")
    if request.target is not None and request.target not in _TARGETS:
        raise InputError(f"Unknown --target {request.target!r}; use one of: {', '.join(_TARGETS)}.")
    models = _resolve_models(workspace, request.models)
    signers = _signers(workspace, request.signing_keys)
    warnings: list[str] = []
    inference = load_inference_config(request.inference_config) if request.inference_config else None
    deployment = (
        load_deployment_config(request.deployment_config, target=request.target) if request.deployment_config else None
    )
    warnings += list(inference.warnings if inference else ()) + list(deployment.warnings if deployment else ())
    if request.resources_from_profile:  # the dc's cpu/memoryInGB from 'edgeship model profile' (ADR 0036)
        from edgeship.profiling.sizing import resources_from_profile

        if deployment is None:
            raise InputError("--resources-from-profile replaces the deploymentconfig's cpu and memoryInGB; give --dc.")
        cpu, memory, sized = resources_from_profile(models, deployment.cpu, deployment.memory_gb)
        deployment = replace(deployment, cpu=cpu, memory_gb=memory)
        warnings += sized
    target = request.target or (deployment.compute_type if deployment else "local")
    if target == "fpga":
        _require_fpga_variants(models)
    if inference is None and len(models) != 1:
        raise InputError("Without --ic (an entry script) a module serves exactly one model; give one -m.")
    requirements = list(inference.requirements) if inference else []
    if inference is None and models[0].model_framework == "tflite":
        requirements.append("ai-edge-litert")
    name = check_module_name(request.name or derive_module_name(models[0].name, target), target,
                             given=request.name is not None)  # before any work: the wheelhouse takes a while
    with_image = _docker_wanted(request, warnings)

    store = ModuleStore(workspace)
    version = store.reserve(name)
    try:
        with atomic_dir(output) as build, tempfile.TemporaryDirectory(
            dir=workspace.tmp_dir, prefix="package-"
        ) as scratch:
            build_wheelhouse(
                requirements, Path(scratch) / "wheelhouse", cache_dir=workspace.cache_dir / "wheels", console=console
            )
            with console.status("writing the bundle"):
                bundle = build_bundle(
                    build / "bundle.tar",
                    models=models,
                    wheelhouse=Path(scratch) / "wheelhouse",
                    source_dir=inference.source_directory if inference else None,
                    entry_script=inference.entry_script if inference else None,
                    exclude=[output],
                )
            image_ref: ImageRef | None = None
            tag = f"edgeship/{name.lower()}:{version}"
            if with_image:
                from edgeship.packager.image import build_image, push_image

                base = request.base_image
                info = build_image(
                    build / "bundle.tar",
                    tag=tag,
                    base_image=base,
                    bundle_digest=bundle.digest,
                    archive_path=build / "image.tar",
                    console=console,
                )
                pushed = push_image(tag, request.push, console=console) if request.push else None
                assert info.archive_digest is not None  # archive_path was given
                archive = ArtifactRef(path="image.tar", digest=info.archive_digest, size=info.size)
                image_ref = ImageRef(id=info.id, tag=pushed or tag, baseImage=base, archive=archive)
            keys = _service_keys(deployment) if deployment is not None and deployment.auth_enabled else None
            if keys:
                atomic_write_bytes(build / KEYS_FILE, json.dumps(keys, indent=2).encode(), mode=0o600)
            if target != "local":
                spec = target_spec(
                    name,
                    str(version),
                    image_ref.tag if image_ref else tag,
                    deployment,
                    inference,
                    module_digest=bundle.digest,
                )
                if keys:
                    spec = _with_keys(spec, keys)
                if target in ("aci", "aks", "iotedge"):
                    write_target(target, spec, build / "targets")
                    if image_ref is None:
                        _mark_unbuilt_image(build / "targets", tag, warnings)
            parts = _parts(build, bundle, image_ref) if request.schema_version >= 2 else None
            openapi = None
            if inference is not None:
                source = inference.source_directory or inference.entry_script.parent
                openapi = _openapi_digest(inference.entry_script, source, warnings)
            manifest = _manifest(
                request, name, version, target, models, inference, deployment, bundle, image_ref, openapi, build
            )
            if parts is not None:
                manifest = manifest.model_copy(update={"schema_version": 2, "parts": parts})
                manifest = ModuleManifest.from_bytes(manifest.to_bytes())  # the agent's rules, before signing
            manifest_bytes = manifest.to_bytes()
            envelope = sign_envelope(manifest_bytes, MODULE_PAYLOAD_TYPE, signers)
            atomic_write_bytes(build / MANIFEST_FILE, manifest_bytes)
            atomic_write_bytes(build / ENVELOPE_FILE, envelope.to_json().encode("utf-8"))
            stored = store.commit(manifest, build, _bytes_digest(manifest_bytes))
    except BaseException:
        store.release(name, version)
        raise
    return PackageResult(manifest=manifest, output=output, stored=stored, warnings=tuple(warnings))


def _mark_unbuilt_image(folder: Path, tag: str, warnings: list[str]) -> None:
    """Say in each YAML target file, and on the console, that its image tag was never built (no image)."""
    why = (f"the image {tag} was not built (packaged without an image): build it from bundle.tar "
           "('edgeship package --image --push REGISTRY') or replace the image reference before deploying")
    for path in sorted(folder.glob("*.yaml")):
        path.write_text(f"# NOTE: {why}\n" + path.read_text())
    warnings.append(f"{why} ({', '.join(p.name for p in sorted(folder.iterdir()))}).")


def _parts(build: Path, bundle: BundleInfo, image: ImageRef | None) -> Parts:
    """The bundle's and image's parts in ``build/parts`` (``packager/parts.py``)."""
    from edgeship.packager.parts import PARTS_DIR, build_parts, image_parts

    parts = build_parts(bundle.path, build / PARTS_DIR)
    if image is None or image.archive is None:
        return parts
    layers = image_parts(build / image.archive.path, build / PARTS_DIR, image.id)
    return parts.model_copy(update={"image": layers})


def _checked_output(path: Path, force: bool) -> Path:
    """The output folder, resolved once; never the current folder, an ancestor of it, or someone's files."""
    output = path.expanduser().resolve()
    cwd = Path.cwd().resolve()
    if output == cwd or output in cwd.parents:
        raise InputError(f"-o {path} is the current folder or contains it; name a new folder for the module.")
    if output.exists() and not output.is_dir():
        raise InputError(f"-o {path} is a file; name a folder for the module.")
    if output.is_dir() and any(output.iterdir()) and not (output / MANIFEST_FILE).exists() and not force:
        raise InputError(
            f"-o {path} holds files that are not a module; the module replaces the folder whole, "
            "so name a new folder (or pass --force to replace it)."
        )
    return output


def _service_keys(deployment: DeploymentConfig) -> dict[str, str]:
    """The Bearer keys of the service: the configured ones, else fresh random ones (as Azure ML)."""
    return {
        "primaryKey": deployment.primary_key or secrets.token_urlsafe(32),
        "secondaryKey": deployment.secondary_key or secrets.token_urlsafe(32),
    }


def _with_keys(spec: TargetSpec, keys: dict[str, str]) -> TargetSpec:
    return replace(spec, primary_key=keys["primaryKey"], secondary_key=keys["secondaryKey"])


def _manifest(
    request: PackageRequest,
    name: str,
    version: int,
    target: str,
    models: list[Model],
    inference: InferenceConfig | None,
    deployment: DeploymentConfig | None,
    bundle: BundleInfo,
    image: ImageRef | None,
    openapi: str | None,
    build: Path,
) -> ModuleManifest:
    files = []
    for path in sorted(p for p in build.rglob("*") if p.is_file()):
        rel = path.relative_to(build).as_posix()
        if rel in (MANIFEST_FILE, ENVELOPE_FILE) or rel.startswith(PARTS_PREFIX):
            continue  # parts/ is covered by the manifest's parts
        digest, size = file_digest(path)
        files.append(ArtifactRef(path=rel, digest=digest, size=size))
    entry = inference.entry_script if inference else None
    source = inference.source_directory if inference else None
    entry_rel = None
    if entry is not None:
        entry_rel = Path(entry).relative_to(source).as_posix() if source else Path(entry).name
    accelerator = "fpga" if target == "fpga" else request.accelerator
    fpga = target == "fpga"  # FPGA modules carry the int8 variant and prefer the Vitis AI provider (ADR 0008)
    variant = FPGA_VARIANT_TAG if fpga else request.variant
    providers = ["VitisAIExecutionProvider", "CPUExecutionProvider"] if fpga else list(request.execution_providers)
    return ModuleManifest(
        name=name,
        version=version,
        variant=variant,
        target=target,
        models=[ModelPin(name=m.name, version=m.version, digest=m.digest, framework=m.model_framework) for m in models],
        entryScript=entry_rel,
        sourceDirectory="src" if entry is not None else None,
        environment=EnvironmentRef(
            lockDigest=bundle.env_lock_digest,
            python=f"{sys.version_info.major}.{sys.version_info.minor}",
            requirements=sorted(inference.requirements if inference else ()),
        ),
        bundle=BundleRef(path="bundle.tar", digest=bundle.digest, size=bundle.size),
        image=image,
        resources=Resources(
            cpu=deployment.cpu if deployment else None,
            memoryInGB=deployment.memory_gb if deployment else None,
            cpuLimit=deployment.cpu_limit if deployment else None,
            memoryInGBLimit=deployment.memory_gb_limit if deployment else None,
            accelerator=accelerator,  # type: ignore[arg-type]
        ),
        ports=[5001],
        authEnabled=bool(deployment and deployment.auth_enabled),
        openapiDigest=openapi,
        executionProviders=providers,
        files=files,
    )
