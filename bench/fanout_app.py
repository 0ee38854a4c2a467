"""The server of the live-push fan-out benchmark (bench/fanout.py).

``python -m tether serve bench/fanout_app.py --port P --tcp-port T``

Clients ask ``video_cap(i)`` for a capability signed for their own connection and
subscribe to it; ``publish(i, round_no)`` sends one update on the same scope, which the
server pushes to every subscribed connection.
"""

from __future__ import annotations

import time

from tether import server
from tether.codec.capability import scope_key
from tether.runtime.updates import hub


def _scope(i: int) -> list[object]:
    return ["bench", i]


@server.callable
def video_cap(i: int) -> server.Capability:
    """A capability for scope ``["bench", i]`` (server code may mint one)."""
    return server.Capability(_scope(i))


@server.callable
def publish(i: int, round_no: int) -> list[float]:
    """One ``send_update`` on ``["bench", i]``. Returns ``time.monotonic()`` just before
    the call and just after it returned (the fan-out queued, or written on TCP), and the
    CPU time this thread spent in it (``time.thread_time()``, user + system)."""
    cap = server.Capability(_scope(i))
    cpu = time.thread_time()
    start = time.monotonic()
    cap.send_update({"round": round_no, "t": start})
    end = time.monotonic()
    return [start, end, time.thread_time() - cpu]


@server.callable
def subscribers(i: int) -> int:
    """How many connections are subscribed to ``["bench", i]``."""
    return hub.subscribers(scope_key(_scope(i)))
