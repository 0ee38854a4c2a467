"""The README's quickstart, as a new user runs it: `tether serve` and the client script."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from tests.conftest import ROOT, TIMEOUT, run_script


def run_client(url: str) -> subprocess.CompletedProcess[str]:
    """Runs examples/quickstart/client.py against ``url``, as a user would."""
    return run_script("examples/quickstart/client.py", url)


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


def get(url: str) -> tuple[int, dict[str, str], bytes]:
    with urllib.request.urlopen(url, timeout=TIMEOUT) as answer:
        return answer.status, {k.lower(): v for k, v in answer.headers.items()}, answer.read()


def test_quickstart_page_assets_and_endpoints(
    tether_serve: Callable[..., tuple[object, int]],
) -> None:
    _, port = tether_serve("examples/quickstart")
    origin = f"http://127.0.0.1:{port}"

    status, headers, page = get(origin + "/")
    assert status == 200
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert headers["set-cookie"].startswith("tether-session=")
    css = (ROOT / "examples/quickstart/static/css/app.css").read_bytes()
    version = hashlib.sha256(css).hexdigest()[:16]
    assert f'href="/_/static/css/app.css?v={version}"' in page.decode()
    [script] = re.findall(r'src="(/_/static/js/app\.js\?v=[0-9a-f]{16})"', page.decode())

    status, headers, body = get(f"{origin}/_/static/css/app.css?v={version}")
    assert (status, body) == (200, css)
    assert headers["cache-control"] == "public, max-age=31536000, immutable"
    assert "set-cookie" not in headers
    assert get(origin + script)[0] == 200

    status, headers, body = get(origin + "/_/api/items")
    assert headers["content-type"] == "application/json"
    assert [item["name"] for item in json.loads(body)] == ["teapot", "kettle"]
    _, _, body = get(origin + "/_/api/items/1/price?currency=USD")
    assert json.loads(body) == {"item": 1, "cents": 1999, "currency": "USD"}


def test_quickstart_background_task(
    tether_serve: Callable[..., tuple[object, int]], tmp_path: Path
) -> None:
    store = f"sqlite:///{tmp_path / 'quickstart.db'}"
    _, port = tether_serve("examples/quickstart", "--store", store)
    origin = f"http://127.0.0.1:{port}"
    launch = urllib.request.Request(origin + "/_/api/restock", method="POST")
    with urllib.request.urlopen(launch, timeout=TIMEOUT) as answer:
        task_id = json.loads(answer.read())["id"]
    seen: list[dict[str, object]] = []
    deadline = time.monotonic() + TIMEOUT
    while not seen or seen[-1]["status"] == "running":
        assert time.monotonic() < deadline, seen[-3:]
        seen.append(json.loads(get(f"{origin}/_/api/tasks/{task_id}")[2]))
        time.sleep(0.1)
    assert seen[-1] == {"status": "completed", "progress": 1.0}
    assert any(0 < float(s["progress"]) < 1 for s in seen)  # watched while it ran

    listed = run_tether("tasks", "--store", store, "--json")
    assert listed.returncode == 0, listed.stderr
    [row] = [json.loads(line) for line in listed.stdout.splitlines()]
    assert (row["name"], row["status"], row["progress"]) == ("restock", "completed", 1.0)


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
