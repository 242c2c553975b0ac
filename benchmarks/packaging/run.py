"""Packaging benchmark: time and size of the digits module, and the delta of a model-only change.

In a fresh workspace under ``benchmarks/packaging/work/`` (git-ignored) this
script trains and registers the digits example as ``digits:1``, derives
``digits:2`` from it (the same ONNX graph with one weight initializer slightly
perturbed: same size, different bytes) and then packages, through
``edgeship.packager.package.package_module`` (what ``edgeship package`` calls):

1. ``digits:1``, bundle only, with an empty wheel cache (the fresh workspace's);
2. ``digits:1``, bundle only, again (warm wheel cache);
3. ``digits:1`` with an image, built with ``nocache=True`` (Docker build cache cold);
4. ``digits:2`` with an image, right after (model-only change, build cache warm);
5. ``digits:1`` with an image again (every build step cached).

For each run it records the wall time and a breakdown (wheelhouse, bundle, image
build, ``docker save``, copy into the workspace store), the module folder, bundle,
image and archive sizes. For 3 vs 4 it measures the delta: for the bundle, the
bytes after the common prefix, the differing span, and the aligned 4 KiB / 64 KiB
blocks that differ; for the image, the RootFS layers of v2 not in v1 and their
sizes in the ``docker save`` archive. Every delta is compared with the model's
size (target: at most 1.1x, and one image layer).

    python benchmarks/packaging/run.py                   # full run, ~10 minutes on vfs
    python benchmarks/packaging/run.py --no-image        # bundle rows only, ~2 minutes
    python benchmarks/packaging/run.py --report benchmarks/packaging/results-2026-11-28.json

Writes ``results-<date>.json`` beside this file (``--output`` to choose) and prints
the Markdown table that goes into RESULTS.md. Images, tags and the work folder it
created are removed at the end (``--keep`` keeps them). Not a test: nothing here
asserts on timing or sizes.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.metadata
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
EXAMPLE = REPO / "examples" / "sklearn-digits"
MODULE_NAME = "digits-bench"  # own image tags (edgeship/digits-bench:N), apart from the tests' edgeship/digits
BASE_IMAGE = "edgeship-base:bookworm-py3"
TARGET_RATIO = 1.1  # delta bytes over the model's bytes, for the bundle and for the one image layer
LOAD_LIMIT = 1.5  # 1-minute load above which the run waits (2-core machine)
LOAD_WAIT_S = 60
LOAD_MAX_WAITS = 8


# Machine --------------------------------------------------------------------
def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def wait_for_load(enabled: bool) -> list[dict[str, Any]]:
    """Sleep while the 1-minute load is above LOAD_LIMIT, at most LOAD_MAX_WAITS times; returns the samples."""
    samples = [{"at": _now(), "load": load_avg()}]
    waits = 0
    while enabled and samples[-1]["load"][0] > LOAD_LIMIT and waits < LOAD_MAX_WAITS:
        print(f"load {samples[-1]['load']}: waiting {LOAD_WAIT_S} s ({waits + 1}/{LOAD_MAX_WAITS})", flush=True)
        time.sleep(LOAD_WAIT_S)
        waits += 1
        samples.append({"at": _now(), "load": load_avg()})
    return samples


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info(client: Any | None) -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gb = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_gb = round(int(Path("/proc/meminfo").read_text().split()[1]) / 1024 / 1024, 1)
    git = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "memory_gb": mem_gb,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "git_commit": git,
        "git_tracked_changes": bool(dirty),
        "pip_config": subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True
        ).stdout.splitlines(),
        "versions": {
            name: _version(name) for name in ("edgeship", "pip", "docker", "onnx", "onnxruntime", "scikit-learn")
        },
    }
    if client is not None:
        ver = client.version()
        dinfo = client.info()
        base = client.images.get(BASE_IMAGE)
        info["docker"] = {
            "engine": ver.get("Version"),
            "api": ver.get("ApiVersion"),
            "storage_driver": dinfo.get("Driver"),
            "base_image": BASE_IMAGE,
            "base_image_id": base.id,
            "base_image_size": int(base.attrs.get("Size", 0)),
        }
    return info


# Preparation ----------------------------------------------------------------
def copy_example(app: Path) -> None:
    """The example's tracked files (no ``outputs/``), so concurrent edits there cannot leak into v1 vs v2."""
    listed = subprocess.run(
        ["git", "ls-files", "."], cwd=EXAMPLE, capture_output=True, text=True, check=True
    ).stdout.split()
    names = listed or [p.name for p in EXAMPLE.iterdir() if p.is_file()]
    app.mkdir(parents=True)
    for name in names:
        if name != ".gitignore":
            shutil.copy2(EXAMPLE / name, app / name)


