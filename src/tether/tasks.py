"""Background tasks as the API sees them: the registry ``@server.background_task`` fills,
the portable :class:`Task` handle, and ``server.task_state`` inside a task.

A Task's questions go where ``server.call`` would: server code asks its own server; a
client (or a task's own process) asks its server over the connection.
"""

from __future__ import annotations

import datetime as dt
import inspect
import logging
import threading
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any

from tether.codec import portable_registry
from tether.errors import BackgroundTaskError

__all__ = [
    "BackgroundTaskFunction",
    "Task",
    "TaskRegistry",
    "TaskState",
    "ask",
    "task_registry",
]


@dataclass(frozen=True, slots=True)
class BackgroundTaskFunction:
    """One registered background task."""

    name: str
    fn: Callable[..., object]

    @property
    def module(self) -> str:
        """Where a task's process imports it from."""
        return str(getattr(self.fn, "__module__", ""))


class TaskRegistry:
    """Name -> background task function."""

    def __init__(self) -> None:
        self.tasks: dict[str, BackgroundTaskFunction] = {}

    def register(self, fn: Callable[..., object], name: str | None = None) -> None:
        """Registers ``fn`` (a plain function; ``async def`` is refused: a task has its
        own process, where blocking is fine).

        Raises:
            TypeError: ``fn`` is not a function, or is a coroutine function.
            ValueError: an empty name.
        """
        if not callable(fn):
            raise TypeError(f"background_task needs a function, got {fn!r}")
        if inspect.iscoroutinefunction(fn):
            raise TypeError("a background task is a plain function (it has its own process)")
        name = name if name is not None else getattr(fn, "__name__", None)
        if not isinstance(name, str) or not name:
            raise ValueError(f"a background task name must be a non-empty str, got {name!r}")
        self.tasks[name] = BackgroundTaskFunction(name, fn)

    def get(self, name: str) -> BackgroundTaskFunction | None:
        return self.tasks.get(name)


task_registry = TaskRegistry()
"""The process-wide registry that ``server.background_task`` fills."""


def ask(op: str, *args: object) -> Any:
    """Asks about tasks where ``server.call`` would go: server code asks its own server;
    a client (or a task's process) asks its server over the connection.

    Raises:
        BackgroundTaskError: nothing here can answer (neither a server nor connected).
    """
    from tether import _current
    from tether.context import current_call
    from tether.protocol.names import TASK

    state = current_call.get()
    if state is not None:
        dispatcher = getattr(state.caller, "dispatcher", None)
        if dispatcher is not None:
            return dispatcher.tasks.answer(op, *args)
        return state.caller.call(TASK, (op, *args), {})
    if _current.client is not None:
        return _current.client.client.call(TASK, op, *args)
    if _current.dispatchers:
        return _current.dispatchers[-1].tasks.answer(op, *args)
    raise BackgroundTaskError(
        "background tasks need a server: run this in server code, or server.connect() first"
    )


