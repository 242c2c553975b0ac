"""Wheelhouse: every wheel a module needs, for its target platform, so it installs with no network.

Invariants:

- ``dest`` ends up holding exactly the resolved closure of the requirements (plus
  edgeship's own scoring runtime), written atomically: after a failure or Ctrl-C it
  is left as it was.
- The network is used only when the wheel cache cannot satisfy a step. Every pip
  step runs first with ``--no-index --find-links <cache>``; only if that fails is
  it repeated against the index, saving into the cache. A second run with the same
  requirements therefore resolves the same versions, offline. The cache acts as a
  pin: to pick up newer releases, delete ``<workspace>/cache/wheels``.
- edgeship's own wheel is built from a clean copy of its source tree with
  ``SOURCE_DATE_EPOCH`` fixed, so the same source gives a byte-identical wheel (and
  hence the same environment lock). It is never put into the cache: its content
  changes with the source while its file name does not.
- pip runs as a subprocess with an argument list (no shell); its failures become a
  :class:`PackagingError` naming the requirement and pip's last error line.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from rich.console import Console

from edgeship.errors import PackagingError
from edgeship.fsutil import atomic_dir
from edgeship.workspace import Workspace

__all__ = [
    "DEFAULT_SOURCE_DATE_EPOCH",
    "build_edgeship_wheel",
    "build_wheelhouse",
    "default_cache_dir",
    "manylinux_platforms",
]

DEFAULT_SOURCE_DATE_EPOCH = 315532800  # 1980-01-01, the earliest time a zip (wheel) entry can carry
_PIP_TIMEOUT = 1800  # seconds one pip step may take (onnxruntime is a big download)
_SKIP_IN_SOURCE_COPY = shutil.ignore_patterns(
    ".*", "__pycache__", "*.pyc", "build", "dist", "*.egg-info", "tests", "benchmarks", "examples", "docs"
)
_FAILED_REQ = re.compile(
    r"(?:No matching distribution found for|Could not find a version that satisfies the requirement)\s+(\S+)"
)


def default_cache_dir() -> Path:
    """``<workspace>/cache/wheels`` of the current workspace (``EDGESHIP_HOME``)."""
    return Workspace.at().cache_dir / "wheels"


def manylinux_platforms(glibc: tuple[int, int] = (2, 36), arch: str = "x86_64") -> list[str]:
    """pip ``--platform`` tags a system with ``glibc`` accepts, newest first.

    pip matches ``--platform`` literally, so a single ``manylinux2014`` tag would skip
    wheels built only for newer glibc (recent numpy, onnxruntime). Debian bookworm
    (``python:3.11-slim`` and our base image) ships glibc 2.36.
    """
    major, minor = glibc
    tags = [f"manylinux_{major}_{m}_{arch}" for m in range(minor, 16, -1)]
    legacy = {"manylinux2014": 17, "manylinux2010": 12, "manylinux1": 5}
    tags += [f"{name}_{arch}" for name, needs in legacy.items() if minor >= needs]
    return tags


def _pip_env(source_date_epoch: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        SOURCE_DATE_EPOCH=str(source_date_epoch),
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PIP_NO_INPUT="1",
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


def _last_error_line(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR:")]
    return (errors or lines or ["pip gave no output"])[-1]


def _run_pip(args: list[str], what: str, source_date_epoch: int) -> None:
    """Run ``python -m pip <args>``; raise PackagingError saying what failed and pip's last error."""
    cmd = [sys.executable, "-m", "pip", *args]
    try:
        done = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            env=_pip_env(source_date_epoch),
            timeout=_PIP_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise PackagingError(f"pip took longer than {_PIP_TIMEOUT} s for {what}; check the network.") from exc
    if done.returncode != 0:
        output = done.stdout + "\n" + done.stderr
        failed = _FAILED_REQ.findall(output)
        subject = f"requirement {failed[-1]!r}" if failed else what
        raise PackagingError(
            f"pip could not provide {subject}: {_last_error_line(output)} "
            "(check the name and version, and that a wheel exists for the target platform)."
        )


