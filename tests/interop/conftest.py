"""The real ``anvil-uplink`` client from PyPI, in its own virtual environment, run as a
separate process against a real Tether server (issue 7)."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import textwrap
import threading
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import TIMEOUT

ANVIL_UPLINK = "anvil-uplink==0.7.0"
"""The client version the interop suite pins (README: compatibility)."""
INSTALL_TIMEOUT = 300.0


@pytest.fixture(scope="session")
def anvil_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Python with the real anvil-uplink installed (and nothing of Tether's)."""
    home = tmp_path_factory.mktemp("anvil-venv")
    venv.create(home, with_pip=True)
    python = home / "bin" / "python"
    result = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            ANVIL_UPLINK,
        ],
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"cannot install {ANVIL_UPLINK}: {result.stderr[-2000:]}")
    return python


class Script:
    """An uplink script run by the real client: it prints JSON lines; ``lines()`` reads them."""

    def __init__(self, python: Path, code: str, url: str, key: str) -> None:
        self.process = subprocess.Popen(
            [str(python), "-c", textwrap.dedent(code)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "UPLINK_URL": url, "UPLINK_KEY": key, "PYTHONPATH": ""},
        )
        self._lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()

    def read(self) -> object:
        """The next JSON line the script printed (fails on EOF or after TIMEOUT)."""
        try:
            line = self._lines.get(timeout=TIMEOUT)
        except queue.Empty:
            line = None
        if not line:
            _, err = self.finish()
            pytest.fail(f"the script printed nothing more; stderr: {err[-3000:]}")
        return json.loads(line)

    def _pump(self) -> None:
        """Reads stdout on a thread: lines already buffered are never missed."""
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put("")

    def finish(self) -> tuple[str, str]:
        """Closes its stdin (scripts wait on it to end), then waits; kills past TIMEOUT."""
        process = self.process
        if process.stdin is not None and not process.stdin.closed:
            process.stdin.close()
        try:
            process.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        self._reader.join(10)
        err = process.stderr.read() if process.stderr and not process.stderr.closed else ""
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
        return "", err


@pytest.fixture
def run_script(anvil_python: Path) -> Iterator[object]:
    """``run_script(code, url, key)`` starts a script; every script is stopped afterwards."""
    started: list[Script] = []

    def start(code: str, url: str, key: str) -> Script:
        script = Script(anvil_python, PRELUDE + textwrap.dedent(code), url, key)
        started.append(script)
        return script

    yield start
    for script in started:
        if script.process.poll() is None:
            script.process.kill()
        script.finish()


PRELUDE = """
import json, os, sys
import anvil.server

def out(value):
    print(json.dumps(value, default=repr), flush=True)

URL, KEY = os.environ["UPLINK_URL"], os.environ["UPLINK_KEY"]


def until_reconnected(call, seconds=20):
    # call() again until the client is back (it reconnects on its own), within seconds
    import time
    deadline = time.time() + seconds
    while True:
        try:
            return call()
        except Exception as exc:
            if time.time() > deadline:
                return ["gave up", type(exc).__name__, str(exc)]
            time.sleep(0.2)
"""


def uplink_url(http_url: str) -> str:
    return http_url.replace("http://", "ws://") + "/_/uplink"


__all__ = ["ANVIL_UPLINK", "Script", "sys", "uplink_url"]
