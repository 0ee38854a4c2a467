"""A test app for the TCP port's reading threads: which thread runs a call, and calls that
block, or call back the peer that made them."""

from __future__ import annotations

import threading

from tether import server

_events: dict[str, threading.Event] = {}
_lock = threading.Lock()


def _event(key: str) -> threading.Event:
    with _lock:
        return _events.setdefault(key, threading.Event())


@server.callable("threads.where")
def where() -> str:
    return threading.current_thread().name


@server.callable("threads.block")
def block(key: str) -> str:
    """Blocks (30 s at most) until ``threads.release(key)``; returns its thread's name."""
    _event(key + ".started").set()
    released = _event(key).wait(30)
    return threading.current_thread().name if released else "timed out"


@server.callable("threads.started")
def started(key: str) -> bool:
    return _event(key + ".started").is_set()


@server.callable("threads.release")
def release(key: str) -> str:
    _event(key).set()
    return threading.current_thread().name


@server.callable("threads.ask_back")
def ask_back(value: object) -> list[object]:
    """Calls the function its caller registered, over the caller's own connection."""
    return [server.call("threads.client_echo", value), threading.current_thread().name]


@server.callable("threads.alive")
def alive() -> list[str]:
    return sorted(t.name for t in threading.enumerate() if t.name.startswith("tether-tcp"))


_big_calls = [0]


@server.callable("threads.big")
def big(size: int) -> str:
    """A large answer (counted: how many calls the server took)."""
    with _lock:
        _big_calls[0] += 1
    return "x" * size


@server.callable("threads.big_calls")
def big_calls() -> int:
    return _big_calls[0]
