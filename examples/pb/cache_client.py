"""The duck pond from the client's side: one mirror, kept up to date by the server.

tether serve examples/pb             # in one terminal
python examples/pb/cache_client.py   # in another
"""

from __future__ import annotations

import gc
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # find pond.py

from pond import SlaveDuckPond

from tether import server

URL = os.environ.get("TETHER_URL", "ws://127.0.0.1:8000/_/ws")


def main() -> None:
    server.connect(URL)
    try:
        pond = server.call("get_pond")
        assert isinstance(pond, SlaveDuckPond)
        print(f"[{pond.count()}] ducks:", pond.getDucks())
        again = server.call("get_pond")
        print("one mirror per connection:", again is pond)

        server.call("add_duck", "ugly duckling")  # the server tells every mirror
        print(f"[{pond.count()}] ducks:", pond.getDucks())
        server.call("remove_duck", "one duck")
        print(f"[{pond.count()}] ducks:", pond.getDucks())
        print("observers on the server:", server.call("observers"))

        del pond, again  # dropping the mirror tells the server: stoppedObserving runs
        gc.collect()
        server.call("observers")  # a round trip, so the release has arrived
        print("observers on the server:", server.call("observers"))
    finally:
        server.disconnect()


if __name__ == "__main__":
    main()