def _target_args(python_version: str, platform: Sequence[str] | None) -> list[str]:
    if not platform:
        return []
    args = ["--only-binary=:all:", "--implementation", "cp", "--python-version", python_version]
    for tag in platform:
        args += ["--platform", tag]
    return args


def _cache_wheels(source: Path, cache: Path, keep_out: set[str]) -> None:
    """Copy new wheels from ``source`` into ``cache``; each lands whole (temp file + rename)."""
    cache.mkdir(parents=True, exist_ok=True)
    for wheel in source.glob("*.whl"):
        target = cache / wheel.name
        if wheel.name in keep_out or target.exists():
            continue
        fd, tmp = tempfile.mkstemp(dir=cache, prefix=f".{wheel.name}.")
        os.close(fd)
        shutil.copyfile(wheel, tmp)
        os.replace(tmp, target)


@contextlib.contextmanager
def _status(console: Console, text: str) -> Iterator[None]:
    with console.status(f"[bold]wheelhouse[/]: {text}"):
        yield
    console.log(f"wheelhouse: {text} [green]done[/]")


def _edgeship_source() -> Path:
    import edgeship

    root = Path(edgeship.__file__).resolve().parent.parent
    pyproject = root / "pyproject.toml"
    if not (pyproject.is_file() and re.search(r'(?m)^name\s*=\s*"edgeship"', pyproject.read_text())):
        raise PackagingError(
            f"edgeship's source tree was not found above {Path(edgeship.__file__).parent}; "
            "install edgeship from a source checkout (pip install -e) or pass include_edgeship=False "
            "and list an edgeship wheel in the requirements."
        )
    return root


def _build_requirements(pyproject: Path) -> list[str]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    data = tomllib.loads(pyproject.read_text())
    requires = data.get("build-system", {}).get("requires", ["setuptools", "wheel"])
    return [str(r) for r in requires]


def build_edgeship_wheel(
    out_dir: Path,
    *,
    cache_dir: Path,
    source: Path | None = None,
    source_date_epoch: int = DEFAULT_SOURCE_DATE_EPOCH,
) -> Path:
    """Build edgeship's own wheel from its source tree into ``out_dir``; returns its path.

    The tree is copied first (without ``build/``, ``*.egg-info``, tests and dot
    folders) so stale build output in the checkout never leaks into the wheel and
    the build writes nothing into the checkout. The build backend comes from the
    cache when possible (offline); otherwise it is fetched once into the cache.
    """
    root = source or _edgeship_source()
    with tempfile.TemporaryDirectory(prefix="edgeship-src-") as tmp:
        copy = Path(tmp) / "edgeship"
        shutil.copytree(root, copy, ignore=_SKIP_IN_SOURCE_COPY)
        build_out = Path(tmp) / "out"
        args = [
            "wheel",
            str(copy),
            "--no-deps",
            "--wheel-dir",
            str(build_out),
            "--find-links",
            str(cache_dir),
        ]
        try:
            _run_pip([*args, "--no-index"], "edgeship's wheel (offline)", source_date_epoch)
        except PackagingError:
            _run_pip(
                ["download", "--dest", str(cache_dir), *_build_requirements(root / "pyproject.toml")],
                "edgeship's build backend",
                source_date_epoch,
            )
            _run_pip([*args, "--no-index"], "edgeship's wheel", source_date_epoch)
        wheels = sorted(build_out.glob("edgeship-*.whl"))
        if len(wheels) != 1:
            raise PackagingError(f"building edgeship's wheel produced {len(wheels)} wheels, expected one.")
        out_dir.mkdir(parents=True, exist_ok=True)
        target = out_dir / wheels[0].name
        shutil.copyfile(wheels[0], target)
        return target


