"""Background tasks (and the server functions around them) for tests/runtime/test_tasks.py.

Each task runs in its own process, which imports this module by name
(``tests.apps.tasks``), so everything here must be importable from the repository root.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from tether import server

IMPORTED = time.time()
"""When this module was imported: in a task's process, about when that process started."""
LIMIT = 120.0
"""No task here runs longer than this, even if a test forgets it (the server kills it)."""


@server.portable_class("tests.TaskBoom")
class TaskBoom(Exception):
    """A portable exception: it crosses the wire as itself."""


def _wait_for(path: str) -> None:
    deadline = time.monotonic() + LIMIT
    while not Path(path).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.02)


# -- tasks ------------------------------------------------------------------------------


@server.background_task
def progress(steps: int, gate: str) -> dict[str, object]:
    """Reports its progress step by step; stops half-way until ``gate`` exists."""
    for i in range(steps):
        server.task_state["progress"] = (i + 1) / steps
        server.task_state["step"] = i + 1
        if i + 1 == steps // 2:
            _wait_for(gate)
        time.sleep(0.01)
    return {"steps": steps, "pid": os.getpid()}


@server.background_task
def context_probe() -> dict[str, object]:
    """What a task sees of its context, and what a call it makes sees."""
    context = server.context
    caller = context.remote_caller
    return {
        "client": context.client.type,
        "task_id": context.background_task_id,
        "trusted": caller is not None and caller.is_trusted,
        "call": server.call("tasks_whoami"),
    }


@server.background_task
def fail_portable(message: str) -> None:
    server.task_state["progress"] = 0.5
    raise TaskBoom(message)


@server.background_task
def fail_plain(message: str) -> None:
    raise ValueError(message)


@server.background_task
def spin() -> None:
    """Loops until it is killed (or its server goes away); its pid is in its state."""
    server.task_state["pid"] = os.getpid()
    deadline = time.monotonic() + LIMIT
    i = 0
    while time.monotonic() < deadline:
        i += 1
        server.task_state["i"] = i
        time.sleep(0.05)


@server.background_task
def short(i: int) -> list[float]:
    """[process import time, start, end]: the intervals show how many ran at once."""
    start = time.time()
    time.sleep(0.05)
    return [float(i), IMPORTED, start, time.time()]


@server.background_task
def publish(cap: server.Capability, update: object) -> None:
    """Sends an update on the capability it was given."""
    cap.send_update(update)


@server.background_task
def publish_by_scope(scope: list[object], update: object) -> None:
    """Mints a capability itself (a task is trusted) and sends an update on it."""
    server.Capability(scope).send_update(update)


@server.background_task
def finish(value: object) -> object:
    server.task_state["progress"] = 1.0
    return value


class Unsendable:
    """Not a portable class: it cannot cross the wire."""


@server.background_task
def return_unsendable() -> object:
    return Unsendable()


@server.background_task
def keep_unsendable_state(value: object) -> object:
    server.task_state["progress"] = 1.0
    server.task_state["thing"] = Unsendable()
    return value


@server.background_task
def raise_with_unsendable_state() -> None:
    server.task_state["thing"] = Unsendable()
    raise TaskBoom("with a state that cannot be sent")


@server.background_task
def vanish(code: int) -> None:
    """Its process ends without a word (as if it crashed)."""
    os._exit(code)


@server.background_task
def parent(value: object) -> dict[str, object]:
    """Launches a child task from inside a task and waits for it with its Task."""
    child = server.launch_background_task("finish", value)
    deadline = time.monotonic() + LIMIT
    while child.get_termination_status() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    return {
        "child": child,
        "status": child.get_termination_status(),
        "value": child.get_return_value(),
    }


# -- server functions -------------------------------------------------------------------


@server.callable
def tasks_whoami() -> dict[str, object]:
    context = server.context
    caller = context.remote_caller
    return {
        "client": context.client.type,
        "caller": caller.type if caller is not None else None,
        "trusted": caller is not None and caller.is_trusted,
        "task_id": context.background_task_id,
    }


@server.callable
def tasks_launch(name: str, *args: object) -> server.Task:
    """Server code launches a task for any client and hands it the Task."""
    return server.launch_background_task(name, *args)


@server.callable
def tasks_job_capability(n: int) -> server.Capability:
    return server.Capability(["job", n])


@server.background_task
def thread_leak() -> str:
    """Leaves a thread that never ends: the process must still go when the task is done."""
    import threading

    threading.Thread(target=threading.Event().wait, daemon=False).start()
    return "done"


@server.background_task
def exits() -> None:
    """sys.exit() in a task is a failure, not a vanished process."""
    raise SystemExit(0)


@server.background_task
def environment() -> bool:
    """Whether anything of the task's instructions is in its environment."""
    import os

    return any("TETHER_TASK" in name or "tether://" in value for name, value in os.environ.items())
