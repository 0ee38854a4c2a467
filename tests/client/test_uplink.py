"""A trusted client in its own process registers functions that everyone can call."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests import conftest
from tests.conftest import ROOT, TIMEOUT, stop
from tether import server, testing
from tether.client import AsyncClient

KEY = "uplink-test-key"


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with testing.serve("tests.apps.echo", uplink_key=KEY) as url:
        yield url


def start_worker(url: str, key: str) -> subprocess.Popen[str]:
    return conftest.start_worker("tests.apps.uplink_worker", url, key)


async def test_registered_functions_are_callable_by_everyone(url: str) -> None:
    worker = await asyncio.to_thread(start_worker, url, KEY)
    try:
        async with asyncio.timeout(TIMEOUT), AsyncClient(url) as client:
            assert await client.call("uplink_add", 2, 3) == 5
            assert await client.call("uplink.later", 4) == 40
            # server code calls the uplink's function, which calls back into the server
            assert await client.call("call_peer", "uplink_nested", {"v": 1}) == [
                "from uplink",
                {"v": 1},
            ]
            # in flight when the uplink goes away -> UplinkDisconnectedError
            pending = asyncio.ensure_future(client.call("uplink_wait"))
            await asyncio.sleep(0.2)
            worker.kill()
            with pytest.raises(server.UplinkDisconnectedError):
                await pending
            # after -> NoServerFunctionError
            with pytest.raises(server.NoServerFunctionError, match="uplink_add"):
                await client.call("uplink_add", 1, 1)
            assert await client.call("echo", "server still fine") == "server still fine"
    finally:
        stop(worker)


def test_registering_without_the_uplink_key_is_refused(url: str) -> None:
    process = subprocess.run(
        [sys.executable, "-m", "tests.apps.uplink_worker", url, ""],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert process.stdout.startswith("REFUSED")
    assert "uplink key" in process.stdout
