"""Static assets: Tether's ``/_/static/`` against a plain Starlette ``StaticFiles`` mount.

    python bench/static.py [--requests 3000] [--reps 3] [--connections 4] [--size 2048]

One small CSS file (``--size`` bytes) in a temporary folder, served by two servers, each
in its own subprocess on a free 127.0.0.1 port, both under uvicorn with httptools, no
access log, log level warning and no proxy-headers middleware:

* **tether**: ``create_app(static_dir=DIR)`` with ``tether.runtime.serving.uvicorn_config``
  (plus ``http="httptools"``; it sets no ``http`` itself, so that only makes the choice
  explicit); requests ``/_/static/app.css?v=<hash>`` (the versioned URL ``static_url``
  gives, answered ``Cache-Control: ... immutable`` from memory);
* **starlette**: ``Starlette(routes=[Mount("/static", StaticFiles(directory=DIR))])``
  with ``uvicorn.Config(app, lifespan="off", access_log=False, log_level="warning",
  http="httptools", proxy_headers=False)``; requests ``/static/app.css?v=<hash>``.

The load generator is this process: ``--connections`` keep-alive asyncio sockets, each
sending one GET and reading the whole answer before the next (no pipelining). Each
measurement is a warm-up (``--requests``/10, every answer checked: status 200, exact
body, Tether's ``immutable``) then ``--requests`` timed requests (status checked). Around
the timed requests it reads the wall clock and the server process's CPU time (user +
system, all threads: psutil when installed, else /proc/PID/stat).

Reported per server, as medians over ``--reps`` repetitions: requests per second (wall)
and server CPU microseconds per request; then the ratios tether/starlette. The two
servers alternate within each repetition (tether first on even ones), so a slow spell of
the machine spreads over both. Every wait is bounded; both servers are stopped (terminate,
then kill) in a ``finally`` block.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
RUN_TIMEOUT_S = 300.0  # one timed run gives up past this
SERVERS = ("tether", "starlette")
IMMUTABLE = b"cache-control: public, max-age=31536000, immutable"


# --- the servers (run as `python bench/static.py --serve NAME --dir D --port P`) --------


def serve(name: str, directory: str, port: int) -> None:
    import uvicorn

    if name == "tether":
        from tether.runtime.app import create_app
        from tether.runtime.serving import uvicorn_config

        app = create_app(static_dir=directory)
        config = uvicorn_config(app, host=HOST, port=port, http="httptools")
    else:
        from starlette.applications import Starlette
        from starlette.routing import Mount
        from starlette.staticfiles import StaticFiles

        app = Starlette(routes=[Mount("/static", StaticFiles(directory=directory))])
        config = uvicorn.Config(
            app,
            host=HOST,
            port=port,
            lifespan="off",
            access_log=False,
            log_level="warning",
            http="httptools",
            proxy_headers=False,  # as Tether's uvicorn_config
        )
    uvicorn.Server(config).run()


# --- process helpers -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early with code {process.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {HOST}:{port} after {START_TIMEOUT_S:g} s")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT_S)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads)."""
    try:
        import psutil
    except ImportError:
        with open(f"/proc/{pid}/stat") as file:
            fields = file.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


# --- the load generator ----------------------------------------------------------------


