"""Scoring benchmark: the digits MLP and its unmodified score.py under `edgeship serve` and `azmlinfsrv`.

Both servers get the same model folder (``azureml-models/digits/1/digits.onnx``),
the same entry script, the same worker count and the same wrk load (one row per
request, loopback only, fixed durations). For every (server, workers) pair:
start, wait until ``GET /`` answers, check that ``/score`` returns the same
predictions as ``run()`` called in-process, warm up, run wrk at each
concurrency, and sample the peak RSS of the server's whole process tree. The
in-process cost of ``run()`` is measured first as the floor no server can beat.

    python benchmarks/scoring/run.py                      # full run, ~6 minutes
    python benchmarks/scoring/run.py --duration 3 --warmup 1 --no-wait-load   # smoke run
    python benchmarks/scoring/run.py --report benchmarks/scoring/results-2025-01-01.json

Writes ``results-<date>.json`` beside this file (``--output`` to choose) and
prints the Markdown tables that go into RESULTS.md. Not a test: nothing here
asserts on timing.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psutil

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
EXAMPLE = REPO / "examples" / "sklearn-digits"
SERVERS = ("edgeship", "azmlinfsrv")
TARGET_SPEEDUP = 2.0  # edgeship req/s over azmlinfsrv's at c=8 and c=32
TARGET_RSS = 0.7  # edgeship peak RSS over azmlinfsrv's
HEALTH_TIMEOUT = 120.0  # seconds for import + init()
RSS_INTERVAL = 0.1  # seconds between RSS samples
LOAD_EVERY = 50  # RSS samples between load-average samples (about 5 s)


# Preparation ----------------------------------------------------------------
def prepare_model(work: Path) -> tuple[Path, dict[str, Any]]:
    """Train the example's MLP, lay it out as Azure ML does; returns the layout root and one request body."""
    train_dir = work / "train"
    subprocess.run(
        [sys.executable, str(EXAMPLE / "train.py"), "--output-dir", str(train_dir)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    root = work / "model"
    version_dir = root / "azureml-models" / "digits" / "1"
    shutil.rmtree(root, ignore_errors=True)
    version_dir.mkdir(parents=True)
    shutil.copy2(train_dir / "digits.onnx", version_dir / "digits.onnx")
    sample = json.loads((train_dir / "sample-request.json").read_text())
    body = {"data": sample["data"][:1]}  # one row per request
    return root, body


def write_wrk_script(work: Path, body: dict[str, Any]) -> Path:
    script = work / "post.lua"
    payload = json.dumps(body)
    script.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = [==[{payload}]==]\n"  # level-2 brackets: the JSON itself contains "]]"
    )
    return script


