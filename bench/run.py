"""Tether benchmark harness: Tether vs. peer RPC frameworks, CPU time per call.

    python bench/run.py [--quick] [--only NAME,...] [--json FILE]

Runs the repetitions in interleaved rounds (round r = repetition r of every peer).  In a
round, for each peer: start its server as a subprocess on a free 127.0.0.1 port, wait
until the port accepts, run a client worker subprocess (bench/worker.py) that warms up and
times every workload once, then stop the server (always; SIGTERM, then SIGKILL to its
whole process group).  Prints a markdown table of medians and the Tether/peer CPU ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any

from peers import BENCH_DIR, PEERS, TETHERS, PeerInfo
from peers.common import HOST, WORKLOADS, Plan, machine_busy_seconds

REPO_DIR = BENCH_DIR.parent
SERVER_START_TIMEOUT_S = 30.0
SERVER_STOP_TIMEOUT_S = 5.0
PREFLIGHT_TIMEOUT_S = 60.0
QUIET_THRESHOLD_CORES = 0.25  # before each peer, wait (bounded) until the machine is this idle
DISTRIBUTIONS = (
    "websockets",
    "orjson",
    "rpyc",
    "Pyro5",
    "serpent",
    "Twisted",
    "grpcio",
    "protobuf",
    "tether",
)


@dataclass
class PeerResult:
    peer: str
    label: str
    skipped: str | None = None
    error: str | None = None
    samples: list[dict[str, Any]] = field(default_factory=list)


# --- process helpers ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").rstrip().splitlines()
    except OSError:
        return ""
    return "\n".join("    " + line for line in text[-lines:])


def stop_group(proc: subprocess.Popen[bytes], timeout: float = SERVER_STOP_TIMEOUT_S) -> None:
    """SIGTERM the process group, wait up to `timeout`, then SIGKILL whatever is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=timeout)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # the leader, or anything it left behind
    proc.wait(timeout=timeout)


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before listening")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server did not accept connections on port {port} within {timeout:.0f}s")


def busy_cores(window_s: float = 0.3) -> float:
    """Average number of busy cores on the machine over `window_s` (from /proc/stat)."""
    before = machine_busy_seconds()
    time.sleep(window_s)
    return (machine_busy_seconds() - before) / window_s


def wait_quiet(max_wait_s: float, threshold: float = QUIET_THRESHOLD_CORES) -> str:
    """Wait (bounded) until other processes use under `threshold` cores; say what was seen."""
    deadline = time.monotonic() + max_wait_s
    busy = busy_cores()
    waited = False
    while busy >= threshold and time.monotonic() < deadline:
        waited = True
        busy = busy_cores()
    if busy >= threshold:
        return f"machine still busy ({busy:.2f} cores) after waiting {max_wait_s:.0f}s"
    return f"waited for a quiet machine ({busy:.2f} cores busy)" if waited else ""


def preflight(peer: PeerInfo) -> str | None:
    """Import the peer's modules in a fresh interpreter; return a reason to skip, or None."""
    code = "; ".join(f"import {m}" for m in peer.requires)
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code],
            cwd=BENCH_DIR,
            capture_output=True,
            text=True,
            timeout=PREFLIGHT_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"{peer.name} not importable: `{code}` timed out"
    if proc.returncode == 0:
        return None
    lines = proc.stderr.strip().splitlines()
    return f"{peer.name} not importable: {lines[-1] if lines else f'exit code {proc.returncode}'}"


def worker_timeout(plan: Plan) -> float:
    return plan.reps * plan.loop_timeout_s * len(plan.workloads) + 90.0


# --- running one peer -----------------------------------------------------------------


