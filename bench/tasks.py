"""Background tasks: launch-to-first-state latency and tasks per second.

    python bench/tasks.py [--latency N] [--burst M] [--max-tasks K ...]

Starts ``tether serve bench/tasks_app.py --store memory`` as a subprocess on a free
127.0.0.1 port, connects a trusted client, and measures:

* **latency**: N tasks launched one after the other; for each, the time from the client
  sending the launch to the task's first ``task_state`` write (the task stamps
  ``time.time()``, same machine clock), and to the client seeing that state (polling every
  2 ms). Median and max.
* **throughput**: M empty tasks launched at once, with ``--max-tasks`` K (each value given
  runs its own server); tasks per second from the first launch to the last completion.

Every wait is bounded; the server is stopped (terminate, then kill) in a ``finally``.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from tether.client import Client
from tether.protocol.names import TASK

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(max_tasks: int) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tether",
            "serve",
            "bench/tasks_app.py",
            "--port",
            str(port),
            "--store",
            "memory",
            "--uplink-key",
            "bench",
            "--max-tasks",
            str(max_tasks),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return process, port
        if process.poll() is not None:
            raise RuntimeError("the server exited")
        time.sleep(0.05)
    stop(process)
    raise TimeoutError("the server did not start")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def wait(predicate: object, what: str, interval: float = 0.002) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(interval)


def latency(client: Client, count: int) -> tuple[list[float], list[float]]:
    to_state, seen = [], []
    for _ in range(count):
        sent = time.time()
        task = client.call(TASK, "launch", "report", [], {})
        task_id = task.get_id()  # type: ignore[attr-defined]
        state: dict[str, float] = {}

        def reported(state: dict[str, float] = state, task_id: str = task_id) -> bool:
            state.update(client.call(TASK, "state", task_id))  # type: ignore[arg-type]
            return "t" in state

        wait(reported, "the first state")
        seen.append(time.time() - sent)
        to_state.append(state["t"] - sent)
        wait(lambda: client.call(TASK, "status", task_id) != "running", "the end", 0.01)  # noqa: B023
    return to_state, seen


def throughput(client: Client, count: int) -> float:
    start = time.time()
    ids = [client.call(TASK, "launch", "empty", [], {}).get_id() for _ in range(count)]  # type: ignore[attr-defined]
    for task_id in ids:
        wait(lambda: client.call(TASK, "status", task_id) == "completed", "completion", 0.01)  # noqa: B023
    return count / (time.time() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=int, default=10, help="tasks timed one by one")
    parser.add_argument("--burst", type=int, default=40, help="empty tasks launched at once")
    parser.add_argument("--max-tasks", type=int, nargs="+", default=[2, 4])
    options = parser.parse_args()
    print(f"{os.cpu_count()} cores; Python {sys.version.split()[0]}")
    for max_tasks in options.max_tasks:
        process, port = start_server(max_tasks)
        try:
            with Client(f"ws://127.0.0.1:{port}/_/ws", "bench") as client:
                if max_tasks == options.max_tasks[0]:
                    to_state, seen = latency(client, options.latency)
                    first = statistics.median(to_state) * 1000
                    print(
                        f"launch -> first task_state: median {first:.0f} ms"
                        f" (max {max(to_state) * 1000:.0f} ms); seen by the client: median"
                        f" {statistics.median(seen) * 1000:.0f} ms"
                    )
                rate = throughput(client, options.burst)
                print(f"--max-tasks {max_tasks}: {options.burst} empty tasks at {rate:.1f} tasks/s")
        finally:
            stop(process)


if __name__ == "__main__":
    main()
