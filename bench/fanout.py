"""Live-push fan-out: one ``send_update`` pushed to N subscribed connections.

    python bench/fanout.py [--connections 1000] [--workers 4] [--rounds 7] [--transports ws,tcp]

For each transport (the WebSocket ``ws://127.0.0.1:PORT/_/ws`` and the raw TCP port
``tether://127.0.0.1:TCPPORT``): start a fresh server (``python -m tether serve
bench/fanout_app.py --port P --tcp-port T``) as a subprocess, start ``--workers`` client
processes that each open their share of the connections on one event loop (uvloop unless
``--loop asyncio``). Each connection asks the server for ``video_cap(0)`` (signed for that
connection), sets an update handler on it and subscribes with ``AsyncClient.subscribe``.
Then one warm-up round and ``--rounds`` timed rounds: the parent calls ``publish(0, r)``
from another connection; the server stamps ``time.monotonic()`` and calls
``cap.send_update(...)`` once; every handler stamps ``time.monotonic()`` (system-wide on
Linux, so comparable across processes) and each worker reports its first and last stamp
of the round once all its connections got the update.

Reported per transport (median and max over the timed rounds, in ms):

* **last handler**: from the server's ``send_update`` call to the last subscriber's
  handler, over all connections (the figure with the 100 ms target);
* from the parent's ``publish`` call to the last handler (adds one call's way in);
* the first handler, and how long ``send_update`` itself took in the server (wall time,
  and in brackets the CPU time of the thread that ran it: on the TCP port that thread
  writes every frame itself; on the WebSocket it queues them for the event loop).

Every wait is bounded; the server and the workers are stopped in ``finally`` blocks.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from peers import BENCH_DIR
from peers.common import HOST, machine_busy_seconds, process_cpu_seconds
from run import REPO_DIR, free_port, stop_group, tail, wait_for_port, wait_quiet

APP = BENCH_DIR / "fanout_app.py"
SCOPE_ID = 0
TARGET_MS = 100.0
SERVER_START_TIMEOUT_S = 30.0
WORKER_STOP_TIMEOUT_S = 15.0
ROUND_GAP_S = 0.3  # idle time before each round, so one round's tail never overlaps the next
CONNECT_CONCURRENCY = 25  # connections each worker opens at a time (TCP listen backlog: 100)


# --- the client workers ---------------------------------------------------------------


def raise_nofile() -> None:
    """Soft RLIMIT_NOFILE up to the hard limit (1000 sockets need more than 1024 fds)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class RoundStamps:
    """The update handler of every connection of one worker: per round, how many
    handlers ran and the first and last ``time.monotonic()``; reports a complete round."""

    def __init__(self, expected: int, pipe: Connection) -> None:
        self.expected = expected
        self.pipe = pipe
        self.seen: dict[int, list[float]] = {}  # round -> [count, first, last]

    def on_update(self, update: Any) -> None:
        now = time.monotonic()
        rnd = update["round"]
        entry = self.seen.get(rnd)
        if entry is None:
            self.seen[rnd] = entry = [0.0, now, now]
        entry[0] += 1
        entry[2] = now
        if entry[0] == self.expected:
            self.pipe.send(("round", rnd, int(entry[0]), entry[1], entry[2]))

    def report(self, rnd: int) -> None:
        """The parent gave up waiting: send what this worker saw of the round."""
        entry = self.seen.get(rnd, [0.0, 0.0, 0.0])
        self.pipe.send(("round", rnd, int(entry[0]), entry[1], entry[2]))


