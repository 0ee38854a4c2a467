"""A canary: the wire names ``tests.codec.canary_module.Evil``; this module must never load.

Importing it leaves a mark in the environment and then fails, so a test can tell that a
decoder imported it even if the import error was swallowed.
"""

import os

os.environ["TETHER_CODEC_CANARY_IMPORTED"] = "1"


class Evil:
    def __init__(self) -> None:
        raise AssertionError("Evil was built")


raise AssertionError("tests.codec.canary_module was imported because the wire named it")
