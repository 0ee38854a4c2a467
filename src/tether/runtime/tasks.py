"""Background tasks on the server: records, a bounded queue, and one process per task.

A task runs in a fresh interpreter (``python -m tether.client.task_worker``: the same as
multiprocessing's *spawn*), which imports the module that registered the task and connects
back to this server over a private TCP port on 127.0.0.1 with a key only this server
process knows. Through that connection the task fetches its arguments, makes
``server.call``s, publishes capability updates, reports ``task_state`` and finally its
result. Killing a task kills its process (SIGKILL).

Records live in the store: a restart finds them, and a task whose process is gone
becomes 'missing', never 'running' forever.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import json
import logging
import os
import secrets
import sys
import threading
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import orjson

from tether._pool import on_loop
from tether.errors import (
    BackgroundTaskError,
    BackgroundTaskNotFound,
    PermissionDenied,
    SerializationError,
)
from tether.tasks import Task, TaskRegistry, task_registry

if TYPE_CHECKING:
    from tether.runtime.dispatcher import Dispatcher
    from tether.runtime.tcp import TcpListener

__all__ = ["DEFAULT_MAX_TASKS", "RETENTION", "TaskManager", "TaskRecord"]

log = logging.getLogger("tether")

DEFAULT_MAX_TASKS = 4
"""Task processes running at once (``--max-tasks``); the others wait in the queue."""
RETENTION = 7 * 24 * 3600.0
"""Seconds a finished task's record is kept."""
PURGE_EVERY = 3600.0
"""Seconds between two purges of expired records."""
RUNNING = ("queued", "running")
SUMMARY_CHARS = 200


@dataclass(slots=True)
class TaskRecord:
    """One task, as stored. Values (arguments, state, result, error) are kept encoded."""

    id: str
    name: str
    status: str  # queued, running, completed, failed, killed, missing
    created: float
    args_summary: str = ""
    started: float | None = None
    ended: float | None = None
    pid: int | None = None
    args: str | None = None
    state: str | None = None
    result: str | None = None
    error: str | None = None
    error_text: str | None = None
    """The error as text (type: message), for ``tether tasks``."""

    def to_bytes(self) -> bytes:
        return orjson.dumps(asdict(self))

    @staticmethod
    def from_bytes(data: bytes) -> TaskRecord:
        fields = orjson.loads(data)
        return TaskRecord(**fields)

    def handle(self) -> Task:
        return Task(self.id, self.name, dt.datetime.fromtimestamp(self.created, dt.UTC))


