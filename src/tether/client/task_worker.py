"""A background task's process: ``python -m tether.client.task_worker`` (the server runs it).

It imports the module that registered the task, connects back to its server (a private
127.0.0.1 port and key, given in ``TETHER_TASK``), fetches its arguments, runs the task
with ``server.task_state`` and ``server.context`` set, and reports the result or the
error. It exits as soon as the connection to its server is lost.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
import threading
from typing import Any

from tether import _current
from tether.codec.capability import Capability, set_publisher
from tether.context import CallContext, CallState, ClientInfo, StackFrame, current_call
from tether.errors import SerializationError
from tether.protocol.names import TASK
from tether.tasks import TaskState, set_task_state, task_registry

log = logging.getLogger("tether")


def main() -> int:
    spec: dict[str, Any] = json.loads(os.environ.pop("TETHER_TASK"))
    sys.path[:0] = [p for p in spec["path"] if p not in sys.path]
    logging.basicConfig(level="INFO", format="%(levelname)s %(name)s: %(message)s")
    task_id = str(spec["id"])

    from tether.client.sync import Client
    from tether.server import _FacadeClient

    module = importlib.import_module(spec["module"])  # registers the task (and portables)
    client = Client(
        spec["url"],
        spec["key"],
        register=False,
        reconnect=False,
        hello_extra={"task": task_id},
    )
    _current.client = facade = _FacadeClient(client)
    finishing = threading.Event()
    threading.Thread(target=_exit_when_lost, args=(client, finishing), daemon=True).start()

    def publish(key: str, update: object, cap: Capability | None = None) -> None:
        client.call(TASK, "publish", key, update)

    set_publisher(publish)
    started = client.call(TASK, "started", task_id)
    assert isinstance(started, list)
    name, args, kwargs = str(started[0]), list(started[1]), dict(started[2])
    entry = task_registry.get(name)
    if entry is None:
        missing = ["BackgroundTaskError", f"no task {name!r} in {module.__name__}"]
        client.call(TASK, "finished", task_id, "failed", missing, {})
        return 1
    state = TaskState(lambda snapshot: client.call(TASK, "report", task_id, snapshot))
    set_task_state(state)
    current_call.set(
        CallState(
            CallContext(
                "server_module",
                ClientInfo("background_task"),
                StackFrame("background_task", True),
                background_task_id=task_id,
            ),
            facade.caller,
        )
    )
    status, value = "completed", None
    try:
        value = entry.fn(*args, **kwargs)
    except Exception as exc:
        log.info("background task %r raised %s", name, type(exc).__name__, exc_info=True)
        portable = type(exc) in client.aio.registry.by_class
        status, value = "failed", exc if portable else [type(exc).__qualname__, str(exc)]
    _finish(client, task_id, status, value, state.close())
    finishing.set()
    client.close()
    return 0


def _finish(client: Any, task_id: str, status: str, value: object, state: object) -> None:
    """Reports the outcome. What cannot be sent is left out, never the outcome itself:
    an unsendable final state leaves the last one reported (None); an unsendable result
    or exception fails the task with that reason."""
    try:
        client.call(TASK, "finished", task_id, status, value, state)
        return
    except SerializationError as exc:
        log.error("the task's final state or outcome cannot be sent: %s", exc)
    try:
        client.call(TASK, "finished", task_id, status, value, None)
        return
    except SerializationError as exc:
        what = "result" if status == "completed" else "exception"
        unsent = ["SerializationError", f"its {what} cannot be sent: {exc}"]
    client.call(TASK, "finished", task_id, "failed", unsent, None)


def _exit_when_lost(client: Any, finishing: threading.Event) -> None:
    """The server went away: a task must not outlive it."""
    client.wait_closed()
    if not finishing.is_set():
        os._exit(3)


if __name__ == "__main__":  # pragma: no cover - run as a process
    sys.exit(main())
