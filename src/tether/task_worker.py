"""A background task's process: ``python -P -m tether.task_worker`` (the server runs it).

It reads its instructions from stdin (never from its environment, which other users may
read), connects back to its server (a private 127.0.0.1 port, and a key for this task
only), imports the module that registered the task, fetches its arguments, runs the task
with ``server.task_state`` and ``server.context`` set, and reports the result or the
error: also a failure to import or to start, never a silent exit. It exits as soon as
the connection to its server is lost, and at once when the task is done (a thread the
task left behind does not keep it alive).
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
from tether.codec.capability import set_publisher
from tether.context import CallContext, CallState, ClientInfo, StackFrame, current_call
from tether.errors import SerializationError
from tether.protocol.names import TASK
from tether.tasks import TaskState, set_task_state, task_registry

log = logging.getLogger("tether")


def main() -> int:
    spec: dict[str, Any] = json.loads(sys.stdin.read())
    sys.path[:0] = [p for p in spec["path"] if p not in sys.path]
    logging.basicConfig(
        level=int(spec.get("log_level", logging.INFO)),
        format="%(levelname)s %(name)s: %(message)s",
    )
    task_id = str(spec["id"])

    from tether.client.sync import Client
    from tether.server import _FacadeClient

    client = Client(
        spec["url"],
        spec["key"],
        register=False,
        reconnect=False,
        keepalive_interval=None,  # a local connection: EOF tells a dead server
        hello_extra={"task": task_id},
    )
    _current.client = facade = _FacadeClient(client)
    finishing = threading.Event()
    threading.Thread(target=_exit_when_lost, args=(client, finishing), daemon=True).start()

    def publish(key: str, update: object) -> None:  # send_update: live, through the server
        client.call(TASK, "publish", key, update)

    set_publisher(publish)

    state = TaskState(lambda snapshot: client.call(TASK, "report", task_id, snapshot))
    status: str = "completed"
    value: object = None
    try:
        importlib.import_module(spec["module"])  # registers the task and its portables
        started = client.call(TASK, "started", task_id)
        if not isinstance(started, list) or len(started) != 3:
            raise RuntimeError(f"the server answered {started!r} for the arguments")
        name, args, kwargs = str(started[0]), list(started[1]), dict(started[2])
        entry = task_registry.get(name)
        if entry is None:
            raise LookupError(f"no background task {name!r} in {spec['module']}")
    except BaseException as exc:  # it cannot start: say why, as the task's error
        log.exception("background task %s could not start", task_id)
        status, value = "failed", ["BackgroundTaskError", f"could not start: {exc!r}"]
    else:
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
        try:
            value = entry.fn(*args, **kwargs)
        except BaseException as exc:  # SystemExit and KeyboardInterrupt are failures too
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
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # threads the task left running do not keep the process (and its slot)
