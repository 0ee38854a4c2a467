"""A trusted client process that registers functions.

python -m tests.apps.uplink_worker URL KEY
"""

from __future__ import annotations

import sys
import threading

from tether import server


@server.callable
def uplink_add(a: int, b: int) -> int:
    """Registered before connecting."""
    return a + b


_stop = threading.Event()


@server.callable
def uplink_wait() -> str:
    _stop.wait(60)
    return "never"


@server.callable
def uplink_nested(value: object) -> object:
    """Runs here for the server, and calls back into the server."""
    return ["from uplink", server.call("echo", value)]


@server.callable
def peer_cap_update(cap: server.Capability, update: object) -> list[object]:
    """Runs here for the server: the update goes back in this call's reply."""
    cap.send_update(update)
    return cap.scope


@server.callable
def peer_cap_forward(cap: server.Capability, update: object) -> None:
    """Calls back into the server with the capability; the update flows back twice."""
    server.call("cap_update", cap, update)


def main() -> None:
    url, key = sys.argv[1], sys.argv[2] or None
    try:
        server.connect(url, key)
    except server.PermissionDenied as exc:
        print("REFUSED", exc, flush=True)
        return

    @server.callable("uplink.later")
    def later(x: int) -> int:
        """Registered after connecting."""
        return x * 10

    server.call("echo", "sync point")  # the REGISTER frames went out before this call
    print("READY", flush=True)
    server.wait_forever()


if __name__ == "__main__":
    main()