class TaskManager:
    """One server's tasks. Methods are safe from any thread; processes are started and
    watched on the server's loop."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        *,
        max_tasks: int = DEFAULT_MAX_TASKS,
        registry: TaskRegistry = task_registry,
    ) -> None:
        if max_tasks < 1:
            raise ValueError("max_tasks must be at least 1")
        self.dispatcher = dispatcher
        self.max_tasks = max_tasks
        self.registry = registry
        self.key = secrets.token_urlsafe(32)
        """The key a task's process connects with (it never leaves this machine)."""
        self.records: dict[str, TaskRecord] = {}
        self._queue: collections.deque[str] = collections.deque()
        self._processes: dict[str, asyncio.subprocess.Process] = {}
        self._starting = 0
        self._lock = threading.RLock()
        self._listener: TcpListener | None = None
        self._address: tuple[str, int] | None = None
        self._open = False
        self._watchers: set[asyncio.Task[None]] = set()
        self._purging: asyncio.Future[None] | None = None

    # -- lifetime -----------------------------------------------------------------------

    async def open(self) -> None:
        """Loads the records: tasks left running by an earlier server are 'missing';
        queued ones are started again."""
        store = self.dispatcher.store
        await store.purge_tasks(time.time() - RETENTION)
        for data in await store.load_tasks():
            try:
                record = TaskRecord.from_bytes(data)
            except (orjson.JSONDecodeError, TypeError):
                log.error("skipping an unreadable task record in %s", store.url)
                continue
            if record.status == "running":
                self._end(record, "missing", "its process ended with the previous server")
                await store.save_task(record.id, record.to_bytes(), record.ended)
            self.records[record.id] = record
            if record.status == "queued":
                self._queue.append(record.id)
        self._open = True
        self._purging = asyncio.ensure_future(self._purge_forever())
        self._pump()

    async def _purge_forever(self) -> None:
        while True:
            await asyncio.sleep(PURGE_EVERY)
            try:
                await self.purge()
            except Exception:
                log.exception("could not purge old task records")

    async def purge(self) -> int:
        """Forgets tasks that ended more than RETENTION seconds ago; returns how many."""
        before = time.time() - RETENTION
        with self._lock:
            for task_id in [i for i, r in self.records.items() if r.ended and r.ended < before]:
                del self.records[task_id]
        return await self.dispatcher.store.purge_tasks(before)

    async def close(self) -> None:
        """Stops: running tasks are killed and become 'missing' (the server went away)."""
        self._open = False
        if self._purging is not None:
            self._purging.cancel()
            self._purging = None
        with self._lock:
            running = list(self._processes.items())
        for task_id, process in running:
            record = self.records[task_id]
            if record.status == "running":
                self._end(record, "missing", "the server stopped while it ran")
                await self.dispatcher.store.save_task(record.id, record.to_bytes(), record.ended)
            _kill(process)
        for process in [p for _, p in running]:
            try:
                async with asyncio.timeout(5):
                    await process.wait()
            except TimeoutError:  # pragma: no cover - SIGKILL does not take 5 s
                log.error("task process %d did not stop", process.pid)
        if self._listener is not None:
            self._listener.stop()
            self._listener = self._address = None

    # -- launching ----------------------------------------------------------------------

    def launch(self, name: str, args: tuple[object, ...], kwargs: dict[str, object]) -> Task:
        """Queues task ``name`` (from any thread); it starts as soon as a slot is free.

        Raises:
            BackgroundTaskError: no such task, or it cannot be imported by a process.
            SerializationError: the arguments cannot be sent to a task.
        """
        entry = self.registry.get(name)
        if entry is None:
            raise BackgroundTaskError(f"no background task named {name!r}")
        if entry.module in ("", "__main__"):
            raise BackgroundTaskError(
                f"background task {name!r} is defined in __main__: a task's process imports"
                " its module, so define it in an importable module"
            )
        sessions = self.dispatcher.sessions
        try:
            encoded = sessions.encode("args", {"args": list(args), "kwargs": kwargs})
        except SerializationError as exc:
            raise SerializationError(f"cannot send these arguments to a task: {exc}") from None
        record = TaskRecord(
            id=secrets.token_urlsafe(18),
            name=name,
            status="queued",
            created=time.time(),
            args_summary=_summary(args, kwargs),
            args=encoded.decode(),
        )
        with self._lock:
            self.records[record.id] = record
            self._queue.append(record.id)
        self._on_loop(self._queued, record)
        return record.handle()

    def _queued(self, record: TaskRecord) -> None:
        self._save(record)
        self._pump()

    def _pump(self) -> None:
        """Starts queued tasks while fewer than ``max_tasks`` run (on the loop)."""
        if not self._open:
            return
        while True:
            with self._lock:
                if not self._queue or len(self._processes) + self._starting >= self.max_tasks:
                    return
                task_id = self._queue.popleft()
                record = self.records.get(task_id)
                if record is None or record.status != "queued":
                    continue
                self._starting += 1
            self._track(self._start(record))

    async def _start(self, record: TaskRecord) -> None:
        try:
            address = await self._private_port()
            entry = self.registry.get(record.name)
            if entry is None:  # queued by an earlier server that had it
                raise BackgroundTaskError(f"no background task named {record.name!r}")
            spec = {
                "id": record.id,
                "module": entry.module,
                "url": "tether://{}:{}".format(*address),
                "key": self.key,
                "path": [p for p in sys.path if p],
            }
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tether.client.task_worker",
                stdin=asyncio.subprocess.DEVNULL,
                env={**os.environ, "TETHER_TASK": json.dumps(spec)},
            )
        except Exception as exc:
            log.exception("cannot start background task %r", record.name)
            with self._lock:
                self._starting -= 1
                self._end(record, "failed", f"could not start: {exc}")
            self._save(record)
            self._pump()
            return
        with self._lock:
            self._starting -= 1
            self._processes[record.id] = process
            if record.status == "killed":  # killed while it started
                _kill(process)
            else:
                record.status, record.started, record.pid = "running", time.time(), process.pid
        self._save(record)
        self._track(self._watch(record, process))

    async def _watch(self, record: TaskRecord, process: asyncio.subprocess.Process) -> None:
        code = await process.wait()
        with self._lock:
            self._processes.pop(record.id, None)
            vanished = record.status == "running"
            if vanished:  # no result came: it crashed, was OOM-killed, or lost us
                self._end(record, "missing", f"its process ended with code {code}")
        if vanished:
            log.error(
                "background task %r (%s) vanished: exit code %s", record.name, record.id, code
            )
            self._save(record)
        self._pump()

    async def _private_port(self) -> tuple[str, int]:
        if self._address is None:
            from tether.runtime.tcp import TcpListener

            listener = TcpListener(self.dispatcher, "127.0.0.1", 0)
            self._address = await listener.start()
            self._listener = listener
        return self._address

    # -- what a task's process reports --------------------------------------------------

    def started(self, task_id: str) -> list[object]:
        """The task's name and arguments, for its process."""
        record = self._get(task_id)
        document = self.dispatcher.sessions.decode((record.args or "null").encode())
        assert isinstance(document, dict)
        return [record.name, document["args"], document["kwargs"]]

    def report_state(self, task_id: str, state: object) -> None:
        record = self._get(task_id)
        if record.status != "running":
            return
        record.state = self.dispatcher.sessions.encode("task_state", state).decode()
        self._save(record)

    def finished(self, task_id: str, status: str, value: object, state: object) -> None:
        """The task returned (``completed``, ``value`` its result) or raised (``failed``,
        ``value`` the exception: portable, or ``[type name, message]``); ``state`` is its
        final state (None: keep the last one reported)."""
        record = self._get(task_id)
        if record.status != "running":
            return
        sessions = self.dispatcher.sessions
        encoded_state = record.state
        try:
            if state is not None:
                encoded_state = sessions.encode("task_state", state).decode()
        except SerializationError as exc:
            log.error("task %r: its final state cannot be kept: %s", record.name, exc)
        result = error = text = None
        if status == "completed":
            try:
                result = sessions.encode("result", value).decode()
            except SerializationError as exc:
                status, value = "failed", ["SerializationError", f"its result: {exc}"]
        if status != "completed":
            if isinstance(value, BaseException):
                text = f"{type(value).__name__}: {value}"
            else:
                name, message = value if isinstance(value, list) else ("Exception", str(value))
                value = [str(name), str(message)]
                text = f"{name}: {message}"
            try:
                error = sessions.encode("error", value).decode()
            except SerializationError:
                error = sessions.encode("error", [type(value).__name__, str(value)]).decode()
        with self._lock:
            if record.status != "running":  # killed meanwhile: that stands
                return
            record.state, record.result, record.error, record.error_text = (
                encoded_state,
                result,
                error,
                text,
            )
            self._end(record, status, text)
        self._save(record)

    # -- questions ----------------------------------------------------------------------

    def answer(self, op: str, *args: Any) -> object:
        """``Task`` methods and ``launch_background_task`` in server code, and the TASK
        requests of clients (``trusted``: may launch and kill; see the peer)."""
        return self.ask(op, args, trusted=True)

    def ask(self, op: str, args: tuple[Any, ...], *, trusted: bool) -> object:
        """Answers one question about tasks.

        Raises:
            BackgroundTaskNotFound: no task has that id.
            BackgroundTaskError: an unknown question, or launching from an untrusted client.
            PermissionDenied: an untrusted client asked to kill or list.
        """
        if op == "launch":
            if not trusted:
                raise BackgroundTaskError(
                    "an untrusted client cannot launch background tasks (use a server function)"
                )
            name, task_args, task_kwargs = _three(args)
            return self.launch(str(name), tuple(task_args), dict(task_kwargs))
        if op == "list":
            if not trusted:
                raise PermissionDenied("an untrusted client cannot list background tasks")
            with self._lock:
                records = list(self.records.values())
            return [r.handle() for r in sorted(records, key=lambda r: r.created)]
        if len(args) != 1 or not isinstance(args[0], str):
            raise BackgroundTaskError(f"bad background task request {op!r}")
        record = self._get(args[0])
        if op == "get":
            return record.handle()
        if op == "status":
            return record.status
        if op == "state":
            return self._value(record.state) or {}
        if op == "result":
            return self._value(record.result)
        if op == "error":  # a portable exception, or [type name, message]
            return self._value(record.error)
        if op == "kill":
            if not trusted:
                raise PermissionDenied("an untrusted client cannot kill background tasks")
            self.kill(record)
            return None
        raise BackgroundTaskError(f"bad background task request {op!r}")

    def kill(self, record: TaskRecord) -> None:
        with self._lock:
            if record.status not in RUNNING:
                return
            self._end(record, "killed", None)
            process = self._processes.get(record.id)
        if process is not None:
            self._on_loop(_kill, process)
        self._on_loop(self._save, record)

    # -- helpers ------------------------------------------------------------------------

    def _get(self, task_id: str) -> TaskRecord:
        record = self.records.get(task_id)
        if record is None:
            raise BackgroundTaskNotFound(f"no background task with id {task_id!r}")
        return record

    def _value(self, encoded: str | None) -> object:
        if encoded is None:
            return None
        return self.dispatcher.sessions.decode(encoded.encode())

    def _end(self, record: TaskRecord, status: str, why: str | None) -> None:
        record.status, record.ended = status, time.time()
        if why and status == "missing":
            record.error_text = why

    def _save(self, record: TaskRecord) -> None:
        """Writes the record soon, in order (from the loop or any thread)."""
        data, ended = record.to_bytes(), record.ended
        self.dispatcher.sessions.background(self.dispatcher.store.save_task(record.id, data, ended))

    def _on_loop(self, fn: Any, *args: Any) -> None:
        loop = self.dispatcher.loop
        if loop is None:
            return
        if on_loop(loop):
            fn(*args)
        else:
            loop.call_soon_threadsafe(fn, *args)

    def _track(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    @property
    def running(self) -> int:
        with self._lock:
            return len(self._processes)


def _kill(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):  # it just ended
            process.kill()


def _three(args: tuple[Any, ...]) -> tuple[object, list[object], dict[str, object]]:
    if len(args) != 3 or not isinstance(args[1], list) or not isinstance(args[2], dict):
        raise BackgroundTaskError("launch needs a name, a list of arguments and a dict")
    return args[0], args[1], args[2]


def _summary(args: tuple[object, ...], kwargs: dict[str, object]) -> str:
    parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
    text = ", ".join(parts)
    return text if len(text) <= SUMMARY_CHARS else text[: SUMMARY_CHARS - 1] + "…"
