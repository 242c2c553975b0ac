"""Downloads and unpacking run in ``python -m edgeship.agent.worker`` (ADR 0046): the agent imports none of
``urllib.request``, ``http.client``, ``email`` or ``tarfile``, and a worker never outlives the agent.

The download and unpacking behaviour itself is what ``test_agent_download.py``, ``test_agent_parts.py``,
the kill-point tests and the runtime tests check, unchanged: they now run through the worker.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_world import BlobServer

from edgeship.agent.fetch.bounded import FetchLimits
from edgeship.agent.fetch.download import BlobCache, HostUnreachableError
from edgeship.agent.offload import WorkerError, run_job
from edgeship.agent.runtimes.process import unpack_bundle
from edgeship.errors import RuntimeFailure

pytestmark = pytest.mark.timeout(60)
DATA = os.urandom(2 * 1024 * 1024 + 3)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[BlobServer]:
    blobs = BlobServer(tmp_path / "served")
    yield blobs
    blobs.close()


def _bundle(path: Path) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in (("app/score.py", b"def run(x):\n    return x\n"), ("wheelhouse/a.whl", b"w" * 100)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


_INSTALL = r"""
import json, sys
from pathlib import Path
from edgeship.agent.lazy import LAZY_MODULES, import_lazily
for name in LAZY_MODULES:
    import_lazily(name)  # as python -m edgeship.agent does
from edgeship.agent.daemon import Agent  # noqa: F401
from edgeship.agent.fetch.download import BlobCache
from edgeship.agent.runtimes.process import unpack_bundle
url, digest, size, bundle, work, expected = sys.argv[1:]
cache = BlobCache(Path(work) / "blobs", url)
got = cache.fetch(f"/blobs/{digest}", digest, int(size))
unpack_bundle(Path(bundle), Path(work) / "app")
urllib_real = "HTTPHandler" in vars(sys.modules["urllib.request"])
print(json.dumps({"loaded": sorted(m for m in ("http.client", "email", "tarfile", "urllib.error", "urllib.response")
                                   if m in sys.modules), "urllib.request": urllib_real, "received": cache.received,
                  "fetched": got.read_bytes() == Path(expected).read_bytes(),
                  "app": sorted(p.name for p in (Path(work) / "app").rglob("*"))}))
"""


def test_an_agent_that_downloaded_and_unpacked_imports_no_urllib_http_client_or_tarfile(
    server: BlobServer, tmp_path: Path
) -> None:
    digest = server.put(DATA)
    bundle = _bundle(tmp_path / "bundle.tar")
    (tmp_path / "expected").write_bytes(DATA)
    out = subprocess.run(
        [sys.executable, "-OO", "-X", "no_debug_ranges", "-c", _INSTALL, server.url, digest, str(len(DATA)),
         str(bundle), str(tmp_path / "work"), str(tmp_path / "expected")],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert json.loads(out) == {"loaded": [], "urllib.request": False, "received": len(DATA), "fetched": True,
                               "app": ["a.whl", "app", "score.py", "wheelhouse"]}  # fmt: skip


def test_a_bad_bundle_is_refused_in_the_worker_with_the_same_sentence(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tar"
    with tarfile.open(bad, "w") as tar:
        info = tarfile.TarInfo("../escape.txt")
        tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(RuntimeFailure, match=r"has an entry '\.\./escape\.txt' outside its folder; refusing"):
        unpack_bundle(bad, tmp_path / "out")
    assert not (tmp_path / "escape.txt").exists()


_HOLD = r"""
import sys
from pathlib import Path
from edgeship.agent.fetch.bounded import FetchLimits
from edgeship.agent.fetch.download import BlobCache
url, digest, size, work = sys.argv[1:]
BlobCache(Path(work), url, limits=FetchLimits(min_rate=1, window=600, deadline=600)).fetch(
    f"/blobs/{digest}", digest, int(size))
"""


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with open(task / "children") as children:
            found += [int(c) for c in children.read().split()]
    return found


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def test_a_sigkilled_agent_leaves_no_worker_writing_and_the_next_one_resumes(
    server: BlobServer, tmp_path: Path
) -> None:
    digest = server.put(DATA)
    server.misbehave(digest, "silent")  # headers, then nothing: the worker waits in a read
    agent = subprocess.Popen([sys.executable, "-c", _HOLD, server.url, digest, str(len(DATA)), str(tmp_path / "c")])
    try:
        server.wait(lambda: bool(server.requests))
        workers = _children(agent.pid)
        assert len(workers) == 1
        os.kill(agent.pid, signal.SIGKILL)
        agent.wait()
        deadline = time.monotonic() + 10
        while _alive(workers[0]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(workers[0])  # PR_SET_PDEATHSIG: it died with the agent
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
    server.misbehave(digest, None)
    cache = BlobCache(tmp_path / "c", server.url)
    assert cache.fetch(f"/blobs/{digest}", digest, len(DATA)).read_bytes() == DATA
    assert cache.received == len(DATA)


def test_a_worker_killed_mid_transfer_is_a_retry_and_an_unknown_job_one_sentence(
    server: BlobServer, tmp_path: Path
) -> None:
    digest = server.put(DATA)
    server.misbehave(digest, "silent")

    def oom_killer() -> None:  # the worker dies as the OOM killer would end it
        server.wait(lambda: bool(server.requests))
        for worker in _children(os.getpid()):
            if "edgeship.agent.worker" in Path(f"/proc/{worker}/cmdline").read_text():
                os.kill(worker, signal.SIGKILL)

    killer = threading.Thread(target=oom_killer)
    killer.start()
    cache = BlobCache(tmp_path / "c", server.url, limits=FetchLimits(min_rate=1, window=600, deadline=600))
    with pytest.raises(HostUnreachableError, match=r"^The agent's fetch worker exited with code -9 before it "
                                                   r"answered; the next try runs it again\.$"):  # fmt: skip
        cache.fetch(f"/blobs/{digest}", digest, len(DATA))
    killer.join()
    with pytest.raises(WorkerError, match=r"^the worker knows no job 'nosuchjob'; agent and worker are of different"):
        run_job({"kind": "nosuchjob"})


def test_a_worker_that_cannot_start_is_one_sentence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python"))  # as when exec fails (ENOMEM, EAGAIN)
    with pytest.raises(RuntimeFailure, match=r"^The agent's unpack worker could not be started \(.*no-python"):
        unpack_bundle(_bundle(tmp_path / "b.tar"), tmp_path / "out")
