"""``tether tasks``: the task records of a server's store, as a table or as JSON."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from tether.runtime.stores import SqliteStore, Store, open_store
from tether.runtime.tasks import TaskRecord

__all__ = ["TaskRow", "list_tasks", "print_tasks"]


@dataclass(frozen=True, slots=True)
class TaskRow:
    """What ``tether tasks`` shows of one task."""

    id: str
    name: str
    status: str
    args: str
    created: float
    started: float | None
    ended: float | None
    pid: int | None
    progress: float | None
    state: object
    error: str | None


def list_tasks(store_url: str | None, data_dir: str | None) -> list[TaskRow]:
    """The task records of that store, oldest first.

    Raises:
        ValueError: a bad store URL, or no store there.
    """
    store = open_store(store_url, data_dir)
    if not isinstance(store, SqliteStore):
        raise ValueError(f"{store.url}: a memory store lives in its server; nothing to read")
    if not Path(store.path).exists():
        raise ValueError(f"no server store at {store.path}: has the server run there?")
    return asyncio.run(_load(store))


async def _load(store: Store) -> list[TaskRow]:
    try:
        await store.open()
        try:
            records = [TaskRecord.from_bytes(data) for data in await store.load_tasks()]
        finally:
            await store.close()
    except (sqlite3.Error, orjson.JSONDecodeError, TypeError) as exc:
        raise ValueError(f"cannot read the tasks of {store.url}: {exc}") from None
    return [_row(r) for r in sorted(records, key=lambda r: r.created)]


def _row(record: TaskRecord) -> TaskRow:
    state = _plain(record.state)
    progress = None
    if isinstance(state, dict):
        value = state.get("progress")
        if isinstance(value, int | float) and not isinstance(value, bool):
            progress = max(0.0, min(1.0, value / 100 if value > 1 else float(value)))
    return TaskRow(
        record.id,
        record.name,
        record.status,
        record.args_summary,
        record.created,
        record.started,
        record.ended,
        record.pid,
        progress,
        state,
        record.error_text,
    )


def _plain(encoded: str | None) -> object:
    """A stored value without the app's classes: JSON values as they are, each portable
    object as ``<its class name>``."""
    if encoded is None:
        return None
    document = orjson.loads(encoded)
    root: dict[str, Any] = {"v": document.get("v")}
    for entry in document.get("objects") or ():
        path = entry.get("path") if isinstance(entry, dict) else None
        if not isinstance(path, list) or not path:
            continue
        holder: Any = root
        try:
            for step in path[:-1]:
                holder = holder[step]
            holder[path[-1]] = f"<{entry.get('typeName', 'object')}>"
        except (KeyError, IndexError, TypeError):
            continue  # inside an object already shown by its name
    return root["v"]


def print_tasks(rows: list[TaskRow], *, as_json: bool) -> None:
    """Prints the rows: JSON lines, or a table with progress bars."""
    if as_json:
        for row in rows:
            print(json.dumps(_dict(row), default=str))
        return
    from rich.console import Console
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"{len(rows)} background task(s)")
    for column in ("id", "task", "status", "progress", "started", "for", "args", "error"):
        table.add_column(column)
    now = time.time()
    for row in rows:
        bar: Any = (
            ProgressBar(total=1.0, completed=row.progress, width=20)
            if row.progress is not None
            else ""
        )
        began = row.started or row.created
        took = (row.ended or now) - began
        table.add_row(  # Text: names, arguments and errors are never read as markup
            row.id[:8],
            Text(row.name),
            row.status,
            bar,
            dt.datetime.fromtimestamp(began).strftime("%m-%d %H:%M:%S"),
            f"{took:.1f} s",
            Text(row.args),
            Text(row.error or ""),
        )
    Console().print(table)


def _dict(row: TaskRow) -> dict[str, object]:
    return {name: getattr(row, name) for name in row.__slots__}
