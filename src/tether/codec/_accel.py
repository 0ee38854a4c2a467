"""The codec's optional C speedups (``_speedups.c``); None when they were not built.

They do what two Python loops of the encoder and decoder do, for the common case of
long lists of plain portable objects; the Python versions stay, and tests run both.
``TETHER_PURE_PYTHON=1`` in the environment turns them off.
"""

from __future__ import annotations

import os
from collections.abc import Callable

__all__ = ["build_dicts", "flat_dicts"]

FlatDicts = Callable[[object, type, int], "list[dict[str, object]] | None"]
BuildDicts = Callable[[list[object], type, int], int]

flat_dicts: FlatDicts | None = None
build_dicts: BuildDicts | None = None

if not os.environ.get("TETHER_PURE_PYTHON"):
    try:
        from tether.codec import _speedups
    except ImportError:  # pragma: no cover - built without a C compiler
        pass
    else:
        flat_dicts = _speedups.flat_dicts
        build_dicts = _speedups.build_dicts
