"""Shared test settings: TIMEOUT only catches hangs; it never measures speed."""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

T = TypeVar("T")
TIMEOUT = float(os.environ.get("TETHER_TEST_TIMEOUT", "30"))
ROOT = Path(__file__).resolve().parent.parent


def wait_until(predicate: Callable[[], T], what: str, timeout: float = TIMEOUT) -> T:
    """Polls ``predicate`` until it returns something true (and returns that); fails the
    test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while (value := _poll(predicate, what, deadline)) is None:
        time.sleep(0.02)
    return value


async def eventually(predicate: Callable[[], T], what: str, limit: float = TIMEOUT) -> T:
    """:func:`wait_until` in a coroutine: the loop keeps running while it polls."""
    import asyncio

    deadline = time.monotonic() + limit
    while True:
        value = _poll(predicate, what, deadline)
        if value is not None:
            return value
        await asyncio.sleep(0.005)  # others' callbacks on this loop make it true


def _poll(predicate: Callable[[], T], what: str, deadline: float) -> T | None:
    value = predicate()
    if value:
        return value
    if time.monotonic() > deadline:
        pytest.fail(f"timed out waiting for {what}")
    return None


def run_script(script: str, url: str) -> subprocess.CompletedProcess[str]:
    """Runs ``script`` (a path below the repository) against the server at ``url``, as a
    user would: ``TETHER_URL`` tells the example where the server is."""
    return subprocess.run(
        [sys.executable, script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={**os.environ, "TETHER_URL": url},
        check=False,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[str] | None = None) -> None:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited early: {process.communicate()}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on port {port} after {TIMEOUT} s")


def stop(process: subprocess.Popen[str]) -> tuple[str, str]:
    if process.poll() is None:
        process.terminate()
        try:
            return process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.communicate(timeout=10)


def start_worker(module: str, url: str, key: str) -> subprocess.Popen[str]:
    """Starts ``python -m MODULE URL KEY`` (a client process that prints READY once it is
    connected); fails the test if it does not within TIMEOUT. Stop it with :func:`stop`."""
    process = subprocess.Popen(
        [sys.executable, "-m", module, url, key],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], TIMEOUT)
    line = process.stdout.readline() if ready else ""
    if not line.startswith("READY"):
        out, err = stop(process)
        pytest.fail(f"worker {module} did not start: {line!r} {out!r} {err!r}")
    return process


@pytest.fixture
def tether_serve() -> Iterator[object]:
    """Starts `python -m tether serve ...` subprocesses; stops them all afterwards."""
    started: list[subprocess.Popen[str]] = []

    def start(*args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], int]:
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "tether", "serve", *args, "--port", str(port)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        started.append(process)
        wait_for_port(port, process)
        return process, port

    yield start
    for process in started:
        stop(process)


def serve_both_ways(app: str, **options: Any) -> tuple[Any, Any]:
    """The ``served`` and ``url`` fixtures of a test module: one real server of ``app``
    for the module, and its URL through each transport (the WebSocket, the TCP port).

    Use: ``served, url = serve_both_ways("tests.apps.echo", uplink_key=KEY)``.
    """
    from tether import testing

    @pytest.fixture(scope="module")
    def served() -> Iterator[testing.ServerURL]:
        with testing.serve(app, tcp_port=0, **options) as url:
            yield url

    @pytest.fixture(scope="module", params=["ws", "tcp"])
    def url(request: pytest.FixtureRequest, served: testing.ServerURL) -> str:
        return served if request.param == "ws" else str(served.tcp)

    return served, url


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected socket pair; the first is non-blocking, as uvloop leaves a connection's."""
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    yield ours, theirs
    ours.close()
    theirs.close()
