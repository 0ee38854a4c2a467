"""Where a server keeps what outlives a connection: sessions and the server secret.

``--store`` picks one: ``memory`` (this process only), ``sqlite:///path`` (the embedded
default: one file, WAL, one dedicated thread, survives a restart). A Redis store, for
several processes and hosts, implements the same :class:`Store` interface.

Session data is kept per key (each value encoded on its own), so two calls that change
different keys of one session never overwrite each other.
"""

from __future__ import annotations

import abc
import asyncio
import concurrent.futures
import functools
import os
import sqlite3
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, TypeVar
from urllib.parse import urlsplit

__all__ = ["MemoryStore", "SessionRecord", "SqliteStore", "Store", "open_store"]

T = TypeVar("T")


@dataclass(slots=True)
class SessionRecord:
    """One stored session: its values (encoded, by key), capability generation, and when
    it was last used (seconds since the epoch)."""

    last_seen: float
    generation: int = 1
    data: dict[str, bytes] = field(default_factory=dict)


class Store(abc.ABC):
    """The interface every store implements (all methods are coroutines on the loop).

    ``shared`` says whether other processes may change the data behind this one's back
    (a Redis store): the server then reads a session again at each call instead of
    trusting what it holds in memory.
    """

    shared: ClassVar[bool] = False
    url: str = ""

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Prepares the store (creates tables, connects)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Releases what :meth:`open` took."""

    @abc.abstractmethod
    async def secret(self, fresh: bytes) -> bytes:
        """The server secret kept in the store; stores ``fresh`` first if there is none."""

    @abc.abstractmethod
    async def load_session(self, sid: str) -> SessionRecord | None:
        """The session ``sid``, or None if it does not exist (never made, or purged)."""

    @abc.abstractmethod
    async def create_session(self, sid: str, now: float) -> None:
        """Makes an empty session ``sid`` (generation 1), unless it exists already: a save
        may reach the store first (ids are random: never one of an older session)."""

    @abc.abstractmethod
    async def save_session(
        self, sid: str, changed: Mapping[str, bytes], deleted: Collection[str], now: float
    ) -> None:
        """Writes ``changed`` keys, removes ``deleted`` ones, and marks the session used
        at ``now``; other keys are left as they are. Recreates a purged session."""

    @abc.abstractmethod
    async def touch_session(self, sid: str, now: float) -> None:
        """Marks the session used at ``now``."""

    @abc.abstractmethod
    async def set_generation(self, sid: str, generation: int) -> None:
        """Keeps the session's capability generation (``invalidate_client_objects``)."""

    @abc.abstractmethod
    async def delete_session(self, sid: str) -> None:
        """Forgets the session and its data."""

    @abc.abstractmethod
    async def purge_sessions(self, idle_before: float) -> int:
        """Deletes the sessions last used before ``idle_before``; returns how many."""

    @abc.abstractmethod
    async def save_task(self, task_id: str, record: bytes, ended: float | None) -> None:
        """Writes a background task's record (replacing the last one); ``ended`` is when
        it finished, None while it is queued or running."""

    @abc.abstractmethod
    async def load_tasks(self) -> list[bytes]:
        """Every task record kept."""

    @abc.abstractmethod
    async def purge_tasks(self, ended_before: float) -> int:
        """Forgets tasks that ended before ``ended_before``; returns how many."""


