"""A canary: the wire names ``tests.apps.canary.Evil``; this module must never be imported."""


class Evil:
    def __init__(self) -> None:
        raise AssertionError("Evil was built")