class Task:
    """A background task (``launch_background_task`` returns one). Crosses the wire by id:
    whoever holds it may ask about the task; only trusted code may ``kill`` it."""

    def __init__(self, task_id: str, name: str, start_time: dt.datetime) -> None:
        self._id = task_id
        self._name = name
        self._start = start_time

    def __serialize__(self, global_data: object) -> list[object]:
        return [self._id, self._name, self._start]

    @staticmethod
    def __new_deserialized__(data: list[object], global_data: object) -> Task:
        if not (
            isinstance(data, list)
            and len(data) == 3
            and isinstance(data[0], str)
            and isinstance(data[1], str)
            and isinstance(data[2], dt.datetime)
        ):
            raise ValueError("a Task is [id, name, start time]")
        return Task(data[0], data[1], data[2])

    def __repr__(self) -> str:
        return f"<Task {self._name!r} {self._id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Task) and other._id == self._id

    def __hash__(self) -> int:
        return hash(self._id)

    def get_id(self) -> str:
        return self._id

    def get_task_name(self) -> str:
        return self._name

    def get_start_time(self) -> dt.datetime:
        """When it was launched (UTC)."""
        return self._start

    def get_state(self) -> dict[str, object]:
        """What the task put in ``server.task_state``: live while it runs, final after."""
        state = ask("state", self._id)
        assert isinstance(state, dict)
        return state

    def get_termination_status(self) -> str | None:
        """None while queued or running, then 'completed', 'failed', 'killed' or
        'missing' (its process vanished)."""
        status = ask("status", self._id)
        return None if status in ("queued", "running") else str(status)

    def is_running(self) -> bool:
        """True while queued or running."""
        return self.get_termination_status() is None

    def is_completed(self) -> bool:
        """True once it returned.

        Raises:
            BackgroundTaskKilled: it was killed.
            BackgroundTaskError: its process vanished ('missing').
            Exception: the task's own error, when it failed.
        """
        status = self.get_termination_status()
        if status in (None, "completed"):
            return status == "completed"
        if status == "failed":
            error = self.get_error()
            raise error or BackgroundTaskError(f"background task {self._name!r} failed")
        from tether.errors import BackgroundTaskKilled

        if status == "killed":
            raise BackgroundTaskKilled(f"background task {self._name!r} was killed")
        raise BackgroundTaskError(f"background task {self._name!r} is missing: its process died")

    def get_return_value(self) -> object:
        """What the task returned (None until it completed)."""
        return ask("result", self._id)

    def get_error(self) -> BaseException | None:
        """The task's error, when it failed (portable exceptions as themselves, others as
        ``RemoteError``)."""
        error = ask("error", self._id)
        if isinstance(error, list) and len(error) == 2:  # not portable: its name and message
            from tether.errors import RemoteError

            return RemoteError(str(error[1]), type_name=str(error[0]))
        return error if isinstance(error, BaseException) else None

    def kill(self) -> None:
        """Stops the task at once (its process is killed); status 'killed'.

        Raises:
            PermissionDenied: an untrusted client may not kill tasks.
        """
        ask("kill", self._id)


portable_registry.register(Task, "tether.Task")


class TaskState(MutableMapping[str, object]):
    """``server.task_state`` inside a task: a dict whose changes reach the server (at
    most every ``interval`` seconds, and always at the end)."""

    def __init__(self, send: Callable[[dict[str, object]], object], interval: float = 0.1) -> None:
        self._data: dict[str, object] = {}
        self._send = send
        self._interval = interval
        self._lock = threading.Lock()
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="tether-task-state", daemon=True)
        self._thread.start()

    def __getitem__(self, key: str) -> object:
        return self._data[key]

    def __setitem__(self, key: str, value: object) -> None:
        with self._lock:
            self._data[key] = value
        self._dirty.set()

    def __delitem__(self, key: str) -> None:
        with self._lock:
            del self._data[key]
        self._dirty.set()

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._data))

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"TaskState({self._data!r})"

    def snapshot(self) -> dict[str, object]:
        with self._lock:
            return dict(self._data)

    def _loop(self) -> None:
        while True:
            self._dirty.wait()
            if self._stop.is_set():
                return
            self._dirty.clear()
            try:
                self._send(self.snapshot())
            except Exception:  # the final state still goes with the result
                logging.getLogger("tether").exception("could not report the task's state")
            if self._stop.wait(self._interval):
                return

    def close(self) -> dict[str, object]:
        """Stops sending; returns the final state (the caller sends it)."""
        self._stop.set()
        self._dirty.set()
        self._thread.join(5)
        return self.snapshot()


_task_state: TaskState | None = None


def set_task_state(state: TaskState | None) -> None:
    """The task's process sets it while the task runs."""
    global _task_state
    _task_state = state


def task_state() -> TaskState:
    """``server.task_state``.

    Raises:
        RuntimeError: not inside a background task.
    """
    if _task_state is None:
        raise RuntimeError("server.task_state is only available inside a background task")
    return _task_state