def worker_main(url: str, count: int, pipe: Connection, loop_name: str, timeout: float) -> None:
    """Entry of a worker process: ``count`` subscribed connections on one loop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us (Ctrl-C reaches both)
    raise_nofile()
    try:
        coroutine = worker_loop(url, count, pipe, timeout)
        if loop_name == "uvloop":
            import uvloop

            uvloop.run(coroutine)
        else:
            asyncio.run(coroutine)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            pipe.send(("error", f"{type(exc).__name__}: {exc}"))
        raise


async def worker_loop(url: str, count: int, pipe: Connection, budget: float) -> None:
    from tether.client import AsyncClient
    from tether.codec.capability import Capability

    stamps = RoundStamps(count, pipe)
    clients: list[AsyncClient] = []
    caps: list[Capability] = []  # strong references: a collected capability unsubscribes
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def open_one() -> None:
        async with gate:
            client = AsyncClient(url, open_timeout=budget)
            await client.connect()
            clients.append(client)
            cap = await client.call("video_cap", SCOPE_ID)
            if type(cap) is not Capability:
                raise TypeError(f"video_cap returned {type(cap).__name__}")
            cap.set_update_handler(stamps.on_update)
            await client.subscribe(cap)
            caps.append(cap)

    loop = asyncio.get_running_loop()
    stop = loop.create_future()

    def on_command() -> None:
        try:
            message = pipe.recv()
        except (EOFError, OSError):
            message = ("stop",)
        if message[0] == "report":
            stamps.report(message[1])
        elif not stop.done():
            stop.set_result(None)

    started = time.monotonic()
    try:
        try:
            async with asyncio.timeout(budget):
                await asyncio.gather(*(open_one() for _ in range(count)))
        except TimeoutError:
            raise TimeoutError(
                f"{len(caps)} of {count} connections subscribed within {budget:g} s"
            ) from None
        pipe.send(("ready", len(caps), time.monotonic() - started))
        loop.add_reader(pipe.fileno(), on_command)
        await stop
    finally:
        with contextlib.suppress(Exception):
            loop.remove_reader(pipe.fileno())
        with contextlib.suppress(Exception, TimeoutError):
            async with asyncio.timeout(WORKER_STOP_TIMEOUT_S - 5):
                await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


# --- the parent -----------------------------------------------------------------------


@dataclass
class Round:
    index: int  # 0 is the warm-up
    call_at: float  # parent: just before the publish call
    send_at: float  # server: just before send_update
    send_done: float  # server: just after send_update returned
    send_cpu: float  # server: CPU time of the thread that ran send_update, in it
    returned_at: float  # parent: the publish call returned
    delivered: int
    first: float
    last: float

    @property
    def complete(self) -> bool:
        return self.last > 0

    @property
    def last_ms(self) -> float:
        return (self.last - self.send_at) * 1000

    @property
    def last_from_call_ms(self) -> float:
        return (self.last - self.call_at) * 1000

    @property
    def first_ms(self) -> float:
        return (self.first - self.send_at) * 1000

    @property
    def send_ms(self) -> float:
        return (self.send_done - self.send_at) * 1000


@dataclass
class TransportResult:
    transport: str
    url: str
    connections: int
    workers: int
    connect_s: float = 0.0
    other_load_pct: float = 0.0  # other processes' busy CPU during the timed rounds
    rounds: list[Round] = field(default_factory=list)
    error: str | None = None

    def timed(self) -> list[Round]:
        return [r for r in self.rounds if r.index > 0]


def server_argv(port: int, tcp_port: int, data_dir: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "tether",
        "serve",
        str(APP),
        "--host",
        HOST,
        "--port",
        str(port),
        "--tcp-port",
        str(tcp_port),
        "--data-dir",
        data_dir,
        "--log-level",
        "warning",
    ]


class Workers:
    """The client worker processes of one transport, each with its pipe."""

    def __init__(self, url: str, total: int, count: int, loop_name: str, timeout: float) -> None:
        context = multiprocessing.get_context("spawn")
        shares = [total // count + (1 if i < total % count else 0) for i in range(count)]
        self.pipes: list[Connection] = []
        self.procs: list[multiprocessing.process.BaseProcess] = []
        try:
            for share in shares:
                ours, theirs = context.Pipe()
                self.pipes.append(ours)
                proc = context.Process(
                    target=worker_main,
                    args=(url, share, theirs, loop_name, timeout),
                    name="fanout-worker",
                    daemon=True,
                )
                proc.start()
                theirs.close()
                self.procs.append(proc)
        except BaseException:
            self.stop()  # the ones already started
            raise

    def receive(
        self, pipes: list[Connection], kind: str, timeout: float, rnd: int | None = None
    ) -> dict[int, tuple[Any, ...]]:
        """Waits (bounded) for one ``kind`` message (of round ``rnd``) from each pipe;
        returns worker index -> message."""
        got: dict[int, tuple[Any, ...]] = {}
        deadline = time.monotonic() + timeout
        waiting = list(pipes)
        while waiting:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for ready in wait(waiting, timeout=left):
                assert isinstance(ready, Connection)
                index = self.pipes.index(ready)
                try:
                    message = ready.recv()
                except EOFError:
                    raise RuntimeError(f"worker {index} exited") from None
                if message[0] == "error":
                    raise RuntimeError(f"worker {index}: {message[1]}")
                if message[0] != kind or (rnd is not None and message[1] != rnd):
                    continue  # a late report of an earlier round
                got[index] = message
                waiting.remove(ready)
        return got

    def stop(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.send(("stop",))
        deadline = time.monotonic() + WORKER_STOP_TIMEOUT_S
        for proc in self.procs:
            proc.join(max(0.1, deadline - time.monotonic()))
        for proc in self.procs:
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
        for pipe in self.pipes:
            pipe.close()


def our_cpu_seconds(pids: list[int]) -> float:
    """CPU time of this process (all its threads) and of ``pids``."""
    return time.process_time() + sum(process_cpu_seconds(pid) for pid in pids)


def run_rounds(
    client: Any,
    workers: Workers,
    result: TransportResult,
    rounds: int,
    timeout: float,
    pids: list[int],
) -> None:
    started = (0.0, 0.0, 0.0)
    for index in range(rounds + 1):  # round 0 is the warm-up
        if index == 1:
            started = (time.monotonic(), machine_busy_seconds(), our_cpu_seconds(pids))
        time.sleep(ROUND_GAP_S)
        call_at = time.monotonic()
        send_at, send_done, send_cpu = client.call("publish", SCOPE_ID, index)
        returned_at = time.monotonic()
        reports = workers.receive(workers.pipes, "round", timeout, index)
        missing = [p for i, p in enumerate(workers.pipes) if i not in reports]
        for pipe in missing:  # ask for what they saw, so the failure says how much arrived
            pipe.send(("report", index))
        reports.update(workers.receive(missing, "round", 5.0, index))
        messages = list(reports.values())
        delivered = sum(m[2] for m in messages)
        complete = not missing
        result.rounds.append(
            Round(
                index,
                call_at,
                send_at,
                send_done,
                send_cpu,
                returned_at,
                delivered,
                min((m[3] for m in messages if m[2]), default=0.0),
                max((m[4] for m in messages), default=0.0) if complete else 0.0,
            )
        )
        if not complete:
            raise RuntimeError(
                f"round {index}: {delivered} of {result.connections} handlers ran"
                f" within {timeout:.0f} s"
            )
    wall = time.monotonic() - started[0]
    other = (machine_busy_seconds() - started[1]) - (our_cpu_seconds(pids) - started[2])
    result.other_load_pct = max(0.0, other / wall * 100)


def run_transport(transport: str, args: argparse.Namespace, workdir: Path) -> TransportResult:
    from tether.client import Client

    port, tcp_port = free_port(), free_port()
    url = f"ws://{HOST}:{port}/_/ws" if transport == "ws" else f"tether://{HOST}:{tcp_port}"
    result = TransportResult(transport, url, args.connections, args.workers)
    log_path = workdir / f"server.{transport}.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            server_argv(port, tcp_port, str(workdir / "data")),
            cwd=REPO_DIR,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    workers: Workers | None = None
    try:
        wait_for_port(port, server, SERVER_START_TIMEOUT_S)
        wait_for_port(tcp_port, server, SERVER_START_TIMEOUT_S)
        if args.server_pid_file:
            Path(args.server_pid_file).write_text(f"{server.pid}\n")
        started = time.monotonic()
        workers = Workers(url, args.connections, args.workers, args.loop, args.timeout)
        ready = workers.receive(workers.pipes, "ready", args.timeout + 30)
        if len(ready) != len(workers.pipes):
            raise RuntimeError(f"only {len(ready)} of {len(workers.pipes)} workers got ready")
        result.connect_s = time.monotonic() - started
        with Client(url) as client:
            subscribed = client.call("subscribers", SCOPE_ID)
            if subscribed != args.connections:
                raise RuntimeError(f"{subscribed} of {args.connections} connections subscribed")
            quiet = wait_quiet(args.quiet_wait) if args.quiet_wait > 0 else ""
            if quiet:
                print(f"  {transport}: {quiet}", flush=True)
            pids = [server.pid, *(p.pid for p in workers.procs if p.pid is not None)]
            run_rounds(client, workers, result, args.rounds, args.timeout, pids)
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        logged = tail(log_path)
        if logged:
            result.error += f"\n  server log:\n{logged}"
    finally:
        if workers is not None:
            workers.stop()
        stop_group(server)
    return result


# --- report ---------------------------------------------------------------------------


LABELS = {"ws": "WebSocket (/_/ws)", "tcp": "TCP (tether://)"}


def summary_row(result: TransportResult) -> list[str]:
    timed = result.timed()

    def med_max(values: Callable[[Round], float]) -> tuple[str, str]:
        xs = [values(r) for r in timed]
        return f"{statistics.median(xs):.1f}", f"{max(xs):.1f}"

    last_med, last_max = med_max(lambda r: r.last_ms)
    call_med, call_max = med_max(lambda r: r.last_from_call_ms)
    first_med, _ = med_max(lambda r: r.first_ms)
    send_med, _ = med_max(lambda r: r.send_ms)
    cpu_med, _ = med_max(lambda r: r.send_cpu * 1000)
    verdict = "yes" if max(r.last_ms for r in timed) < TARGET_MS else "no"
    return [
        LABELS[result.transport],
        f"{result.connections:,}",
        f"**{last_med}**",
        last_max,
        call_med,
        call_max,
        first_med,
        f"{send_med} ({cpu_med})",
        ", ".join(f"{r.last_ms:.0f}" for r in timed),
        verdict,
    ]


def report(results: list[TransportResult], args: argparse.Namespace) -> str:
    header = [
        "transport",
        "connections",
        "last handler, median ms",
        "max ms",
        "from publish call, median ms",
        "max ms",
        "first handler, median ms",
        "send_update returned (its CPU), median ms",
        "all rounds, last handler ms",
        f"max < {TARGET_MS:.0f} ms",
    ]
    lines = ["| " + " | ".join(header) + " |", "| --- | " + "---: | " * 8 + "--- |"]
    for result in results:
        if result.error is None and result.timed():
            lines.append("| " + " | ".join(summary_row(result)) + " |")
    text = "\n".join(lines)
    text += (
        f"\n\n{args.connections:,} connections in {args.workers} worker processes"
        f" ({args.loop}), 1 warm-up + {args.rounds} timed rounds per transport; times from"
        " the server's send_update call unless said otherwise."
    )
    for result in results:
        if result.error is None:
            text += f"\n{LABELS[result.transport]}: connected and subscribed in"
            text += f" {result.connect_s:.1f} s; other load during the rounds"
            text += f" {result.other_load_pct:.0f}% of a core."
        else:
            text += f"\n{LABELS[result.transport]} FAILED: {result.error}"
    return text


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    signal.signal(signal.SIGTERM, _raise_interrupt)  # so the finally blocks stop everything
    signal.signal(signal.SIGHUP, _raise_interrupt)
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", type=int, default=1000, help="subscribed connections")
    parser.add_argument("--workers", type=int, default=4, help="client processes")
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds (after 1 warm-up)")
    parser.add_argument("--transports", default="ws,tcp", help="ws, tcp or both (ws,tcp)")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default=None)
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="bound on connecting and on each round (s)"
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=5.0,
        help="before the rounds, wait up to this long for the machine to go idle (0: no)",
    )
    parser.add_argument("--json", help="also write every round's stamps to this file")
    parser.add_argument(
        "--server-pid-file", help="write the server's pid here once it listens (to profile it)"
    )
    args = parser.parse_args()
    transports = [t.strip() for t in args.transports.split(",") if t.strip()]
    if not transports or any(t not in LABELS for t in transports):
        parser.error("--transports takes ws, tcp or ws,tcp")
    if args.connections < 1 or args.workers < 1 or args.rounds < 1:
        parser.error("--connections, --workers and --rounds must be positive")
    args.workers = min(args.workers, args.connections)
    if args.loop is None:
        try:
            import uvloop  # noqa: F401

            args.loop = "uvloop"
        except ImportError:
            args.loop = "asyncio"
    raise_nofile()
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    per_worker = -(-args.connections // args.workers)
    if soft != resource.RLIM_INFINITY and soft < args.connections + 100:
        print(f"warning: RLIMIT_NOFILE is {soft}: the server may run out of descriptors")
    print(
        f"fan-out: {args.connections} connections ({args.workers} workers x <= {per_worker},"
        f" {args.loop}), 1 warm-up + {args.rounds} rounds, transports {', '.join(transports)}",
        flush=True,
    )
    results: list[TransportResult] = []
    try:
        with tempfile.TemporaryDirectory(prefix="tether-fanout-") as tmp:
            for transport in transports:
                result = run_transport(transport, args, Path(tmp))
                results.append(result)
                state = "failed" if result.error else "done"
                print(f"  {transport}: {state}", flush=True)
    except KeyboardInterrupt as exc:  # the server and the workers are already stopped
        print(f"interrupted ({exc or 'Ctrl-C'})", file=sys.stderr)
        return 130
    text = report(results, args)
    print()
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "args": vars(args),
                    "results": [
                        {**asdict(r), "rounds": [asdict(x) for x in r.rounds]} for r in results
                    ],
                },
                f,
                indent=2,
            )
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