async def one_connection(
    port: int, request: bytes, count: int, body: bytes | None, immutable: bool
) -> None:
    """``count`` sequential GETs on one keep-alive connection; with ``body``, every
    answer is checked fully, else only its status."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        for _ in range(count):
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200 "):
                raise RuntimeError(f"unexpected answer: {head[:200]!r}")
            start = head.lower().find(b"content-length:")
            if start < 0:
                raise RuntimeError(f"no content-length: {head[:300]!r}")
            end = head.find(b"\r\n", start)
            content = await reader.readexactly(int(head[start + 15 : end]))
            if body is not None:
                if content != body:
                    raise RuntimeError("wrong body")
                if immutable and IMMUTABLE not in head.lower():
                    raise RuntimeError(f"not immutable: {head!r}")
    finally:
        writer.close()


async def load(
    port: int, request: bytes, total: int, connections: int, body: bytes | None, immutable: bool
) -> None:
    shares = [total // connections + (i < total % connections) for i in range(connections)]
    async with asyncio.timeout(RUN_TIMEOUT_S):
        await asyncio.gather(
            *(one_connection(port, request, n, body, immutable) for n in shares if n)
        )


@dataclass
class Server:
    name: str
    target: str
    process: subprocess.Popen[bytes]
    port: int
    rates: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)

    def measure(self, requests: int, connections: int, body: bytes) -> None:
        request = f"GET {self.target} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()
        immutable = self.name == "tether"
        warmup = max(requests // 10, connections)
        asyncio.run(load(self.port, request, warmup, connections, body, immutable))
        cpu = cpu_seconds(self.process.pid)
        start = time.perf_counter()
        asyncio.run(load(self.port, request, requests, connections, None, immutable))
        wall = time.perf_counter() - start
        used = cpu_seconds(self.process.pid) - cpu
        self.rates.append(requests / wall)
        self.cpu_us.append(used / requests * 1e6)


def start(name: str, directory: str, target: str) -> Server:
    port = free_port()
    command = [sys.executable, __file__, "--serve", name, "--dir", directory]
    process = subprocess.Popen([*command, "--port", str(port)])
    return Server(name, target, process, port)


def report(servers: dict[str, Server], args: argparse.Namespace) -> str:
    rate = {n: statistics.median(s.rates) for n, s in servers.items()}
    cpu = {n: statistics.median(s.cpu_us) for n, s in servers.items()}
    lines = [
        f"{args.reps} reps x {args.requests} requests ({args.size} B file, "
        f"{args.connections} keep-alive connections); medians over reps",
        "",
        "| server | requests/s | server CPU µs/request | per rep: req/s | per rep: µs |",
        "| --- | ---: | ---: | --- | --- |",
    ]
    for name, server in servers.items():
        rates = ", ".join(f"{r:.0f}" for r in server.rates)
        cpus = ", ".join(f"{c:.0f}" for c in server.cpu_us)
        lines.append(f"| {name} | {rate[name]:.0f} | {cpu[name]:.0f} | {rates} | {cpus} |")
    lines += [
        "",
        f"throughput ratio tether/starlette: {rate['tether'] / rate['starlette']:.2f}"
        " (above 1: Tether serves more per second)",
        f"CPU ratio tether/starlette: {cpu['tether'] / cpu['starlette']:.2f}"
        " (below 1: Tether spends less server CPU per request)",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=3000, help="timed requests per run")
    parser.add_argument("--reps", type=int, default=3, help="repetitions per server")
    parser.add_argument("--connections", type=int, default=4, help="keep-alive connections")
    parser.add_argument("--size", type=int, default=2048, help="bytes of the CSS file")
    parser.add_argument("--serve", choices=SERVERS, help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.dir, args.port)
        return 0
    if args.requests < 1 or args.reps < 1 or args.connections < 1:
        parser.error("--requests, --reps and --connections must be at least 1")

    rule = b"body { margin: 0; color: #123456; }\n"
    body = (rule * (args.size // len(rule) + 1))[: args.size]
    version = hashlib.sha256(body).hexdigest()[:16]
    servers: dict[str, Server] = {}
    with tempfile.TemporaryDirectory(prefix="tether-bench-static-") as directory:
        Path(directory, "app.css").write_bytes(body)
        try:
            for name, target in (
                ("tether", f"/_/static/app.css?v={version}"),
                ("starlette", f"/static/app.css?v={version}"),
            ):
                servers[name] = start(name, directory, target)
            for server in servers.values():
                wait_for_port(server.port, server.process)
            for rep in range(args.reps):
                order = SERVERS if rep % 2 == 0 else SERVERS[::-1]
                for name in order:
                    servers[name].measure(args.requests, args.connections, body)
                    print(
                        f"rep {rep + 1}/{args.reps} {name}: {servers[name].rates[-1]:.0f} req/s,"
                        f" {servers[name].cpu_us[-1]:.0f} µs CPU/request",
                        file=sys.stderr,
                        flush=True,
                    )
        finally:
            for server in servers.values():
                stop(server.process)
    print(report(servers, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
