"""The portable class both sides import: a video that caches its description.

Its capability both proves the holder may touch this video and carries updates back:
when server code calls ``send_update`` on it, every copy the caller passed in (here, the
client's object) runs ``_apply_update`` when the call returns.
"""

from __future__ import annotations

from tether import server


@server.portable_class("videos.Video")
class Video:
    def __init__(self, video_id: int, description: str | None = None) -> None:
        self.id = video_id
        self._description = description
        self.cap = server.Capability(["video", video_id])
        self.cap.set_update_handler(self._apply_update)

    def __serialize__(self, global_data: object) -> dict[str, object]:
        return {"id": self.id, "description": self._description, "cap": self.cap}

    def __deserialize__(self, data: dict[str, object], global_data: object) -> None:
        self.id = data["id"]
        self._description = data["description"]
        self.cap = data["cap"]
        self.cap.set_update_handler(self._apply_update)

    def _apply_update(self, update: dict[str, object]) -> None:
        if "description" in update:
            self._description = update["description"]

    @property
    def description(self) -> str:
        if self._description is None:  # not loaded yet: fetch it once, then cache it
            self._description = server.call("get_video_description", self.cap)
        return self._description

    def set_description(self, text: str) -> None:
        server.call("set_video_description", self.cap, text)

    def __repr__(self) -> str:
        return f"Video({self.id}, {self._description!r})"
