"""The server's task manager in this process: records found at start, a stop with tasks
running, purging, and the answers to malformed requests. (tests/runtime/test_tasks.py
drives tasks end to end through clients and ``tether serve``.)"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

import tests.apps.tasks  # noqa: F401 - registers the tasks
from tests.conftest import TIMEOUT, wait_until
from tether import create_app, testing
from tether.errors import (
    BackgroundTaskError,
    BackgroundTaskNotFound,
    PermissionDenied,
    RemoteError,
)
from tether.runtime.app import TetherApp
from tether.runtime.stores import SqliteStore
from tether.runtime.task_list import _plain, list_tasks, print_tasks
from tether.runtime.tasks import RETENTION, TaskManager, TaskRecord
from tether.tasks import Task, TaskRegistry, ask

T = TypeVar("T")


def on_loop(app: TetherApp, coroutine: Coroutine[Any, Any, T]) -> T:
    loop = app.dispatcher.loop
    assert loop is not None
    return asyncio.run_coroutine_threadsafe(coroutine, loop).result(TIMEOUT)


async def seed(path: Path, *records: TaskRecord | bytes) -> None:
    store = SqliteStore(path)
    await store.open()
    try:
        for record in records:
            if isinstance(record, bytes):
                await store.save_task("garbage", record, None)
            else:
                await store.save_task(record.id, record.to_bytes(), record.ended)
    finally:
        await store.close()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "tasks.db"


# -- what a server finds in its store at start ------------------------------------------


def test_records_of_an_earlier_server(db: Path) -> None:
    now = time.time()
    left_running = TaskRecord("r1", "progress", "running", now - 5, started=now - 5, pid=1)
    gone = TaskRecord("q2", "no-longer-registered", "queued", now - 3)
    old = TaskRecord("o1", "finish", "completed", now - RETENTION - 10, ended=now - RETENTION - 5)
    asyncio.run(seed(db, left_running, gone, old, b"not json"))
    app = create_app(store=f"sqlite:///{db}", max_tasks=2)
    with testing.serve(app):
        tasks = app.dispatcher.tasks
        assert tasks.records["r1"].status == "missing"
        assert tasks.records["r1"].error_text == "its process ended with the previous server"
        assert "o1" not in tasks.records  # expired
        assert "garbage" not in tasks.records  # unreadable: skipped
        wait_until(lambda: tasks.records["q2"].status == "failed", "the unknown task fails")
        why = "could not start: no background task named 'no-longer-registered'"
        assert tasks.records["q2"].error_text == why
        gone = tasks.records["q2"].handle()
        error = gone.get_error()
        assert isinstance(error, RemoteError)
        assert (error.type_name, str(error.args[0])) == ("BackgroundTaskError", why)
        with pytest.raises(RemoteError, match="could not start"):
            gone.is_completed()
        # a task launched now runs beside them
        task = tasks.launch("finish", (7,), {})
        wait_until(lambda: tasks.records[task.get_id()].status == "completed", "completion")
        assert task.get_return_value() == 7
        assert on_loop(app, tasks.purge()) == 0


def test_a_stop_with_a_task_running_leaves_it_missing(db: Path) -> None:
    app = create_app(store=f"sqlite:///{db}")
    with testing.serve(app):
        tasks = app.dispatcher.tasks
        task = tasks.launch("spin", (), {})
        wait_until(lambda: tasks.running == 1, "the task runs")
        pid = tasks.records[task.get_id()].pid
        assert pid is not None
    assert tasks.records[task.get_id()].status == "missing"
    assert tasks.records[task.get_id()].error_text == "the server stopped while it ran"
    rows = list_tasks(f"sqlite:///{db}", None)
    assert [(r.name, r.status) for r in rows] == [("spin", "missing")]


def test_purge_forgets_old_records(db: Path) -> None:
    app = create_app(store=f"sqlite:///{db}")
    with testing.serve(app):
        tasks = app.dispatcher.tasks
        task = tasks.launch("finish", (1,), {})
        wait_until(lambda: tasks.records[task.get_id()].status == "completed", "completion")
        tasks.records[task.get_id()].ended = time.time() - RETENTION - 1
        tasks._save(tasks.records[task.get_id()])
        wait_until(lambda: on_loop(app, tasks.purge()) == 1, "the purge")
        assert task.get_id() not in tasks.records
        with pytest.raises(BackgroundTaskNotFound):
            tasks.answer("status", task.get_id())


# -- malformed requests and reports -----------------------------------------------------


def test_malformed_requests_are_refused(db: Path) -> None:
    app = create_app(store=f"sqlite:///{db}")
    with testing.serve(app):
        tasks = app.dispatcher.tasks
        with pytest.raises(BackgroundTaskError, match="bad background task request"):
            tasks.answer("status")
        with pytest.raises(BackgroundTaskError, match="bad background task request"):
            tasks.answer("status", 5)
        with pytest.raises(BackgroundTaskNotFound):
            tasks.answer("frobnicate", "no-such-id")
        task = tasks.launch("finish", (1,), {})
        with pytest.raises(BackgroundTaskError, match="bad background task request"):
            tasks.answer("frobnicate", task.get_id())
        with pytest.raises(BackgroundTaskError, match="a name, a list of arguments"):
            tasks.answer("launch", "finish", "not a list", {})
        with pytest.raises(PermissionDenied):
            tasks.ask("list", (), trusted=False)
        assert tasks.answer("get", task.get_id()) == task


def test_late_reports_change_nothing(db: Path) -> None:
    app = create_app(store=f"sqlite:///{db}")
    with testing.serve(app):
        tasks = app.dispatcher.tasks
        task = tasks.launch("spin", (), {})
        wait_until(lambda: tasks.running == 1, "the task runs")
        task_id = task.get_id()
        tasks.report_state(task_id, {"progress": 0.5})
        record = tasks.records[task_id]
        tasks.kill(record)
        tasks.report_state(task_id, {"progress": 0.9})  # after the kill: ignored
        tasks.finished(task_id, "completed", 1, {"progress": 1.0})
        assert (record.status, record.result) == ("killed", None)
        assert task.get_state() == {"progress": 0.5}
        tasks.kill(record)  # again: nothing to do


def test_what_a_finished_report_keeps(db: Path) -> None:
    app = create_app(store=f"sqlite:///{db}")
    with testing.serve(app):
        tasks = app.dispatcher.tasks
        outcomes: list[tuple[str, object, object]] = [
            ("completed", object(), {"ok": 1}),  # a result that cannot be kept
            ("failed", "just a message", None),  # neither an exception nor [type, message]
            ("failed", ValueError("not portable"), {"bad": object()}),
        ]
        for status, value, state in outcomes:
            task = tasks.launch("spin", (), {})
            wait_until(lambda t=task: tasks.records[t.get_id()].status == "running", "start")
            tasks.report_state(task.get_id(), {"last": True})
            tasks.finished(task.get_id(), status, value, state)
            assert task.get_termination_status() == "failed"
            assert isinstance(task.get_error(), Exception)
            tasks.kill(tasks.records[task.get_id()])  # its process: nothing more to say
            assert task.get_termination_status() == "failed"  # the kill came too late


# -- the API side -----------------------------------------------------------------------


def test_registry_and_task_handles() -> None:
    registry = TaskRegistry()
    with pytest.raises(TypeError):
        registry.register("not a function")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-empty"):
        registry.register(lambda: None, "")
    start = dt.datetime.now(dt.UTC)
    task = Task("an-id", "name", start)
    assert task == Task("an-id", "other", start)
    assert task != "an-id"
    assert hash(task) == hash(Task("an-id", "x", start))
    assert repr(task) == "<Task 'name' an-id>"
    assert Task.__new_deserialized__(["i", "n", start], None) == Task("i", "n", start)
    with pytest.raises(ValueError, match=r"\[id, name, start time\]"):
        Task.__new_deserialized__(["i", "n"], None)
    with pytest.raises(ValueError, match="at least 1"):
        TaskManager(create_app().dispatcher, max_tasks=0)


def test_asking_with_no_server_and_no_connection() -> None:
    with pytest.raises(BackgroundTaskError, match="need a server"):
        ask("list")


def test_a_missing_task_is_not_completed(db: Path) -> None:
    app = create_app(store=f"sqlite:///{db}")
    with testing.serve(app):
        tasks = app.dispatcher.tasks
        task = tasks.launch("vanish", (4,), {})
        wait_until(lambda: tasks.records[task.get_id()].status == "missing", "vanished")
        with pytest.raises(BackgroundTaskError, match="missing"):
            task.is_completed()


def test_tether_tasks_shows_portable_objects_by_name(capsys: pytest.CaptureFixture[str]) -> None:
    stored = json.dumps(
        {
            "v": {"a": {"args": []}, "l": [1, {"x": 1}], "p": 0.5},
            "objects": [
                {"path": ["v", "a"], "typeName": "app.Thing"},
                {"path": ["v", "l", 1], "typeName": "app.Other"},
                {"path": ["v", "zz", "q"]},  # a path that is not there: skipped
                {},
            ],
        }
    )
    assert _plain(stored) == {"a": "<app.Thing>", "l": [1, "<app.Other>"], "p": 0.5}
    assert _plain(None) is None
    print_tasks([], as_json=False)
    assert "0 background task(s)" in capsys.readouterr().out


# -- a process that lingers, fails early, or is impersonated ----------------------------


def test_a_thread_left_behind_does_not_keep_the_slot(db: Path) -> None:
    app = create_app(store=f"sqlite:///{db}", max_tasks=1)
    with testing.serve(app):
        tasks = app.dispatcher.tasks
        first = tasks.launch("thread_leak", (), {})
        second = tasks.launch("finish", (2,), {})
        wait_until(lambda: tasks.records[second.get_id()].status == "completed", "the next")
        assert first.get_return_value() == "done"
        wait_until(lambda: tasks.running == 0, "both processes gone")


def test_sys_exit_in_a_task_is_a_failure(db: Path) -> None:
    app = create_app(store=f"sqlite:///{db}")
    with testing.serve(app):
        tasks = app.dispatcher.tasks
        task = tasks.launch("exits", (), {})
        wait_until(lambda: not task.is_running(), "the end")
        assert task.get_termination_status() == "failed"
        error = task.get_error()
        assert isinstance(error, RemoteError)
        assert error.type_name == "SystemExit"


def test_the_instructions_are_not_in_the_environment(db: Path) -> None:
    app = create_app(store=f"sqlite:///{db}")
    with testing.serve(app):
        tasks = app.dispatcher.tasks
        task = tasks.launch("environment", (), {})
        wait_until(lambda: not task.is_running(), "the end")
        assert task.get_return_value() is False


def test_only_a_running_tasks_process_opens_the_private_port(db: Path) -> None:
    from tether.client import Client

    app = create_app(store=f"sqlite:///{db}", uplink_key="k")
    with testing.serve(app) as url:
        tasks = app.dispatcher.tasks
        task = tasks.launch("spin", (), {})
        wait_until(lambda: tasks.running == 1, "the task runs")
        host, port = tasks._address or ("", 0)
        private = f"tether://{host}:{port}"
        task_key = tasks.key_for(task.get_id())
        attempts: list[tuple[str, str | None, dict[str, object]]] = [
            (private, None, {}),  # no key: nothing but task hellos there
            (private, "k", {}),  # even the uplink key
            (private, tasks.key_for("another"), {"task": task.get_id()}),  # another's key
            (url, task_key, {"task": task.get_id()}),  # the right key on the public port
        ]
        for target, key, extra in attempts:
            with pytest.raises(PermissionDenied, match="Incorrect uplink key"):
                Client(target, key, reconnect=False, hello_extra=extra).close()
        tasks.kill(tasks.records[task.get_id()])


def test_arguments_whose_repr_fails_are_summarised_by_type(db: Path) -> None:
    class Shy:
        def __repr__(self) -> str:
            raise RuntimeError("no")

    from tether.runtime.tasks import _summary

    summary = _summary((Shy(), "x" * 500), {"k": [1] * 50})
    assert re.fullmatch(
        r"<Shy instance at 0x[0-9a-f]+>, 'x+\.\.\.x+', k=\[1, 1, 1, 1, 1, \.\.\.\]", summary
    )
    assert len(_summary(("y" * 10_000,) * 50, {})) <= 200


def test_tether_tasks_refuses_a_memory_store_and_shows_markup_as_text(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ValueError, match="memory store"):
        list_tasks("memory", None)
    app = create_app(store=f"sqlite:///{db}")
    with testing.serve(app):
        tasks = app.dispatcher.tasks
        task = tasks.launch("finish", ("[/x] [bold]",), {})
        wait_until(lambda: not task.is_running(), "the end")
    print_tasks(list_tasks(f"sqlite:///{db}", None), as_json=False)
    assert "[/x]" in capsys.readouterr().out
    db.write_bytes(b"not a database at all" * 100)
    with pytest.raises(ValueError, match="cannot read the tasks"):
        list_tasks(f"sqlite:///{db}", None)
