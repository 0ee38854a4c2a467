"""Background tasks against a real server: each task a real process, launched, watched,
killed, limited and listed; a server crash and restart; trust over the wire."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.apps.tasks import TaskBoom
from tests.conftest import ROOT, TIMEOUT, wait_until
from tether import server, testing
from tether.client import AsyncClient, Client
from tether.protocol.names import TASK
from tether.tasks import ask, task_registry

KEY = "tasks-uplink-key"
APP = "tests.apps.tasks"
T = TypeVar("T")

Serve = Callable[..., tuple[subprocess.Popen[str], int]]


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with testing.serve(APP, uplink_key=KEY, max_tasks=4) as served:
        yield served


# -- helpers ----------------------------------------------------------------------------


def finished(task: server.Task) -> str:
    """Waits for ``task`` to end; returns its termination status."""
    status = wait_until(task.get_termination_status, f"{task!r} to end")
    assert status is not None
    return status


def state_of(client: Client, task_id: str) -> dict[str, object]:
    """The task's state, asked through ``client``."""
    state = client.call(TASK, "state", task_id)
    assert isinstance(state, dict)
    return state


def running(task: server.Task) -> object:
    """The pid a running ``spin`` task reported (None before)."""
    return task.get_state().get("pid")


def pid_gone(pid: int) -> bool:
    """The process has exited (a zombie nobody reaped yet counts as exited)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def ws_url(port: int) -> str:
    return f"ws://127.0.0.1:{port}/_/ws"


def tether_tasks(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tether", "tasks", *args],
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "200"},  # the table's columns are not cut
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


def json_rows(store: str) -> dict[str, dict[str, Any]]:
    """``tether tasks --store STORE --json``, by task id."""
    done = tether_tasks("--store", store, "--json")
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    return {row["id"]: row for row in rows}


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """How many of the [start, end] intervals hold at once, at most."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    most = running = 0
    for _, change in events:  # at equal times an end (-1) sorts before a start
        running += change
        most = max(most, running)
    return most


# -- a task's life ----------------------------------------------------------------------