def perturb(source: Path, target: Path, seed: int = 1) -> dict[str, Any]:
    """``source`` with noise added to its largest float initializer; same byte count, different bytes."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(source))
    floats = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT]
    tensor = max(floats, key=lambda t: int(np.prod(t.dims)))
    array = numpy_helper.to_array(tensor)
    rng = np.random.default_rng(seed)
    noisy = (array + rng.normal(0.0, 1e-3 * float(array.std()), array.shape)).astype(np.float32)
    replacement = numpy_helper.from_array(noisy, tensor.name)
    if not tensor.HasField("raw_data"):  # keep the original encoding so the size stays the same
        replacement = onnx.helper.make_tensor(tensor.name, tensor.data_type, tensor.dims, noisy.ravel().tolist())
    tensor.CopyFrom(replacement)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(model.SerializeToString())
    a, b = source.read_bytes(), target.read_bytes()
    differing = sum(x != y for x, y in zip(a, b, strict=False)) + abs(len(a) - len(b))
    return {
        "initializer": tensor.name,
        "shape": list(array.shape),
        "tensor_bytes": int(array.nbytes),
        "model_bytes_v1": len(a),
        "model_bytes_v2": len(b),
        "same_size": len(a) == len(b),
        "bytes_differing": differing,
    }


def prepare(work: Path) -> tuple[Any, Path, dict[str, Any]]:
    """Fresh workspace with digits:1 (trained) and digits:2 (perturbed) and a release key."""
    from edgeship.registry import Model
    from edgeship.signing import Keyring
    from edgeship.workspace import Workspace

    ws = Workspace.at(work / "ws")
    copy_example(work / "app")
    t0 = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            str(EXAMPLE / "train.py"),
            "--output-dir",
            str(work / "train"),
            "--register",
            "--workspace",
            str(ws.root),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    train_s = time.perf_counter() - t0
    model_info = perturb(work / "train" / "digits.onnx", work / "train-v2" / "digits.onnx")
    import onnxruntime

    onnxruntime.InferenceSession(str(work / "train-v2" / "digits.onnx"), providers=["CPUExecutionProvider"])
    v2 = Model.register(
        ws,
        work / "train-v2" / "digits.onnx",
        "digits",
        model_framework="onnx",
        description="digits:1 with one initializer perturbed (packaging benchmark)",
    )
    v1 = Model.get(ws, "digits", 1)
    Keyring(ws).create("release")
    model_info.update(train_s=round(train_s, 2), v1_digest=v1.digest, v2_digest=v2.digest, v2_version=v2.version)
    return ws, work / "app", model_info


# Instrumentation ------------------------------------------------------------
class Timers:
    """Wall time of the packaging phases, by wrapping the functions package_module calls."""

    def __init__(self) -> None:
        self.phases: dict[str, float] = {}

    def wrap(self, owner: Any, attr: str, phase: str) -> None:
        original = getattr(owner, attr)

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.phases[phase] = self.phases.get(phase, 0.0) + time.perf_counter() - t0

        setattr(owner, attr, timed)


class BuildLog:
    """Wraps the Docker client's build: optional ``nocache``, counts steps and cache hits, keeps image ids."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.nocache = False
        self.steps = 0
        self.cached = 0
        self.stage_ids: list[str] = []  # image id at the end of each build stage
        self._original = client.api.build
        client.api.build = self._build

    def reset(self, nocache: bool) -> None:
        self.nocache, self.steps, self.cached, self.stage_ids = nocache, 0, 0, []

    def _build(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        kwargs["nocache"] = self.nocache
        last_id = None
        for chunk in self._original(*args, **kwargs):
            line = str(chunk.get("stream", "")).strip() if isinstance(chunk, dict) else ""
            if line.startswith("Step "):
                self.steps += 1
                if " : FROM " in line and last_id is not None:
                    self.stage_ids.append(last_id)
            elif line == "---> Using cache":
                self.cached += 1
            elif line.startswith("---> ") and " " not in line[5:]:
                last_id = line[5:]
            yield chunk
        if last_id is not None:
            self.stage_ids.append(last_id)


# Measurements ---------------------------------------------------------------
def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def bundle_delta(old: Path, new: Path, model_bytes: int) -> dict[str, Any]:
    a, b = old.read_bytes(), new.read_bytes()
    n = min(len(a), len(b))
    prefix = first_difference(a, b)
    suffix = 0
    while suffix < n - prefix and a[len(a) - 1 - suffix] == b[len(b) - 1 - suffix]:
        suffix += 1
    blocks = {}
    for size in (4096, 65536):
        count = max(len(a), len(b))
        total = (count + size - 1) // size
        differ = sum(1 for i in range(total) if a[i * size : (i + 1) * size] != b[i * size : (i + 1) * size])
        blocks[str(size)] = {"blocks_differ": differ, "bytes": differ * size, "of_blocks": total}
    tail = len(b) - prefix
    span = len(b) - prefix - suffix
    return {
        "size_v1": len(a),
        "size_v2": len(b),
        "common_prefix": prefix,
        "common_suffix": suffix,
        "tail_after_prefix": tail,
        "tail_ratio": round(tail / model_bytes, 3),
        "differing_span": span,
        "span_ratio": round(span / model_bytes, 3),
        "blocks": {k: {**v, "ratio": round(v["bytes"] / model_bytes, 3)} for k, v in blocks.items()},
    }


def first_difference(a: bytes, b: bytes) -> int:
    n = min(len(a), len(b))
    lo = 0
    step = 1 << 16
    while lo < n and a[lo : lo + step] == b[lo : lo + step]:
        lo += step
    while lo < n and a[lo] == b[lo]:
        lo += 1
    return lo


def count_wheels(bundle: Path) -> int:
    with tarfile.open(bundle) as tar:
        return sum(1 for m in tar if m.isfile() and m.name.startswith("wheelhouse/"))


def archive_layers(archive: Path) -> list[dict[str, Any]]:
    """Layers of a ``docker save`` archive in RootFS order: diff id, layer tar bytes, files inside."""
    with tarfile.open(archive) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))[0]  # type: ignore[arg-type]
        config = json.load(tar.extractfile(manifest["Config"]))  # type: ignore[arg-type]
        diff_ids = config["rootfs"]["diff_ids"]
        layers = []
        for path, diff_id in zip(manifest["Layers"], diff_ids, strict=True):
            member = tar.getmember(path)
            while member.issym() or member.islnk():  # newer engines deduplicate with links
                member = tar.getmember(os.path.normpath(os.path.join(os.path.dirname(path), member.linkname)))
            inner = tar.extractfile(member)
            with tarfile.open(fileobj=inner) as layer:
                files = [m for m in layer.getmembers() if m.isfile()]
            layers.append(
                {
                    "diff_id": diff_id,
                    "tar_bytes": member.size,
                    "files": len(files),
                    "file_bytes": sum(m.size for m in files),
                    "sample": [m.name for m in files[:3]],
                }
            )
        return layers


