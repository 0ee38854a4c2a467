"""examples/pb as a user runs it: `tether serve examples/pb` and the two client scripts."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import free_port, run_script, stop

Serve = Callable[..., tuple[subprocess.Popen[str], int]]


def run_example(script: str, url: str) -> subprocess.CompletedProcess[str]:
    """Runs ``examples/pb/SCRIPT`` against ``url``, as a user would."""
    return run_script(f"examples/pb/{script}", url)


def store(tmp_path: Path) -> tuple[str, str]:
    """Keeps the server's files out of examples/pb."""
    return "--store", f"sqlite:///{tmp_path / 'pb.db'}"


@pytest.mark.parametrize("transport", ["ws", "tcp"])
def test_copy_sender_and_cache_client_against_tether_serve(
    tether_serve: Serve, tmp_path: Path, transport: str
) -> None:
    tcp_port = free_port()
    process, port = tether_serve("examples/pb", *store(tmp_path), "--tcp-port", str(tcp_port))
    url = f"ws://127.0.0.1:{port}/_/ws" if transport == "ws" else f"tether://127.0.0.1:{tcp_port}"

    sent = run_example("copy_sender.py", url)
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.splitlines() == ["7 frogs", "pond.CopyPond", "pond arrived safe and sound"]

    cached = run_example("cache_client.py", url)
    assert cached.returncode == 0, cached.stderr
    assert cached.stdout.splitlines() == [
        "[2] ducks: ['one duck', 'two duck']",
        "one mirror per connection: True",
        "[3] ducks: ['one duck', 'two duck', 'ugly duckling']",
        "[2] ducks: ['two duck', 'ugly duckling']",
        "observers on the server: 1",
        "observers on the server: 0",
    ]

    out, err = stop(process)
    assert " got pond: ReceiverPond 7 frogs" in out.splitlines(), (out, err)
    assert "Traceback" not in err, err


def test_tether_serve_takes_max_cacheables(tether_serve: Serve, tmp_path: Path) -> None:
    _, port = tether_serve("examples/pb", *store(tmp_path), "--max-cacheables", "1")
    cached = run_example("cache_client.py", f"ws://127.0.0.1:{port}/_/ws")
    assert cached.returncode == 0, cached.stderr
    assert cached.stdout.splitlines()[1] == "one mirror per connection: True"
