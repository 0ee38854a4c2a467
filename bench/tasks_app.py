"""The app of bench/tasks.py: an empty task and one that reports at once."""

from __future__ import annotations

import time

from tether import server


@server.background_task
def empty() -> None:
    """Nothing: what a task costs by itself (a process, its imports, the connection)."""


@server.background_task
def report() -> None:
    """Reports its start time at once, then waits to be told to stop (by its state)."""
    server.task_state["t"] = time.time()
