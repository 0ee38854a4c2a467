"""The videos server: ``tether serve examples/videos``.

Capabilities prove the caller may touch a video; ``send_update`` brings the caller's
objects up to date when the call returns, and pushes at once to subscribed clients.
"""

from __future__ import annotations

from shared import Video

from tether import server

DESCRIPTIONS = {7: "Charlie Bit My Finger", 8: "Dramatic Chipmunk"}


@server.callable
def get_video(video_id: int, with_description: bool = True) -> Video:
    """The video, with its description or (``with_description=False``) without."""
    if video_id not in DESCRIPTIONS:
        raise KeyError(f"no video {video_id}")
    return Video(video_id, DESCRIPTIONS[video_id] if with_description else None)


@server.callable
def get_video_description(cap: server.Capability) -> str:
    _, video_id = server.unwrap_capability(cap, ["video", server.Capability.ANY])
    return DESCRIPTIONS[video_id]


@server.callable
def set_video_description(cap: server.Capability, text: str) -> None:
    """Only a holder of the video's capability gets here; the update reaches it back."""
    _, video_id = server.unwrap_capability(cap, ["video", server.Capability.ANY])
    DESCRIPTIONS[video_id] = text
    cap.send_update({"description": text})


@server.callable
def reset_description(video: Video) -> None:
    video.set_description("© 2000 Anvil Records")  # a nested server.call
