"""The README's quickstart, as a new user runs it: `tether serve` and the client script."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

from tests.conftest import ROOT, TIMEOUT


def run_client(url: str) -> subprocess.CompletedProcess[str]:
    """Runs examples/quickstart/client.py against ``url``, as a user would."""
    return subprocess.run(
        [sys.executable, "examples/quickstart/client.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={**os.environ, "TETHER_URL": url},
        check=False,
    )


def test_quickstart_client_against_tether_serve(
    tether_serve: Callable[..., tuple[object, int]],
) -> None:
    _, port = tether_serve("examples/quickstart", "--uplink-key", "dev-key")
    result = run_client(f"ws://127.0.0.1:{port}/_/ws")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "Hello, world!"
    assert lines[1].startswith("items: [Item(1, 'teapot'")
    assert lines[2] == "price of teapot is 19.99 EUR"
    assert lines[3].startswith("bought: 3 x Item(2, 'kettle'")
    assert lines[4] == "OutOfStock raised as itself: item 99 is out of stock"
    assert lines[5] == "sum: inf"


def test_client_without_a_server_fails_clearly() -> None:
    result = run_client("ws://127.0.0.1:9/_/ws")
    assert result.returncode == 1
    assert "AppOfflineError: cannot connect to ws://127.0.0.1:9/_/ws" in result.stderr


def run_tether(*args: str) -> subprocess.CompletedProcess[str]:
    """Runs ``python -m tether ARGS`` and returns what it printed."""
    return subprocess.run(
        [sys.executable, "-m", "tether", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def test_python_dash_m_tether_and_help() -> None:
    result = run_tether("serve", "--help")
    assert result.returncode == 0, result.stderr
    assert "--uplink-key" in result.stdout
    bad = run_tether("serve", "no/such/app.py")
    assert bad.returncode != 0
    assert "no app file" in bad.stderr
