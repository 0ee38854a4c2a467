"""The capability example: a client's object updates itself after a server call.

tether serve examples/videos       # in one terminal
python examples/videos/client.py   # in another
"""

from __future__ import annotations

import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # find shared.py

from shared import Video  # registers the portable class on this side too

from tether import server
from tether.client import Client

URL = os.environ.get("TETHER_URL", "ws://127.0.0.1:8000/_/ws")


def main() -> None:
    server.connect(URL)
    try:
        my_video = server.call("get_video", 7, False)
        assert isinstance(my_video, Video)
        print(my_video.description)  # "Charlie Bit My Finger"
        server.call("reset_description", my_video)  # server-side: video.set_description(...)
        print(my_video.description)  # "© 2000 Anvil Records"

        # Beyond Anvil: live pushes. Subscribed, this object hears of changes made by
        # anyone else at once, not only when its own calls return.
        changed = threading.Event()
        my_video.cap.set_update_handler(
            lambda update: (my_video._apply_update(update), changed.set())
        )
        my_video.cap.subscribe()
        with Client(URL) as someone_else:
            their_video = someone_else.call("get_video", 7)
            someone_else.call("set_video_description", their_video.cap, "Now in 4K")
        if not changed.wait(10):
            raise SystemExit("no live update within 10 seconds")
        print(my_video.description)  # "Now in 4K", pushed

        forged = server.Capability(["video", 8])  # minted here: the server refuses it
        try:
            server.call("get_video_description", forged)
        except server.PermissionDenied as exc:
            print("forged capability refused:", exc)
    finally:
        server.disconnect()


if __name__ == "__main__":
    main()