def test_a_task_reports_progress_while_it_runs_and_returns_a_value(
    url: str, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    task = server.launch_background_task("progress", 10, str(gate))
    assert isinstance(task, server.Task)
    assert task.get_task_name() == "progress"
    assert len(task.get_id()) >= 20
    start = task.get_start_time()
    assert start.tzinfo is not None
    assert start.utcoffset() == dt.timedelta(0)
    assert abs(dt.datetime.now(dt.UTC) - start) < dt.timedelta(minutes=5)
    assert task.is_running()
    assert task.get_termination_status() is None
    assert task.get_return_value() is None

    # it stops half-way until the gate opens: the state seen now is live
    live = wait_until(lambda: task.get_state().get("step") == 5, "the half-way state")
    assert live
    assert task.get_state() == {"progress": 0.5, "step": 5}
    assert task.is_running()
    assert not task.is_completed()
    gate.touch()

    assert finished(task) == "completed"
    assert task.is_completed() is True
    assert task.is_running() is False
    assert task.get_state() == {"progress": 1.0, "step": 10}
    value = task.get_return_value()
    assert isinstance(value, dict)
    assert value["steps"] == 10
    assert task.get_error() is None
    assert server.get_background_task(task.get_id()) == task
    assert task in server.list_background_tasks()


def test_a_task_runs_as_a_trusted_background_task_and_so_do_its_calls(url: str) -> None:
    task = server.launch_background_task("context_probe")
    assert finished(task) == "completed"
    assert task.get_return_value() == {
        "client": "background_task",
        "task_id": task.get_id(),
        "trusted": True,
        "call": {
            "client": "background_task",
            "caller": "background_task",
            "trusted": True,
            "task_id": task.get_id(),
        },
    }


def test_a_failed_task_keeps_its_error_portable_or_as_a_remote_error(url: str) -> None:
    boom = server.launch_background_task("fail_portable", "bad news")
    plain = server.launch_background_task("fail_plain", "plain news")
    assert finished(boom) == "failed"
    error = boom.get_error()
    assert isinstance(error, TaskBoom)
    assert str(error) == "bad news"
    with pytest.raises(TaskBoom, match="bad news"):
        boom.is_completed()
    assert boom.get_return_value() is None
    assert boom.get_state() == {"progress": 0.5}  # the state it had when it raised

    assert finished(plain) == "failed"
    remote = plain.get_error()
    assert isinstance(remote, server.RemoteError)
    assert remote.type_name == "ValueError"
    assert "plain news" in str(remote)
    with pytest.raises(server.RemoteError, match="plain news"):
        plain.is_completed()


def test_kill_stops_the_task_process_at_once(url: str) -> None:
    task = server.launch_background_task("spin")
    pid = wait_until(lambda: task.get_state().get("pid"), "the task's pid")
    assert isinstance(pid, int)
    assert not pid_gone(pid)
    task.kill()
    assert wait_until(lambda: task.get_termination_status() == "killed", "killed", timeout=1.0)
    with pytest.raises(server.BackgroundTaskKilled, match="'spin' was killed"):
        task.is_completed()
    assert task.is_running() is False
    wait_until(lambda: pid_gone(pid), f"process {pid} to end")
    task.kill()  # a second kill changes nothing
    assert task.get_termination_status() == "killed"
    assert task.get_return_value() is None


def test_a_task_killed_while_queued_never_runs(url: str) -> None:
    spinning = [server.launch_background_task("spin") for _ in range(4)]
    queued = server.launch_background_task("finish", "never")
    try:
        for task in spinning:
            wait_until(partial(running, task), "the spinners to run")
        assert ask("status", queued.get_id()) == "queued"
        queued.kill()
        assert queued.get_termination_status() == "killed"
    finally:
        for task in spinning:
            task.kill()
    pids = [task.get_state()["pid"] for task in spinning]
    for pid in pids:
        assert isinstance(pid, int)
        wait_until(partial(pid_gone, pid), f"process {pid} to end")
    after = server.launch_background_task("finish", value="after")  # slots are free again
    assert finished(after) == "completed"
    assert after.get_return_value() == "after"
    assert queued.get_termination_status() == "killed"
    assert queued.get_state() == {}
    assert queued.get_return_value() is None


def test_a_task_whose_process_dies_is_missing(url: str) -> None:
    task = server.launch_background_task("vanish", 7)
    assert finished(task) == "missing"
    with pytest.raises(server.BackgroundTaskError, match="'vanish' is missing"):
        task.is_completed()
    assert task.get_error() is None


def test_a_result_that_cannot_be_sent_fails_the_task(url: str) -> None:
    task = server.launch_background_task("return_unsendable")
    assert finished(task) == "failed"
    error = task.get_error()
    assert isinstance(error, server.RemoteError)
    assert error.type_name == "SerializationError"
    assert "its result cannot be sent" in str(error)
    assert task.get_return_value() is None


@pytest.mark.parametrize(
    ("name", "args", "status"),
    [("keep_unsendable_state", (5,), "completed"), ("raise_with_unsendable_state", (), "failed")],
)
def test_a_final_state_that_cannot_be_sent_does_not_lose_the_outcome(
    url: str, name: str, args: tuple[object, ...], status: str
) -> None:
    task = server.launch_background_task(name, *args)
    outcome = finished(task)
    assert outcome != "missing"  # its process did report: the outcome must not be lost
    assert outcome in (status, "failed")


def test_a_task_may_launch_and_watch_another_task(url: str) -> None:
    task = server.launch_background_task("parent", {"x": 1})
    assert finished(task) == "completed"
    value = task.get_return_value()
    assert isinstance(value, dict)
    child = value["child"]
    assert isinstance(child, server.Task)
    assert child.get_task_name() == "finish"
    assert value["status"] == "completed"
    assert value["value"] == {"x": 1}
    assert child.get_return_value() == {"x": 1}


# -- the queue --------------------------------------------------------------------------


def test_fifty_tasks_all_complete_with_at_most_max_tasks_at_once(url: str) -> None:
    tasks = [server.launch_background_task("short", i) for i in range(50)]
    ids = [task.get_id() for task in tasks]
    most_running = 0

    def all_done() -> bool:
        nonlocal most_running
        statuses = [ask("status", task_id) for task_id in ids]
        most_running = max(most_running, statuses.count("running"))
        return all(status not in ("queued", "running") for status in statuses)

    wait_until(all_done, "50 tasks to end")
    assert most_running <= 4
    assert [task.get_termination_status() for task in tasks] == ["completed"] * 50
    values: list[list[float]] = [task.get_return_value() for task in tasks]  # type: ignore[misc]
    assert [int(v[0]) for v in values] == list(range(50))
    processes = [(imported, end) for _, imported, _, end in values]
    runs = [(start, end) for _, _, start, end in values]
    assert max_overlap(runs) <= 4
    assert 2 <= max_overlap(processes) <= 4


# -- trust over the wire ----------------------------------------------------------------


def test_an_untrusted_client_may_read_a_task_but_not_launch_kill_or_list(
    url: str, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    task = server.launch_background_task("progress", 4, str(gate))
    task_id = task.get_id()
    try:
        with Client(url) as client:
            assert not client.trusted
            with pytest.raises(server.BackgroundTaskError, match="untrusted") as info:
                client.call(TASK, "launch", "finish", [1], {})
            assert type(info.value) is server.BackgroundTaskError
            with pytest.raises(server.PermissionDenied, match="cannot kill"):
                client.call(TASK, "kill", task_id)
            with pytest.raises(server.PermissionDenied, match="cannot list"):
                client.call(TASK, "list")
            # nor may it pose as the task's process
            with pytest.raises(server.PermissionDenied, match="task's own process"):
                client.call(TASK, "finished", task_id, "completed", "forged", {})
            with pytest.raises(server.PermissionDenied, match="task's own process"):
                client.call(TASK, "report", task_id, {"progress": 1.0})
            with pytest.raises(server.PermissionDenied, match="trusted peers"):
                client.call(TASK, "publish", "some-key", {"x": 1})

            got = client.call(TASK, "get", task_id)
            assert isinstance(got, server.Task)
            assert got == task
            assert got.get_task_name() == "progress"
            assert got.get_start_time() == task.get_start_time()
            assert client.call(TASK, "status", task_id) in ("queued", "running")
            wait_until(
                lambda: client.call(TASK, "state", task_id) == {"progress": 0.5, "step": 2},
                "the live state",
            )
            with pytest.raises(server.BackgroundTaskNotFound):
                client.call(TASK, "status", "no-such-task-id-at-all-here")
            with pytest.raises(server.BackgroundTaskError, match="bad background task request"):
                client.call(TASK, "frobnicate", task_id)

            # server code may launch for it and hand it the Task
            handed = client.call("tasks_launch", "finish", 7)
            assert isinstance(handed, server.Task)
            assert handed.get_task_name() == "finish"
            wait_until(
                lambda: client.call(TASK, "status", handed.get_id()) == "completed", "its task"
            )
            assert client.call(TASK, "result", handed.get_id()) == 7
            assert client.call(TASK, "error", handed.get_id()) is None
        assert task.is_running()  # the refused kill did nothing
    finally:
        gate.touch()
    assert finished(task) == "completed"


def test_a_trusted_client_may_launch_list_and_kill(url: str) -> None:
    with Client(url, KEY) as client:
        assert client.trusted
        task = client.call(TASK, "launch", "spin", [], {})
        assert isinstance(task, server.Task)
        task_id = task.get_id()
        pid = wait_until(lambda: state_of(client, task_id).get("pid"), "its pid")
        listed = client.call(TASK, "list")
        assert isinstance(listed, list)
        assert task in listed
        assert client.call(TASK, "kill", task_id) is None
        assert client.call(TASK, "status", task_id) == "killed"
    assert isinstance(pid, int)
    wait_until(lambda: pid_gone(pid), f"process {pid} to end")


UNTRUSTED_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    from tether import server
    server.connect(sys.argv[1])
    task = server.call("tasks_launch", "finish", {"n": 3})
    deadline = time.monotonic() + float(sys.argv[2])
    while task.get_termination_status() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    out = {
        "type": type(task).__name__,
        "status": task.get_termination_status(),
        "completed": task.is_completed(),
        "value": task.get_return_value(),
        "state": task.get_state(),
    }
    for name, attempt in [
        ("kill", task.kill),
        ("launch", lambda: server.launch_background_task("finish", 1)),
        ("list", server.list_background_tasks),
    ]:
        try:
            attempt()
            out[name] = "allowed"
        except Exception as exc:
            out[name] = type(exc).__name__
    print(json.dumps(out))
    server.disconnect()
    """
)


def test_a_connected_untrusted_process_uses_the_task_it_was_handed(url: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", UNTRUSTED_SCRIPT, url, str(TIMEOUT)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 2,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "type": "Task",
        "status": "completed",
        "completed": True,
        "value": {"n": 3},
        "state": {"progress": 1.0},
        "kill": "PermissionDenied",
        "launch": "BackgroundTaskError",
        "list": "PermissionDenied",
    }


# -- capability updates from a task -----------------------------------------------------


class Recorder:
    """An update handler that remembers what it got."""

    def __init__(self) -> None:
        self.updates: list[object] = []
        self.event = asyncio.Event()
        self.loop = asyncio.get_running_loop()

    def __call__(self, update: object) -> None:
        self.updates.append(update)
        self.loop.call_soon_threadsafe(self.event.set)

    async def next(self) -> object:
        await asyncio.wait_for(self.event.wait(), TIMEOUT)
        self.event.clear()
        return self.updates.pop(0)


async def test_send_update_in_a_task_reaches_a_subscribed_client(url: str) -> None:
    async with asyncio.timeout(TIMEOUT), AsyncClient(url) as watcher:
        cap = await watcher.call("tasks_job_capability", 1)
        assert isinstance(cap, server.Capability)
        seen = Recorder()
        cap.set_update_handler(seen)
        await watcher.subscribe(cap)
        # the capability handed to the task as an argument
        task = await watcher.call("tasks_launch", "publish", cap, {"done": 1})
        assert isinstance(task, server.Task)
        assert await seen.next() == {"done": 1}
        # a capability the task minted itself, for the same scope
        await watcher.call("tasks_launch", "publish_by_scope", ["job", 1], {"by": "scope"})
        assert await seen.next() == {"by": "scope"}
        # another scope: nothing here
        other = await watcher.call("tasks_launch", "publish_by_scope", ["job", 2], {"not": "mine"})
        assert isinstance(other, server.Task)
        assert await asyncio.to_thread(finished, other) == "completed"  # it has sent it
        await watcher.call("tasks_launch", "publish_by_scope", ["job", 1], "marker")
        assert await seen.next() == "marker"
        assert seen.updates == []
        assert task.get_termination_status() == "completed"


# -- bad input --------------------------------------------------------------------------


class Unregistered:
    """Not a portable class: it cannot be sent to a task."""


def test_bad_launches_are_refused_and_nothing_is_queued(url: str) -> None:
    before = len(server.list_background_tasks())
    with pytest.raises(server.BackgroundTaskError, match="no background task named 'nope'"):
        server.launch_background_task("nope")
    with pytest.raises(server.SerializationError, match="cannot send these arguments"):
        server.launch_background_task("finish", Unregistered())
    with pytest.raises(server.SerializationError):
        server.launch_background_task("finish", value=Unregistered())
    with Client(url, KEY) as client:
        with pytest.raises(server.BackgroundTaskError, match="no background task named"):
            client.call(TASK, "launch", "nope", [], {})
        with pytest.raises(server.BackgroundTaskError, match="a name, a list of arguments"):
            client.call(TASK, "launch", "finish", "not a list", {})
        with pytest.raises(server.SerializationError):
            client.call(TASK, "launch", "finish", [Unregistered()], {})
    assert len(server.list_background_tasks()) == before


def test_a_task_defined_in_main_is_refused(url: str) -> None:
    def orphan() -> None:
        pass

    orphan.__module__ = "__main__"
    server.background_task("tests-orphan")(orphan)
    try:
        with pytest.raises(server.BackgroundTaskError, match="__main__"):
            server.launch_background_task("tests-orphan")
    finally:
        del task_registry.tasks["tests-orphan"]


def test_task_state_outside_a_task_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="only available inside a background task"):
        server.task_state  # noqa: B018


def test_an_async_function_cannot_be_a_background_task() -> None:
    async def job() -> None:
        pass

    with pytest.raises(TypeError, match="plain function"):
        server.background_task(job)
    with pytest.raises(TypeError, match="plain function"):
        server.background_task("named-job")(job)
    assert "job" not in task_registry.tasks
    assert "named-job" not in task_registry.tasks


# -- a server that goes away ------------------------------------------------------------


def launch(port: int, name: str, *args: object) -> str:
    """Launches task ``name`` through a trusted client; returns its id."""
    with Client(ws_url(port), KEY) as client:
        task = client.call(TASK, "launch", name, list(args), {})
    assert isinstance(task, server.Task)
    return task.get_id()


def status(port: int, task_id: str) -> object:
    with Client(ws_url(port), KEY) as client:
        return client.call(TASK, "status", task_id)


def running_pid(port: int, task_id: str) -> int:
    """Waits until the task runs and has reported its pid."""
    with Client(ws_url(port), KEY) as client:
        pid = wait_until(lambda: state_of(client, task_id).get("pid"), "the task's pid")
        assert client.call(TASK, "status", task_id) == "running"
    assert isinstance(pid, int)
    return pid


def test_a_crash_ends_the_task_process_and_a_restart_marks_it_missing(
    tether_serve: Serve, tmp_path: Path
) -> None:
    store = f"sqlite:///{tmp_path}/t.db"
    options = (APP, "--store", store, "--uplink-key", KEY, "--max-tasks", "1")
    crashed, port = tether_serve(*options)
    crash_id = launch(port, "spin")
    crash_pid = running_pid(port, crash_id)
    queued_id = launch(port, "finish", "after the crash")  # waits: one task at a time
    assert status(port, queued_id) == "queued"
    wait_until(lambda: queued_id in json_rows(store), "the queued record in the store")
    crashed.send_signal(signal.SIGKILL)
    crashed.wait(TIMEOUT)
    wait_until(lambda: pid_gone(crash_pid), "the task's process to end by itself")

    stopped, port = tether_serve(*options)
    with Client(ws_url(port), KEY) as client:
        assert client.call(TASK, "status", crash_id) == "missing"
        assert state_of(client, crash_id)["pid"] == crash_pid  # its last state is kept
        task = client.call(TASK, "get", crash_id)
        assert isinstance(task, server.Task)
        assert task.get_task_name() == "spin"
        # the task still queued at the crash runs now
        wait_until(lambda: client.call(TASK, "status", queued_id) == "completed", "the queued")
        assert client.call(TASK, "result", queued_id) == "after the crash"
    stop_id = launch(port, "spin")
    stop_pid = running_pid(port, stop_id)
    stopped.send_signal(signal.SIGTERM)  # a graceful stop
    stopped.wait(TIMEOUT)
    assert stopped.returncode in (0, -signal.SIGTERM)  # uvicorn re-raises the signal
    wait_until(lambda: pid_gone(stop_pid), "the task's process to be killed")

    rows = json_rows(store)
    assert rows[crash_id]["status"] == "missing"
    assert rows[crash_id]["pid"] == crash_pid
    assert rows[crash_id]["error"] == "its process ended with the previous server"
    assert rows[stop_id]["status"] == "missing"
    assert rows[stop_id]["error"] == "the server stopped while it ran"
    assert rows[queued_id]["status"] == "completed"

    _, port = tether_serve(*options)
    assert status(port, crash_id) == "missing"
    assert status(port, stop_id) == "missing"


# -- tether tasks -----------------------------------------------------------------------


def test_tether_tasks_lists_a_stores_tasks_as_json_and_as_a_table(
    tether_serve: Serve, tmp_path: Path
) -> None:
    store = f"sqlite:///{tmp_path}/t.db"
    _, port = tether_serve(APP, "--store", store, "--uplink-key", KEY)
    with Client(ws_url(port), KEY) as client:
        task = client.call(TASK, "launch", "finish", [{"answer": 42}], {})
        assert isinstance(task, server.Task)
        wait_until(lambda: client.call(TASK, "status", task.get_id()) == "completed", "the task")

    def completed_row() -> dict[str, Any] | None:
        row = json_rows(store).get(task.get_id())
        return row if row is not None and row["status"] == "completed" else None

    row = wait_until(completed_row, "the completed record in the store")
    assert row is not None
    assert row["name"] == "finish"
    assert row["progress"] == 1.0
    assert row["state"] == {"progress": 1.0}
    assert row["args"] == "{'answer': 42}"
    assert row["error"] is None

    table = tether_tasks("--store", store)
    assert table.returncode == 0, table.stderr
    assert "finish" in table.stdout
    assert "completed" in table.stdout


def test_tether_tasks_without_a_store_says_so(tmp_path: Path) -> None:
    done = tether_tasks("--store", f"sqlite:///{tmp_path}/nowhere/t.db", "--json")
    assert done.returncode != 0
    assert "no server store at" in done.stderr
    assert done.stdout == ""
    empty = tether_tasks("--data-dir", str(tmp_path / "no-data-dir"))
    assert empty.returncode != 0
    assert "no server store at" in empty.stderr