def measure_floor(model_version_dir: Path, body: dict[str, Any], calls: int) -> dict[str, Any]:
    """Import score.py as a server would, call init(), time run(**body): the cost no server avoids."""
    os.environ["AZUREML_MODEL_DIR"] = str(model_version_dir)
    spec = importlib.util.spec_from_file_location("digits_score", EXAMPLE / "score.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.init()
    result = module.run(**body)
    for _ in range(200):
        module.run(**body)
    samples = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(calls):
            module.run(**body)
        samples.append((time.perf_counter() - started) / calls * 1e6)
    best = min(samples)
    return {
        "calls_per_sample": calls,
        "us_per_call_samples": [round(s, 2) for s in samples],
        "us_per_call_best": round(best, 2),
        "us_per_call_median": round(sorted(samples)[len(samples) // 2], 2),
        "single_core_req_s_ceiling": round(1e6 / best),
        "result": result,
    }


# Machine state --------------------------------------------------------------
def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def wait_for_quiet(threshold: float, max_wait: float) -> dict[str, Any]:
    """Sleep while the 1-minute load is above ``threshold`` (other engineers' tests), up to ``max_wait``."""
    started = time.monotonic()
    seen = [load_average()]
    while seen[-1][0] > threshold and time.monotonic() - started < max_wait:
        print(f"load {seen[-1]} > {threshold}; waiting 60 s", flush=True)
        time.sleep(60)
        seen.append(load_average())
    return {"threshold": threshold, "waited_s": round(time.monotonic() - started), "loads_seen": seen}


def busy_processes(exclude: set[int], sample_s: float = 1.0) -> list[dict[str, Any]]:
    """Other processes using CPU right now (who else is loading the machine)."""
    procs = []
    for proc in psutil.process_iter(["pid", "name", "cmdline"]):
        if proc.pid in exclude:
            continue
        try:
            proc.cpu_percent(None)
            procs.append(proc)
        except psutil.Error:
            pass
    time.sleep(sample_s)
    busy = []
    for proc in procs:
        try:
            cpu = proc.cpu_percent(None)
        except psutil.Error:
            continue
        if cpu >= 5.0:
            cmd = " ".join(proc.info["cmdline"] or [proc.info["name"] or "?"])[:120]
            busy.append({"pid": proc.pid, "cpu_percent": round(cpu, 1), "cmd": cmd})
    return sorted(busy, key=lambda p: -p["cpu_percent"])[:8]


def versions() -> dict[str, str]:
    found = {}
    for dist in (
        "edgeship",
        "azureml-inference-server-http",
        "uvicorn",
        "httptools",
        "uvloop",
        "gunicorn",
        "flask",
        "onnxruntime",
        "inference-schema",
        "orjson",
        "numpy",
    ):
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            found[dist] = "not installed"
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
    found["wrk"] = (wrk.stdout or wrk.stderr).splitlines()[0].split(" Copyright")[0].strip()
    found["python"] = platform.python_version()
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    found["edgeship_commit"] = commit.stdout.strip()
    return found


def machine() -> dict[str, Any]:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "kernel": platform.release(),
    }


# Servers --------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_command(
    server: str, model_root: Path, port: int, workers: int, work: Path
) -> tuple[list[str], dict[str, str]]:
    env = dict(os.environ)
    script = str(EXAMPLE / "score.py")
    if server == "edgeship":
        data_dir = work / "edgeship-data"
        shutil.rmtree(data_dir, ignore_errors=True)
        cmd = [
            "edgeship",
            "serve",
            "--entry-script",
            script,
            "--model-dir",
            str(model_root),
            "--data-dir",
            str(data_dir),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
        ]
    else:
        version_dir = model_root / "azureml-models" / "digits" / "1"
        env["AZUREML_MODEL_DIR"] = str(version_dir)
        cmd = [
            "azmlinfsrv",
            "--entry_script",
            script,
            "--model_dir",
            str(version_dir),
            "--port",
            str(port),
            "--worker_count",
            str(workers),
        ]
    return cmd, env


def _tree(root: psutil.Process) -> list[psutil.Process]:
    try:
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def tree_rss(root: psutil.Process) -> int:
    total = 0
    for proc in _tree(root):
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return total


def tree_pss(root: psutil.Process) -> int:
    """Proportional set size: shared pages (gunicorn's forked workers share with their master) split fairly."""
    total = 0
    for proc in _tree(root):
        try:
            for line in Path(f"/proc/{proc.pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
                    break
        except OSError:
            pass
    return total


def tree_breakdown(root: psutil.Process) -> list[dict[str, Any]]:
    rows = []
    for proc in _tree(root):
        with contextlib.suppress(psutil.Error):
            rows.append(
                {
                    "pid": proc.pid,
                    "cmd": " ".join(proc.cmdline())[:100],
                    "rss_mib": round(proc.memory_info().rss / 2**20, 1),
                }
            )
    return rows


class RssSampler(threading.Thread):
    """Peaks of the summed RSS (every RSS_INTERVAL) and PSS (every 5th sample) of a process tree."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.peak = 0
        self.peak_pss = 0
        self.breakdown: list[dict[str, Any]] = []
        self.loads: list[list[float]] = []  # 1/5/15-min load every LOAD_EVERY samples: who else was busy
        self._stop_event = threading.Event()

    def run(self) -> None:
        tick = 0
        while not self._stop_event.is_set():
            rss = tree_rss(self.root)
            if rss > self.peak:
                self.peak = rss
                self.breakdown = tree_breakdown(self.root)
            if tick % 5 == 0:
                self.peak_pss = max(self.peak_pss, tree_pss(self.root))
            if tick % LOAD_EVERY == 0:
                self.loads.append(load_average())
            tick += 1
            self._stop_event.wait(RSS_INTERVAL)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return self.peak


def wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before it was healthy")
        try:
            with urllib.request.urlopen(url + "/", timeout=1) as response:
                if response.status == 200:
                    return time.monotonic() - started
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not healthy within {timeout:.0f} s")


def score_once(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        url + "/score", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group this script started (master and its workers), SIGKILL after 15 s."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    with contextlib.suppress(ProcessLookupError):  # workers left behind by a master that died first
        os.killpg(proc.pid, signal.SIGKILL)


# wrk ------------------------------------------------------------------------
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not match:
        raise ValueError(f"cannot read wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(output: str) -> dict[str, Any]:
    result: dict[str, Any] = {}
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M)
    total = re.search(r"^\s*(\d+) requests in", output, re.M)
    result["req_s"] = float(rps.group(1)) if rps else 0.0
    result["requests"] = int(total.group(1)) if total else 0
    for pct in ("50", "75", "90", "99"):
        match = re.search(rf"^\s+{pct}%\s+(\S+)", output, re.M)
        result[f"p{pct}_ms"] = round(_ms(match.group(1)), 3) if match else None
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    result["socket_errors"] = (
        dict(zip(("connect", "read", "write", "timeout"), map(int, errors.groups()), strict=True)) if errors else {}
    )
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    result["non_2xx"] = int(non2xx.group(1)) if non2xx else 0
    return result


def run_wrk(url: str, lua: Path, connections: int, duration: float) -> dict[str, Any]:
    threads = min(connections, 2)
    cmd = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration:g}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(lua),
        url + "/score",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    if done.stderr.strip():
        raise RuntimeError(f"wrk complained: {done.stderr.strip()}")
    parsed = parse_wrk(done.stdout)
    if parsed["non_2xx"]:
        raise RuntimeError(f"{parsed['non_2xx']} of {parsed['requests']} responses were not 2xx")
    return {"command": " ".join(cmd), **parsed, "raw": done.stdout}


# One server -----------------------------------------------------------------
def bench_server(
    server: str,
    workers: int,
    args: argparse.Namespace,
    model_root: Path,
    lua: Path,
    body: dict[str, Any],
    expected: dict[str, Any],
    work: Path,
) -> dict[str, Any]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd, env = server_command(server, model_root, port, workers, work)
    log_path = work / f"{server}-w{workers}.log"
    record: dict[str, Any] = {
        "server": server,
        "workers": workers,
        "command": " ".join(cmd),
        "load_before": load_average(),
    }
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, env=env, cwd=EXAMPLE, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            record["startup_s"] = round(wait_healthy(url, proc, HEALTH_TIMEOUT), 2)
            time.sleep(0.5)
            record["processes"] = 1 + len(psutil.Process(proc.pid).children(recursive=True))
            record["idle_rss_mib"] = round(tree_rss(psutil.Process(proc.pid)) / 2**20, 1)
            answer = score_once(url, body)
            record["response"] = answer
            record["correct"] = answer.get("predictions") == expected["predictions"]
            if not record["correct"]:
                raise RuntimeError(f"{server} answered {answer}, expected {expected}")
            sampler = RssSampler(proc.pid)
            sampler.start()
            record["warmup"] = parse_wrk(run_wrk(url, lua, 8, args.warmup)["raw"])
            record["runs"] = {}
            for connections in args.concurrency:
                print(f"  {server} workers={workers} c={connections} ...", flush=True)
                result = run_wrk(url, lua, connections, args.duration)
                record["runs"][str(connections)] = result
                print(
                    f"    {result['req_s']:.0f} req/s p50 {result['p50_ms']} ms p99 {result['p99_ms']} ms", flush=True
                )
            record["peak_rss_mib"] = round(sampler.stop() / 2**20, 1)
            record["peak_pss_mib"] = round(sampler.peak_pss / 2**20, 1)
            record["rss_at_peak"] = sampler.breakdown
            record["load_during"] = sampler.loads
            record["load_after"] = load_average()
        finally:
            stop_server(proc)
    record["log"] = str(log_path.relative_to(REPO))
    return record


# Report ---------------------------------------------------------------------
def _fmt_ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def report(data: dict[str, Any]) -> str:
    lines: list[str] = []
    by_key = {(r["server"], r["workers"]): r for r in data["servers"]}
    workers_list = sorted({r["workers"] for r in data["servers"]})
    for workers in workers_list:
        lines.append(f"### {workers} worker{'s' if workers > 1 else ''}\n")
        lines.append("| server | c | req/s | p50 ms | p99 ms | errors | peak RSS MiB |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|")
        for server in SERVERS:
            record = by_key.get((server, workers))
            if not record:
                continue
            for c, run in record["runs"].items():
                errors = run["non_2xx"] + sum(run["socket_errors"].values())
                lines.append(
                    f"| {server} | {c} | {run['req_s']:.0f} | {_fmt_ms(run['p50_ms'])} | "
                    f"{_fmt_ms(run['p99_ms'])} | {errors} | {record['peak_rss_mib']:.0f} |"
                )
        edge, aml = by_key.get(("edgeship", workers)), by_key.get(("azmlinfsrv", workers))
        if edge and aml:
            lines.append("")
            lines.append("| c | req/s ratio (target ≥ 2.0) | p99 edgeship / azmlinfsrv (target ≤ 1) | met |")
            lines.append("|---:|---:|---:|---|")
            for c in edge["runs"]:
                e, a = edge["runs"][c], aml["runs"].get(c)
                if not a:
                    continue
                ratio = e["req_s"] / a["req_s"] if a["req_s"] else float("inf")
                p99 = e["p99_ms"] / a["p99_ms"] if a["p99_ms"] else float("inf")
                targeted = c in ("8", "32")
                met = ("yes" if ratio >= TARGET_SPEEDUP and p99 <= 1.0 else "no") if targeted else "(not a target)"
                lines.append(f"| {c} | {ratio:.2f}x | {p99:.2f} | {met} |")
            rss = edge["peak_rss_mib"] / aml["peak_rss_mib"]
            lines.append("")
            lines.append(
                f"Peak RSS edgeship / azmlinfsrv: {edge['peak_rss_mib']:.0f} / "
                f"{aml['peak_rss_mib']:.0f} MiB = {rss:.2f} (target ≤ {TARGET_RSS}: "
                f"{'met' if rss <= TARGET_RSS else 'missed'}); processes "
                f"{edge['processes']} / {aml['processes']}; peak PSS (shared pages split) "
                f"{edge['peak_pss_mib']:.0f} / {aml['peak_pss_mib']:.0f} MiB = "
                f"{edge['peak_pss_mib'] / aml['peak_pss_mib']:.2f}."
            )
        loads = []
        for server in SERVERS:
            record = by_key.get((server, workers))
            if record and "load_during" in record:
                during = [x[0] for x in record["load_during"]] or [record["load_before"][0]]
                loads.append(
                    f"{server} {record['load_before'][0]:.2f} → max {max(during):.2f} → {record['load_after'][0]:.2f}"
                )
        if loads:
            lines.append("")
            lines.append("1-min load before → highest during → after each turn: " + "; ".join(loads) + ".")
        lines.append("")
    floor = data["floor"]
    lines.append(
        f"Floor: `run(**body)` in-process {floor['us_per_call_best']:.1f} µs/call "
        f"(median of 5 x {floor['calls_per_sample']}: {floor['us_per_call_median']:.1f} µs) "
        f"→ single-core ceiling ≈ {floor['single_core_req_s_ceiling']} req/s."
    )
    return "\n".join(lines)


# Main -----------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", nargs="+", choices=SERVERS, default=list(SERVERS))
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 8, 32])
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of wrk per concurrency")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of wrk (c=8) before measuring")
    parser.add_argument("--floor-calls", type=int, default=2000, help="run() calls per floor sample")
    parser.add_argument("--work-dir", type=Path, default=HERE / "work")
    parser.add_argument("--output", type=Path, default=None, help="JSON path (default results-<date>.json)")
    parser.add_argument("--max-load", type=float, default=1.0, help="wait while the 1-min load is above")
    parser.add_argument("--max-wait", type=float, default=600.0, help="seconds to wait for the load to drop")
    parser.add_argument("--no-wait-load", action="store_true", help="start at once whatever the load")
    parser.add_argument("--report", type=Path, default=None, help="only print the tables of a results JSON")
    args = parser.parse_args(argv)

    if args.report:
        print(report(json.loads(args.report.read_text())))
        return 0

    work = args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, str(Path(__file__).relative_to(REPO)), *sys.argv[1:]]),
        "started": dt.datetime.now().isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": versions(),
        "settings": {k: v for k, v in vars(args).items() if k not in ("work_dir", "output", "report")},
        "load_at_start": load_average(),
        "pythonpath": os.environ.get("PYTHONPATH", ""),  # set only for what-if runs (e.g. httptools)
    }
    print(f"load at start {data['load_at_start']}", flush=True)
    model_root, body = prepare_model(work)
    lua = write_wrk_script(work, body)
    (work / "body.json").write_text(json.dumps(body))
    data["body_bytes"] = len(json.dumps(body))
    data["floor"] = measure_floor(model_root / "azureml-models" / "digits" / "1", body, args.floor_calls)
    expected = data["floor"]["result"]
    print(f"floor {data['floor']['us_per_call_best']} µs/call", flush=True)

    if not args.no_wait_load:
        data["load_wait"] = wait_for_quiet(args.max_load, args.max_wait)
    data["busy_before"] = busy_processes({os.getpid()})
    data["load_before_servers"] = load_average()
    data["servers"] = []
    for workers in args.workers:
        for server in args.servers:
            print(f"{server} workers={workers} (load {load_average()})", flush=True)
            data["servers"].append(bench_server(server, workers, args, model_root, lua, body, expected, work))
    data["load_at_end"] = load_average()
    data["busy_after"] = busy_processes({os.getpid()})
    data["finished"] = dt.datetime.now().isoformat(timespec="seconds")

    output = args.output or HERE / f"results-{dt.date.today().isoformat()}.json"
    output.write_text(json.dumps(data, indent=2) + "\n")
    print(f"\nwrote {output}\n")
    print(report(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
