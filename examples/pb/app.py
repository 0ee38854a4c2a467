"""The server of the PB examples: `tether serve examples/pb`.

- `take_pond(pond)` is copy_receiver.tac's `remote_takePond`: a client's CopyPond arrives
  here as a ReceiverPond.
- The duck pond lives here: `get_pond()` sends it (the state once per connection, then
  live `observe_*` updates), `add_duck` / `remove_duck` change it for every mirror.
"""

from __future__ import annotations

from pond import MasterDuckPond, ReceiverPond

from tether import server

POND = MasterDuckPond(["one duck", "two duck"])


@server.callable
def take_pond(pond: ReceiverPond) -> str:
    print(" got pond:", type(pond).__name__, pond.countFrogs(), flush=True)
    return "safe and sound"  # positive acknowledgement


@server.callable
def get_pond() -> MasterDuckPond:
    return POND


@server.callable
def add_duck(duck: str) -> int:
    POND.addDuck(duck)
    return POND.count()


@server.callable
def remove_duck(duck: str) -> int:
    POND.removeDuck(duck)
    return POND.count()


@server.callable
def observers() -> int:
    """How many connections mirror the pond now."""
    return len(POND.observers)
