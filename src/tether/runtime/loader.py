"""Imports the user's app: a module name, a package, a ``.py`` file or a folder."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

__all__ = ["load_app"]


def load_app(target: str) -> ModuleType:
    """Imports ``target`` so that its decorators register functions and classes.

    - ``path/to/app.py``: its folder goes first on ``sys.path`` and it is imported as the
      top-level module ``app``, so a ``shared.py`` beside it is the module ``shared`` for
      the server and for client scripts run from that folder.
    - ``path/to/folder``: the same with ``folder/app.py``; a folder without ``app.py``
      but with ``__init__.py`` is imported as a package, its parent first on ``sys.path``.
    - anything else: a module name, imported as is.

    Raises:
        FileNotFoundError: a path that does not exist or holds no app.
    """
    path = Path(target)
    if target.endswith(".py") or path.is_file():
        if not path.is_file():
            raise FileNotFoundError(f"no app file {target!r}")
        return _import_from(path.resolve().parent, path.stem)
    if path.is_dir():
        if (path / "app.py").is_file():
            return _import_from(path.resolve(), "app")
        if (path / "__init__.py").is_file():
            return _import_from(path.resolve().parent, path.resolve().name)
        raise FileNotFoundError(f"folder {target!r} has neither app.py nor __init__.py")
    return importlib.import_module(target)


def _import_from(folder: Path, name: str) -> ModuleType:
    entry = str(folder)
    if entry in sys.path:
        sys.path.remove(entry)
    sys.path.insert(0, entry)
    module = sys.modules.get(name)
    if module is not None:
        origin = getattr(module, "__file__", None)
        if origin is not None and Path(origin).resolve().parent == folder:
            return module
        raise ImportError(f"a different module named {name!r} is already imported ({origin})")
    return importlib.import_module(name)
