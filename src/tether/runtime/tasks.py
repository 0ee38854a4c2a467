"""Background tasks on the server: records, a bounded queue, and one process per task.

A task runs in a fresh interpreter (``python -m tether.task_worker``: the same as
multiprocessing's *spawn*), which imports the module that registered the task and connects
back to this server over a private TCP port on 127.0.0.1 with a key of its own (an HMAC
of the task id with a secret of this server process), read from a pipe. Through that
connection the task fetches its arguments, makes
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
import hashlib
import hmac
import json
import logging
import reprlib
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
START_TIMEOUT = 60.0
"""Seconds a task's process has to connect and ask for its arguments."""
EXIT_GRACE = 5.0
"""Seconds a task's process may linger after reporting its result before it is killed."""
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
        self._port_lock = asyncio.Lock()
        self._connected: dict[str, asyncio.Event] = {}
        self._unsaved: set[str] = set()

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
        for watcher in list(self._watchers):
            watcher.cancel()
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
            why = str(exc).replace("cannot store 'args' in server.session: ", "")
            raise SerializationError(f"cannot send these arguments to a task: {why}") from None
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
        process = None
        try:
            address = await self._private_port()
            entry = self.registry.get(record.name)
            if entry is None:  # queued by an earlier server that had it
                raise BackgroundTaskError(f"no background task named {record.name!r}")
            if record.status == "queued" and self._open:
                process = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-P",  # the server's working folder must not shadow modules (a json.py)
                    "-m",
                    "tether.task_worker",
                    stdin=asyncio.subprocess.PIPE,
                    start_new_session=True,  # Ctrl-C is the server's to handle, not theirs
                )
                spec = {
                    "id": record.id,
                    "module": entry.module,
                    "url": "tether://{}:{}".format(*address),
                    "key": self.key_for(record.id),
                    "path": [p for p in sys.path if p],
                    "log_level": logging.getLogger("tether").getEffectiveLevel(),
                }
                assert process.stdin is not None
                process.stdin.write(json.dumps(spec).encode())  # never in its environment
                process.stdin.close()
        except Exception as exc:
            log.exception("cannot start background task %r", record.name)
            with self._lock:
                self._starting -= 1
                if record.status in RUNNING:
                    self._end(record, "failed", f"could not start: {exc}")
            if process is not None:
                _kill(process)
            self._save(record)
            self._pump()
            return
        with self._lock:
            self._starting -= 1
            if process is not None:
                self._processes[record.id] = process
                if record.status == "queued":
                    record.status, record.started, record.pid = "running", time.time(), process.pid
                else:  # killed, or the server stopped, while it started
                    _kill(process)
        self._save(record)
        if process is not None:
            self._track(self._watch(record, process))
            self._track(self._deadline(record, process))
        else:
            self._pump()

    async def _deadline(self, record: TaskRecord, process: asyncio.subprocess.Process) -> None:
        """A process that never asks for its arguments (an import that hangs) is killed
        after START_TIMEOUT; one that reported its result but does not exit (a thread it
        left running), after EXIT_GRACE. Either way its slot is freed."""
        try:
            async with asyncio.timeout(START_TIMEOUT):
                await record_event(self._connected, record.id)
        except TimeoutError:
            with self._lock:
                if record.status == "running":
                    self._end(record, "failed", f"did not start within {START_TIMEOUT:g} s")
            _kill(process)
            self._save(record)
            return
        while process.returncode is None:
            await asyncio.sleep(EXIT_GRACE)
            if process.returncode is None and record.status not in RUNNING:
                log.warning("task %r ended but its process did not exit: killed", record.name)
                _kill(process)

    async def _watch(self, record: TaskRecord, process: asyncio.subprocess.Process) -> None:
        code = await process.wait()
        self._connected.pop(record.id, None)
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
        """The port task processes connect to (opened once; it answers nothing but a
        task's own hello)."""
        async with self._port_lock:
            if self._address is None:
                from tether.runtime.tcp import TcpListener

                listener = TcpListener(self.dispatcher, "127.0.0.1", 0, tasks_only=True)
                self._address = await listener.start()
                self._listener = listener
        return self._address

    def key_for(self, task_id: str) -> str:
        """The key of one task's process: it opens that task's connection, nothing else."""
        return hmac.new(self.key.encode(), task_id.encode(), hashlib.sha256).hexdigest()

    def accepts(self, task_id: object, key: str) -> bool:
        """Whether ``key`` is the key of running task ``task_id``."""
        if type(task_id) is not str:
            return False
        record = self.records.get(task_id)
        if record is None or record.status != "running":
            return False
        return hmac.compare_digest(key.encode(), self.key_for(task_id).encode())

    # -- what a task's process reports --------------------------------------------------

    def started(self, task_id: str) -> list[object]:
        """The task's name and arguments, for its process (once: they are then forgotten,
        and only the summary stays)."""
        record = self._get(task_id)
        if record.args is None:
            raise BackgroundTaskError(f"task {task_id!r} has already started")
        document = self.dispatcher.sessions.decode(record.args.encode())
        if not isinstance(document, dict):
            raise BackgroundTaskError(f"task {task_id!r} has unreadable arguments")
        record.args = None
        self._connected.setdefault(task_id, asyncio.Event()).set()
        self._save(record)
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
        self._connected.setdefault(task_id, asyncio.Event()).set()  # it did connect
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
            process = self._processes.get(record.id)  # also one that ended but lingers
            if record.status in RUNNING:
                self._end(record, "killed", None)
            elif process is None:
                return
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
        if why and status in ("missing", "failed") and record.error is None:
            record.error_text = why
            if status == "failed":  # Tether's own reason: the task's error to its owner
                error = ["BackgroundTaskError", why]
                record.error = self.dispatcher.sessions.encode("error", error).decode()

    def _save(self, record: TaskRecord) -> None:
        """Writes the record soon (from the loop or any thread). Saves of one record are
        merged: what is written is its latest version, so a fast reporter never queues
        a copy per report."""
        with self._lock:
            if record.id in self._unsaved:
                return
            self._unsaved.add(record.id)
        self.dispatcher.sessions.background(self._write(record))

    async def _write(self, record: TaskRecord) -> None:
        with self._lock:
            self._unsaved.discard(record.id)
            data, ended = record.to_bytes(), record.ended
        await self.dispatcher.store.save_task(record.id, data, ended)

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


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlist, _REPR.maxdict = 2, 40, 40, 5, 5


def _summary(args: tuple[object, ...], kwargs: dict[str, object]) -> str:
    """A short text of the arguments for ``tether tasks`` (shown to whoever reads the
    store: pass secrets some other way)."""

    def short(value: object) -> str:
        try:
            return _REPR.repr(value)
        except Exception:  # a __repr__ that fails
            return f"<{type(value).__name__}>"

    parts = [short(a) for a in args] + [f"{k}={short(v)}" for k, v in kwargs.items()]
    text = ", ".join(parts)
    return text if len(text) <= SUMMARY_CHARS else text[: SUMMARY_CHARS - 1] + "…"


async def record_event(events: dict[str, asyncio.Event], task_id: str) -> None:
    """Waits until ``events[task_id]`` is set (made here if needed)."""
    await events.setdefault(task_id, asyncio.Event()).wait()