class MemoryStore(Store):
    """Everything in this process's memory: gone when it stops (``--store memory``)."""

    url = "memory"

    def __init__(self) -> None:
        self._secret: bytes | None = None
        self._sessions: dict[str, SessionRecord] = {}
        self._tasks: dict[str, tuple[bytes, float | None]] = {}

    async def secret(self, fresh: bytes) -> bytes:
        if self._secret is None:
            self._secret = fresh
        return self._secret

    async def load_session(self, sid: str) -> SessionRecord | None:
        record = self._sessions.get(sid)
        if record is None:
            return None
        return SessionRecord(record.last_seen, record.generation, dict(record.data))

    async def create_session(self, sid: str, now: float) -> None:
        self._sessions.setdefault(sid, SessionRecord(now))

    async def save_session(
        self, sid: str, changed: Mapping[str, bytes], deleted: Collection[str], now: float
    ) -> None:
        record = self._sessions.setdefault(sid, SessionRecord(now))
        record.data.update(changed)
        for key in deleted:
            record.data.pop(key, None)
        record.last_seen = max(record.last_seen, now)

    async def touch_session(self, sid: str, now: float) -> None:
        record = self._sessions.get(sid)
        if record is not None:
            record.last_seen = max(record.last_seen, now)

    async def set_generation(self, sid: str, generation: int) -> None:
        record = self._sessions.get(sid)
        if record is not None:
            record.generation = generation

    async def delete_session(self, sid: str) -> None:
        self._sessions.pop(sid, None)

    async def purge_sessions(self, idle_before: float) -> int:
        old = [sid for sid, r in self._sessions.items() if r.last_seen < idle_before]
        for sid in old:
            del self._sessions[sid]
        return len(old)

    async def save_task(self, task_id: str, record: bytes, ended: float | None) -> None:
        self._tasks[task_id] = (record, ended)

    async def load_tasks(self) -> list[bytes]:
        return [record for record, _ in self._tasks.values()]

    async def purge_tasks(self, ended_before: float) -> int:
        old = [i for i, (_, ended) in self._tasks.items() if ended and ended < ended_before]
        for task_id in old:
            del self._tasks[task_id]
        return len(old)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY, generation INTEGER NOT NULL, last_seen REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_last_seen ON sessions (last_seen);