def run_round(peer: PeerInfo, plan: Plan, rnd: int, workdir: Path) -> list[dict[str, Any]]:
    """One round for one peer: fresh server, one worker running `plan`, server stopped.

    Returns the worker's samples; raises RuntimeError (with log tails) on any failure.
    """
    port = free_port()
    stem = f"{peer.name}.{rnd}"
    server_log = workdir / f"{stem}.server.log"
    worker_log = workdir / f"{stem}.worker.log"
    out_file = workdir / f"{stem}.json"
    with open(server_log, "wb") as slog:
        server = subprocess.Popen(
            peer.server_argv(HOST, port),
            cwd=REPO_DIR,
            stdin=subprocess.DEVNULL,
            stdout=slog,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for_port(port, server, SERVER_START_TIMEOUT_S)
        argv = [
            sys.executable,
            str(BENCH_DIR / "worker.py"),
            peer.name,
            "--port",
            str(port),
            "--server-pid",
            str(server.pid),
            "--plan",
            json.dumps(plan.to_dict()),
            "--out",
            str(out_file),
        ]
        with open(worker_log, "wb") as wlog:
            worker = subprocess.Popen(
                argv,
                cwd=REPO_DIR,
                stdin=subprocess.DEVNULL,
                stdout=wlog,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        budget = worker_timeout(plan)
        try:
            rc: int | None = worker.wait(timeout=budget)
        except subprocess.TimeoutExpired:
            rc = None
        finally:
            stop_group(worker)
        if rc is None:
            raise RuntimeError(f"client worker timed out after {budget:.0f}s\n{tail(worker_log)}")
        if rc != 0:
            raise RuntimeError(f"client worker exited with code {rc}\n{tail(worker_log)}")
        if server.poll() is not None:
            raise RuntimeError(f"server died during the run (code {server.returncode})")
        samples: list[dict[str, Any]] = json.loads(out_file.read_text())["samples"]
    except Exception as exc:
        raise RuntimeError(f"{exc}\n  server log:\n{tail(server_log)}") from exc
    finally:
        stop_group(server)
    for sample in samples:
        sample["rep"] = rnd
    return samples


def run_all(names: list[str], plan: Plan, quiet_wait_s: float) -> list[PeerResult]:
    """Interleaved rounds: round r runs repetition r of every peer, in order.

    Each repetition of a peer gets a fresh server and client worker (with its own warm-up),
    so a slow period on the machine spreads over all peers instead of one peer's reps.
    """
    results = {name: PeerResult(name, PEERS[name].label) for name in names}
    for name in names:
        reason = preflight(PEERS[name])
        if reason:
            results[name].skipped = reason
            print(f"[{name}] SKIPPED: {reason}", flush=True)
    one_rep = replace(plan, reps=1)
    with tempfile.TemporaryDirectory(prefix="tether-bench-") as tmp:
        for rnd in range(plan.reps):
            for name in names:
                res = results[name]
                if res.skipped or res.error:
                    continue
                tag = f"[round {rnd + 1}/{plan.reps}] [{name}]"
                if quiet_wait_s > 0 and (note := wait_quiet(quiet_wait_s)):
                    print(f"{tag} {note}", flush=True)
                t0 = time.monotonic()
                try:
                    res.samples += run_round(PEERS[name], one_rep, rnd, Path(tmp))
                except RuntimeError as exc:
                    res.error = str(exc)
                    print(f"{tag} ERROR: {res.error}", flush=True)
                    continue
                print(f"{tag} done in {time.monotonic() - t0:.1f}s", flush=True)
    return list(results.values())


# --- reporting ------------------------------------------------------------------------


@dataclass
class Summary:
    cpu_us: float
    client_us: float
    server_us: float
    wall_us: float
    calls: int
    reps: int
    truncated: bool
    all_cpu_us: list[float]
    other_load_pct: float  # max over reps: other processes' CPU, % of one core


def other_load_pct(s: dict[str, Any]) -> float:
    """CPU used by everything but this client and server during a loop, in % of one core."""
    other = s.get("machine_busy_s", 0.0) - s["client_cpu_s"] - s["server_cpu_s"]
    return max(0.0, other) / s["wall_s"] * 100 if s["wall_s"] > 0 else 0.0


def summarize(samples: list[dict[str, Any]], workload: str) -> Summary | None:
    """Median over repetitions of total CPU per call, with that repetition's split.

    With an even number of repetitions the two middle ones are averaged.
    """
    rows = [s for s in samples if s["workload"] == workload and s["calls"] > 0]
    if not rows:
        return None
    per_call = sorted(
        (
            {
                "cpu": (s["client_cpu_s"] + s["server_cpu_s"]) / s["calls"] * 1e6,
                "client": s["client_cpu_s"] / s["calls"] * 1e6,
                "server": s["server_cpu_s"] / s["calls"] * 1e6,
                "wall": s["wall_s"] / s["calls"] * 1e6,
            }
            for s in rows
        ),
        key=lambda r: r["cpu"],
    )
    n = len(per_call)
    middle = per_call[n // 2 : n // 2 + 1] if n % 2 else per_call[n // 2 - 1 : n // 2 + 1]
    return Summary(
        cpu_us=statistics.fmean(r["cpu"] for r in middle),
        client_us=statistics.fmean(r["client"] for r in middle),
        server_us=statistics.fmean(r["server"] for r in middle),
        wall_us=statistics.fmean(r["wall"] for r in middle),
        calls=max(s["calls"] for s in rows),
        reps=n,
        truncated=any(s["truncated"] for s in rows),
        all_cpu_us=[r["cpu"] for r in per_call],
        other_load_pct=max(other_load_pct(s) for s in rows),
    )


def fmt(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}"


def report(results: list[PeerResult], plan: Plan) -> str:
    lines = [
        "| peer | workload | CPU µs/call (client+server) | client µs | server µs | wall µs "
        "| calls x reps | all reps CPU µs | other load |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    summaries: dict[tuple[str, str], Summary] = {}
    for res in results:
        if res.skipped or res.error:
            status = "skipped" if res.skipped else "error"
            lines.append(f"| {res.label} | - | {status} | | | | | | |")
            continue
        for workload in plan.workloads:
            s = summarize(res.samples, workload)
            if s is None:
                continue
            summaries[(res.peer, workload)] = s
            flag = " (truncated)" if s.truncated else ""
            reps = ", ".join(fmt(x) for x in s.all_cpu_us)
            lines.append(
                f"| {res.label} | {workload} | **{fmt(s.cpu_us)}** | {fmt(s.client_us)} "
                f"| {fmt(s.server_us)} | {fmt(s.wall_us)} | {s.calls} x {s.reps}{flag} | {reps} "
                f"| {s.other_load_pct:.0f}% |"
            )
    lines.append("")
    tethers = [t for t in TETHERS if any(p == t for p, _ in summaries)]
    if not tethers:
        lines.append("Tether/peer ratios: not available (Tether did not run).")
        return "\n".join(lines)
    columns = [(t, w) for t in tethers for w in plan.workloads]
    lines += [
        "Tether CPU / peer CPU (above 1 = Tether uses more CPU per call):",
        "",
        "| peer | " + " | ".join(f"{w} {PEERS[t].label}/peer" for t, w in columns) + " |",
        "| --- | " + " | ".join("---:" for _ in columns) + " |",
    ]
    for res in results:
        if res.peer in TETHERS or res.skipped or res.error:
            continue
        cells = []
        for t_name, w in columns:
            t, p = summaries.get((t_name, w)), summaries.get((res.peer, w))
            cells.append(f"{t.cpu_us / p.cpu_us:.2f}x" if t and p and p.cpu_us > 0 else "n/a")
        lines.append(f"| {res.label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=REPO_DIR, capture_output=True, text=True, timeout=10, check=True
    ).stdout.strip()


def git_revision() -> str | None:
    """The repository's commit (read-only git calls), with "+dirty" if src/ has changes."""
    try:
        rev = _git("rev-parse", "--short", "HEAD")
        dirty = _git("status", "--porcelain", "--", "src")
    except (OSError, subprocess.SubprocessError):
        return None
    return rev + ("+dirty" if dirty else "")


def environment() -> dict[str, Any]:
    cpu_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions: dict[str, str | None] = {}
    for dist in DISTRIBUTIONS:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_model,
        "cores": os.cpu_count(),
        "loadavg_at_start": os.getloadavg(),
        "tether_revision": git_revision(),
        "versions": versions,
    }


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    # SIGTERM/SIGHUP unwind like Ctrl-C, so every `finally` stops the subprocesses.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGHUP, _raise_interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="short smoke run (far fewer calls)")
    parser.add_argument("--only", help=f"comma-separated peers to run, from: {','.join(PEERS)}")
    parser.add_argument(
        "--json", metavar="FILE", help="also write all samples and the summary as JSON"
    )
    parser.add_argument(
        "--reps", type=int, default=3, help="repetitions (interleaved rounds); default 3"
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        metavar="SECONDS",
        help="before each peer, wait up to this long for other processes to go idle "
        "(default: 5 full, 2 quick; 0 disables)",
    )
    args = parser.parse_args()

    names = list(PEERS)
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in PEERS]
        if unknown:
            parser.error(f"unknown peer(s) {unknown}; choose from {list(PEERS)}")
    if not 1 <= args.reps <= 20:
        parser.error("--reps must be between 1 and 20")
    plan = replace(Plan.quick() if args.quick else Plan(), reps=args.reps)
    if args.quiet_wait is None:
        args.quiet_wait = 2.0 if args.quick else 5.0
    env = environment()
    print(
        f"# Tether bench ({'quick' if args.quick else 'full'}): {env['cores']} cores, "
        f"{env['cpu']}, Python {env['python']}, load average {env['loadavg_at_start'][0]:.2f}, "
        f"tether at {env['tether_revision']}",
        flush=True,
    )
    print(f"plan: {json.dumps(plan.to_dict())}", flush=True)
    print("versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v), flush=True)
    t0 = time.monotonic()
    results = run_all(names, plan, args.quiet_wait)
    table = report(results, plan)
    print()
    print(table)
    for res in results:
        if res.skipped:
            print(f"\nNOTE: {res.skipped}")
        elif res.error:
            print(f"\nNOTE: {res.peer} failed: {res.error.splitlines()[0]}")
    print(f"\ntotal time: {time.monotonic() - t0:.0f}s")
    if args.json:
        payload = {
            "environment": env,
            "plan": plan.to_dict(),
            "results": [
                {
                    "peer": r.peer,
                    "label": r.label,
                    "skipped": r.skipped,
                    "error": r.error,
                    "samples": r.samples,
                    "summary": {
                        w: (s.__dict__ if (s := summarize(r.samples, w)) else None)
                        for w in WORKLOADS
                    },
                }
                for r in results
            ],
            "table": table,
        }
        Path(args.json).write_text(json.dumps(payload, indent=2))
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt as exc:
        print(
            f"\ninterrupted ({exc or 'Ctrl-C'}); servers and workers were stopped", file=sys.stderr
        )
        sys.exit(130)