def image_delta(client: Any, v1: dict[str, Any], v2: dict[str, Any], model_bytes: int) -> dict[str, Any]:
    l1 = archive_layers(Path(v1["archive_path"]))
    l2 = archive_layers(Path(v2["archive_path"]))
    old = {layer["diff_id"] for layer in l1}
    new_layers = [layer for layer in l2 if layer["diff_id"] not in old]
    delta = sum(layer["tar_bytes"] for layer in new_layers)
    history = [
        {"size": h.get("Size", 0), "created_by": str(h.get("CreatedBy", ""))[:90]}
        for h in client.api.history(v2["image_id"])
        if h.get("Size", 0)
    ]
    return {
        "layers_v1": len(l1),
        "layers_v2": len(l2),
        "layers_shared": len(l2) - len(new_layers),
        "layers_new": len(new_layers),
        "new_layers": new_layers,
        "new_layer_bytes": delta,
        "ratio": round(delta / model_bytes, 3),
        "history_v2_nonempty": history,
        "leading_layers_shared": next(
            (i for i, (a, b) in enumerate(zip(v1["layers"], v2["layers"], strict=False)) if a != b),
            min(len(v1["layers"]), len(v2["layers"])),
        ),
    }


# Runs -----------------------------------------------------------------------
def package_once(
    ws: Any,
    app: Path,
    out: Path,
    model_version: int,
    *,
    image: bool,
    base_image: str,
    timers: Timers,
    build_log: BuildLog | None,
    nocache: bool = False,
) -> dict[str, Any]:
    from rich.console import Console

    from edgeship.packager.package import PackageRequest, package_module
    from edgeship.registry import ModelRef

    timers.phases = {}
    if build_log is not None:
        build_log.reset(nocache)
    request = PackageRequest(
        models=[ModelRef("digits", model_version)],
        output=out,
        inference_config=app / "inferenceconfig.json",
        deployment_config=app / "deploymentconfig.json",
        target="local",
        image=image,
        base_image=base_image,
        name=MODULE_NAME,
    )
    load_before = load_avg()
    t0 = time.perf_counter()
    result = package_module(ws, request, console=Console(stderr=True, quiet=True))
    wall = time.perf_counter() - t0
    manifest = result.manifest
    row: dict[str, Any] = {
        "model": f"digits:{model_version}",
        "module": f"{manifest.name}:{manifest.version}",
        "image": image,
        "wall_s": round(wall, 2),
        "phases_s": {k: round(v, 2) for k, v in timers.phases.items()},
        "load_before": load_before,
        "load_after": load_avg(),
        "module_dir_bytes": folder_bytes(out),
        "bundle_bytes": manifest.bundle.size,
        "bundle_digest": manifest.bundle.digest,
        "env_lock_digest": manifest.environment.lock_digest,
        "wheels": count_wheels(out / "bundle.tar"),
        "warnings": list(result.warnings),
    }
    if image and manifest.image is not None:
        client = build_log.client if build_log else None
        img = client.images.get(manifest.image.id)
        row.update(
            image_id=img.id,
            image_tag=manifest.image.tag,
            image_size=int(img.attrs.get("Size", 0)),
            archive_bytes=manifest.image.archive.size if manifest.image.archive else None,
            archive_path=str(out / "image.tar"),
            layers=list(img.attrs.get("RootFS", {}).get("Layers", [])),
            build_nocache=nocache,
            build_steps=build_log.steps if build_log else None,
            build_steps_cached=build_log.cached if build_log else None,
            stage_ids=list(build_log.stage_ids) if build_log else [],
        )
    print(f"  {row['model']} image={image}: {row['wall_s']} s {row['phases_s']}", flush=True)
    return row


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = args.work.resolve()
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    client = None
    build_log = None
    if not args.no_image:
        import docker

        client = docker.from_env()
        build_log = BuildLog(client)
        import edgeship.packager.image as image_mod

        image_mod_client = client

        def docker_client() -> Any:
            image_mod_client.ping()
            return image_mod_client

        image_mod.docker_client = docker_client  # type: ignore[assignment]

    import edgeship.packager.image as image_mod
    import edgeship.packager.package as package_mod
    import edgeship.packager.wheelhouse as wheelhouse_mod

    # edgeship's own wheel is built from a snapshot of the committed tree (HEAD), not from the live
    # checkout: other engineers edit it while this runs, and a changed wheel would show up as a
    # (non-model) bundle delta. It also keeps the benchmarks' work folders out of the source copy.
    snapshot = work / "edgeship-src"
    snapshot.mkdir()
    archive = subprocess.run(["git", "archive", "HEAD"], cwd=REPO, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(snapshot, filter="data")
    wheelhouse_mod._edgeship_source = lambda: snapshot  # type: ignore[assignment]

    timers = Timers()
    timers.wrap(package_mod, "build_wheelhouse", "wheelhouse")
    timers.wrap(package_mod, "build_bundle", "bundle")
    timers.wrap(image_mod, "_stream_build", "image_build")
    timers.wrap(image_mod, "_save", "docker_save")
    timers.wrap(package_mod.ModuleStore, "commit", "store_copy")
    timers.wrap(package_mod, "_openapi_digest", "openapi")

    results: dict[str, Any] = {
        "date": dt.date.today().isoformat(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "load_wait": wait_for_load(not args.no_wait_load),
        "machine": machine_info(client),
    }
    print(f"machine: {results['machine']}", flush=True)
    ws, app, model = prepare(work)
    results["model"] = model
    model_bytes = model["model_bytes_v2"]
    runs: dict[str, Any] = {}
    out = work / "out"
    created_ids: list[str] = []
    tags: list[str] = []
    try:
        print("bundle only, cold wheel cache", flush=True)
        runs["bundle_cold"] = package_once(
            ws, app, out / "bundle-cold", 1, image=False, base_image=args.base_image, timers=timers, build_log=build_log
        )
        print("bundle only, warm wheel cache", flush=True)
        runs["bundle_warm"] = package_once(
            ws, app, out / "bundle-warm", 1, image=False, base_image=args.base_image, timers=timers, build_log=build_log
        )
        if not args.no_image:
            print("v1 with image, build cache cold (nocache=True)", flush=True)
            runs["image_v1_cold"] = package_once(
                ws,
                app,
                out / "image-v1",
                1,
                image=True,
                nocache=True,
                base_image=args.base_image,
                timers=timers,
                build_log=build_log,
            )
            print("v2 with image (model-only change), build cache warm", flush=True)
            runs["image_v2"] = package_once(
                ws,
                app,
                out / "image-v2",
                model["v2_version"],
                image=True,
                base_image=args.base_image,
                timers=timers,
                build_log=build_log,
            )
            print("v1 with image again, every step cached", flush=True)
            runs["image_v1_warm"] = package_once(
                ws,
                app,
                out / "image-v1-warm",
                1,
                image=True,
                base_image=args.base_image,
                timers=timers,
                build_log=build_log,
            )
            for key in ("image_v1_cold", "image_v2", "image_v1_warm"):
                tags.append(runs[key]["image_tag"])
                created_ids += runs[key]["stage_ids"]
        results["runs"] = runs
        results["bundle_reproducible"] = runs["bundle_cold"]["bundle_digest"] == runs["bundle_warm"]["bundle_digest"]
        if not args.no_image:
            results["bundle_delta"] = bundle_delta(
                out / "image-v1" / "bundle.tar", out / "image-v2" / "bundle.tar", model_bytes
            )
            results["image_delta"] = image_delta(client, runs["image_v1_cold"], runs["image_v2"], model_bytes)
            results["image_v1_bundle_equals_bundle_only"] = (
                runs["image_v1_cold"]["bundle_digest"] == runs["bundle_cold"]["bundle_digest"]
            )
        else:
            results["bundle_delta"] = None
        results["load_end"] = load_avg()
    finally:
        if client is not None and not args.keep:
            results["cleanup"] = cleanup(client, tags, created_ids)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return results


def cleanup(client: Any, tags: list[str], ids: list[str]) -> list[str]:
    """Remove the tags this run made, then the first-stage (venv) images its builds left dangling."""
    import docker.errors

    done = []
    for ref in [*dict.fromkeys(tags), *dict.fromkeys(ids)]:
        try:
            image = client.images.get(ref)
        except docker.errors.ImageNotFound:
            continue
        if ref in ids and image.tags:  # a stage image someone tagged since: not ours to remove
            continue
        try:
            client.images.remove(ref)
            done.append(ref)
        except docker.errors.APIError as exc:
            done.append(f"{ref}: not removed ({exc.explanation})")
    return done


# Report ---------------------------------------------------------------------
def _mb(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:,.1f} MB"


def report(results: dict[str, Any]) -> str:
    runs = results["runs"]
    model = results["model"]
    mb = model["model_bytes_v2"]
    lines = [
        "| run | wall time | wheelhouse | bundle | image build | docker save | store copy | steps cached |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    labels = {
        "bundle_cold": "v1 bundle only, cold wheel cache",
        "bundle_warm": "v1 bundle only, warm wheel cache",
        "image_v1_cold": "v1 + image, Docker build cache cold (nocache)",
        "image_v2": "v2 + image right after v1 (model-only change)",
        "image_v1_warm": "v1 + image again (all steps cached)",
    }
    for key, label in labels.items():
        r = runs.get(key)
        if not r:
            continue
        p = r["phases_s"]

        def s(name: str, p: dict[str, float] = p) -> str:
            return f"{p[name]:.1f} s" if name in p else "-"

        cached = f"{r['build_steps_cached']}/{r['build_steps']}" if r.get("build_steps") is not None else "-"
        lines.append(
            f"| {label} | **{r['wall_s']:.1f} s** | {s('wheelhouse')} | {s('bundle')} | {s('image_build')} "
            f"| {s('docker_save')} | {s('store_copy')} | {cached} |"
        )
    lines += ["", "| size | bytes | |", "|---|---:|---:|"]
    b = runs["bundle_cold"]
    lines.append(f"| module folder, bundle only | {b['module_dir_bytes']:,} | {_mb(b['module_dir_bytes'])} |")
    lines.append(f"| bundle.tar ({b['wheels']} wheels) | {b['bundle_bytes']:,} | {_mb(b['bundle_bytes'])} |")
    if "image_v1_cold" in runs:
        i = runs["image_v1_cold"]
        lines.append(f"| module folder, with image | {i['module_dir_bytes']:,} | {_mb(i['module_dir_bytes'])} |")
        lines.append(f"| image (`docker image inspect` Size) | {i['image_size']:,} | {_mb(i['image_size'])} |")
        lines.append(f"| image.tar (`docker save`) | {i['archive_bytes']:,} | {_mb(i['archive_bytes'])} |")
        base = results["machine"].get("docker", {}).get("base_image_size")
        if base:
            lines.append(f"| base image {BASE_IMAGE} | {base:,} | {_mb(base)} |")
    lines.append(f"| model digits.onnx (v1 = v2 size) | {mb:,} | |")
    d = results.get("bundle_delta")
    if d:
        lines += [
            "",
            f"Delta v1 → v2 (model bytes M = {mb:,}; {model['bytes_differing']:,} of them differ):",
            "",
            "| delta | bytes | x M | target ≤ 1.1x |",
            "|---|---:|---:|---|",
        ]

        def ok(ratio: float) -> str:
            return "met" if ratio <= TARGET_RATIO else "**not met**"

        lines.append(
            f"| bundle: tail after common prefix | {d['tail_after_prefix']:,} | {d['tail_ratio']} "
            f"| {ok(d['tail_ratio'])} |"
        )
        lines.append(
            f"| bundle: differing span (prefix and suffix trimmed) | {d['differing_span']:,} "
            f"| {d['span_ratio']} | {ok(d['span_ratio'])} |"
        )
        for size, blk in d["blocks"].items():
            lines.append(
                f"| bundle: {int(size) // 1024} KiB blocks that differ ({blk['blocks_differ']} of "
                f"{blk['of_blocks']}) | {blk['bytes']:,} | {blk['ratio']} | {ok(blk['ratio'])} |"
            )
        im = results["image_delta"]
        lines.append(
            f"| image: new layers ({im['layers_new']} of {im['layers_v2']}), layer tar bytes "
            f"| {im['new_layer_bytes']:,} | {im['ratio']} | "
            f"{ok(im['ratio']) if im['layers_new'] == 1 else '**not met** (more than one layer)'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=HERE / "work")
    parser.add_argument("--output", type=Path, default=None, help="results JSON (default results-<date>.json here)")
    parser.add_argument("--base-image", default=BASE_IMAGE)
    parser.add_argument("--no-image", action="store_true", help="bundle rows only (no Docker)")
    parser.add_argument("--no-wait-load", action="store_true", help="do not wait for the load to drop")
    parser.add_argument("--keep", action="store_true", help="keep the work folder and the images")
    parser.add_argument("--report", type=Path, default=None, help="print the table of an existing results JSON")
    args = parser.parse_args(argv)
    if args.report:
        print(report(json.loads(args.report.read_text())))
        return 0
    results = run(args)
    output = args.output or HERE / f"results-{results['date']}.json"
    output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {output}")
    print(report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