CREATE TABLE IF NOT EXISTS session_data (
    session TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,
    PRIMARY KEY (session, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tasks (id TEXT PRIMARY KEY, record BLOB NOT NULL, ended REAL);
CREATE INDEX IF NOT EXISTS tasks_ended ON tasks (ended);
"""


class SqliteStore(Store):
    """One SQLite file, written by one dedicated thread (WAL; ``synchronous=NORMAL``: a
    committed write survives the process being killed, not a power cut).

    Only one server process may use a file at a time: several processes need Redis.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.url = f"sqlite:///{self.path}"
        self._thread: concurrent.futures.ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None

    async def open(self) -> None:
        if self._thread is not None:
            return
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="tether-sqlite")
        try:
            await self._run(self._open)
        except BaseException:
            self._thread.shutdown(wait=False)
            self._thread = None
            raise

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # It holds the server secret and every session: readable by this user only
        # (SQLite gives its -wal and -shm files the same mode).
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=5000")
            db.executescript(_SCHEMA)
        except sqlite3.Error:
            db.close()
            raise
        self._db = db

    async def close(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        db, self._db = self._db, None
        if db is not None:
            await asyncio.get_running_loop().run_in_executor(thread, db.close)
        thread.shutdown(wait=True)

    async def _run(self, work: Callable[[], T]) -> T:
        if self._thread is None:
            raise RuntimeError(f"the store {self.url} is not open")
        return await asyncio.get_running_loop().run_in_executor(self._thread, work)

    def _write(self, statements: list[tuple[str, tuple[object, ...]]]) -> None:
        """Runs ``statements`` in one transaction (on the store's thread)."""
        db = self._db
        assert db is not None
        db.execute("BEGIN IMMEDIATE")
        try:
            for sql, params in statements:
                db.execute(sql, params)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    async def secret(self, fresh: bytes) -> bytes:
        def get_or_put() -> bytes:
            assert self._db is not None
            self._write([("INSERT OR IGNORE INTO meta VALUES ('secret', ?)", (fresh,))])
            row = self._db.execute("SELECT value FROM meta WHERE name = 'secret'").fetchone()
            return bytes(row[0])

        return await self._run(get_or_put)

    async def load_session(self, sid: str) -> SessionRecord | None:
        def load() -> SessionRecord | None:
            db = self._db
            assert db is not None
            row = db.execute(
                "SELECT last_seen, generation FROM sessions WHERE id = ?", (sid,)
            ).fetchone()
            if row is None:
                return None
            data = db.execute("SELECT key, value FROM session_data WHERE session = ?", (sid,))
            return SessionRecord(row[0], row[1], {k: bytes(v) for k, v in data})

        return await self._run(load)

    async def create_session(self, sid: str, now: float) -> None:
        await self._run(
            functools.partial(
                self._write,
                [("INSERT OR IGNORE INTO sessions VALUES (?, 1, ?)", (sid, now))],
            )
        )

    async def save_session(
        self, sid: str, changed: Mapping[str, bytes], deleted: Collection[str], now: float
    ) -> None:
        statements: list[tuple[str, tuple[object, ...]]] = [
            ("INSERT OR IGNORE INTO sessions VALUES (?, 1, ?)", (sid, now)),
            ("UPDATE sessions SET last_seen = max(last_seen, ?) WHERE id = ?", (now, sid)),
        ]
        statements += [
            ("INSERT OR REPLACE INTO session_data VALUES (?, ?, ?)", (sid, key, value))
            for key, value in changed.items()
        ]
        statements += [
            ("DELETE FROM session_data WHERE session = ? AND key = ?", (sid, key))
            for key in deleted
        ]
        await self._run(functools.partial(self._write, statements))

    async def touch_session(self, sid: str, now: float) -> None:
        sql = "UPDATE sessions SET last_seen = max(last_seen, ?) WHERE id = ?"
        await self._run(functools.partial(self._write, [(sql, (now, sid))]))

    async def set_generation(self, sid: str, generation: int) -> None:
        sql = "UPDATE sessions SET generation = ? WHERE id = ?"
        await self._run(functools.partial(self._write, [(sql, (generation, sid))]))

    async def delete_session(self, sid: str) -> None:
        await self._run(
            functools.partial(
                self._write,
                [
                    ("DELETE FROM session_data WHERE session = ?", (sid,)),
                    ("DELETE FROM sessions WHERE id = ?", (sid,)),
                ],
            )
        )

    async def purge_sessions(self, idle_before: float) -> int:
        def purge() -> int:
            db = self._db
            assert db is not None
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute(
                    "DELETE FROM session_data WHERE session IN"
                    " (SELECT id FROM sessions WHERE last_seen < ?)",
                    (idle_before,),
                )
                count = db.execute(
                    "DELETE FROM sessions WHERE last_seen < ?", (idle_before,)
                ).rowcount
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return count

        return await self._run(purge)

    async def save_task(self, task_id: str, record: bytes, ended: float | None) -> None:
        statement = ("INSERT OR REPLACE INTO tasks VALUES (?, ?, ?)", (task_id, record, ended))
        await self._run(functools.partial(self._write, [statement]))

    async def load_tasks(self) -> list[bytes]:
        def load() -> list[bytes]:
            db = self._db
            assert db is not None
            return [bytes(row[0]) for row in db.execute("SELECT record FROM tasks")]

        return await self._run(load)

    async def purge_tasks(self, ended_before: float) -> int:
        def purge() -> int:
            db = self._db
            assert db is not None
            return int(db.execute("DELETE FROM tasks WHERE ended < ?", (ended_before,)).rowcount)

        return await self._run(purge)


def open_store(url: str | None, data_dir: str | None) -> Store:
    """The store a ``--store`` URL names (not opened yet).

    None means the default: SQLite in ``data_dir/tether.db`` when there is a data
    folder, else memory.

    Raises:
        ValueError: an unknown or malformed URL.
    """
    if url is None:
        if data_dir is None:
            return MemoryStore()
        return SqliteStore(Path(data_dir) / "tether.db")
    if url == "memory":
        return MemoryStore()
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        bad = parts.netloc or parts.query or parts.path in ("", "/")
        if bad or not url.startswith("sqlite:///"):
            raise ValueError(
                f"bad store URL {url!r}: use sqlite:///relative/path or sqlite:////abs"
            )
        return SqliteStore(parts.path[1:])
    if parts.scheme == "redis":
        raise ValueError(
            f"store {url!r}: the Redis store is not part of this version"
            " (use memory or sqlite:///path)"
        )
    raise ValueError(f"unknown store {url!r}: use memory, sqlite:///path or redis://host:port/db")
