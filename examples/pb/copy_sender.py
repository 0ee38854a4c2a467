"""copy_sender.py: sends a CopyPond; the server receives a ReceiverPond.

tether serve examples/pb            # in one terminal
python examples/pb/copy_sender.py   # in another
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # find pond.py

from pond import CopyPond

from tether import server

URL = os.environ.get("TETHER_URL", "ws://127.0.0.1:8000/_/ws")


def main() -> None:
    pond = CopyPond()
    pond.setStuff("green", 7)
    print(pond.countFrogs())
    print(".".join([pond.__class__.__module__, pond.__class__.__name__]))  # its wire name
    server.connect(URL)
    try:
        print("pond arrived", server.call("take_pond", pond))
    finally:
        server.disconnect()


if __name__ == "__main__":
    main()