def build_wheelhouse(
    requirements: Sequence[str],
    dest: Path,
    *,
    include_edgeship: bool = True,
    python_version: str = "3.11",
    platform: str | Sequence[str] | None = None,
    cache_dir: Path | None = None,
    edgeship_source: Path | None = None,
    source_date_epoch: int = DEFAULT_SOURCE_DATE_EPOCH,
    console: Console | None = None,
) -> list[Path]:
    """Fill ``dest`` with wheels for ``requirements`` (and edgeship's scoring runtime); returns them sorted.

    ``platform`` (a pip platform tag or several, e.g. :func:`manylinux_platforms`)
    selects binary wheels for another machine; requirements that publish only an
    sdist are then built here with ``pip wheel`` and accepted if the result is pure
    Python. Without ``platform`` the wheels are for this interpreter, which must then
    be ``python_version``.
    """
    console = console or Console(stderr=True)
    cache = (cache_dir or default_cache_dir()).resolve()
    cache.mkdir(parents=True, exist_ok=True)
    platforms = [platform] if isinstance(platform, str) else list(platform or [])
    host_version = f"{sys.version_info.major}.{sys.version_info.minor}"
    if not platforms and python_version != host_version:
        raise PackagingError(
            f"a wheelhouse for Python {python_version} needs a target platform (this is Python "
            f"{host_version}); pass platform=manylinux_platforms()."
        )
    reqs = [r.strip() for r in requirements if r.strip()]
    with atomic_dir(Path(dest)) as build, tempfile.TemporaryDirectory(prefix="edgeship-wh-") as tmp:
        local_names: set[str] = set()
        if include_edgeship:
            with _status(console, "building edgeship's scoring runtime wheel"):
                own = build_edgeship_wheel(
                    Path(tmp) / "own",
                    cache_dir=cache,
                    source=edgeship_source,
                    source_date_epoch=source_date_epoch,
                )
            local_names.add(own.name)
            reqs.append(f"edgeship[scoring] @ {own.as_uri()}")
        if not reqs:
            return []
        with _status(console, f"resolving {len(reqs)} requirement(s)"):
            _resolve(reqs, build, cache, Path(tmp), python_version, platforms, local_names, source_date_epoch)
        _cache_wheels(build, cache, local_names)
        stray = [p for p in build.iterdir() if not p.name.endswith(".whl")]
        if stray:
            raise PackagingError(
                f"pip left non-wheel files in the wheelhouse ({', '.join(p.name for p in stray)}); "
                "a device could not install them offline."
            )
        names = sorted(p.name for p in build.glob("*.whl"))
    return [Path(dest) / name for name in names]


def _resolve(
    reqs: list[str],
    build: Path,
    cache: Path,
    tmp: Path,
    python_version: str,
    platforms: list[str],
    local_names: set[str],
    sde: int,
) -> None:
    """Put the closure of ``reqs`` into ``build``: offline from the cache first, else via the index."""
    verb = "download" if platforms else "wheel"
    out = "--dest" if platforms else "--wheel-dir"
    base = [
        verb,
        *reqs,
        out,
        str(build),
        "--find-links",
        str(cache),
        *_target_args(python_version, platforms),
    ]
    try:
        _run_pip([*base, "--no-index"], "the requirements (from the cache)", sde)
        return
    except PackagingError:
        _clear(build)
    online = tmp / "online"
    built_sdists: set[str] = set()
    while True:
        cmd = [
            verb,
            *reqs,
            out,
            str(online),
            "--find-links",
            str(cache),
            *_target_args(python_version, platforms),
        ]
        try:
            _run_pip(cmd, "the requirements", sde)
            break
        except PackagingError as exc:
            failed = _FAILED_REQ.findall(str(exc))
            if not platforms or not failed or failed[-1] in built_sdists:
                raise
            # An sdist-only requirement for another platform: build it here; pure Python wheels fit.
            built_sdists.add(failed[-1])
            _run_pip(
                ["wheel", failed[-1], "--no-deps", "--wheel-dir", str(cache), "--find-links", str(cache)],
                f"requirement {failed[-1]!r} (building it from source)",
                sde,
            )
    _cache_wheels(online, cache, local_names)
    _run_pip([*base, "--no-index"], "the requirements (from the cache)", sde)


def _clear(folder: Path) -> None:
    for child in folder.iterdir():
        shutil.rmtree(child) if child.is_dir() else child.unlink()
