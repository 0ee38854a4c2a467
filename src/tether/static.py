"""``tether.static``: cache-busted URLs for the app's static files (API.md §3)."""

from __future__ import annotations

__all__ = ["static_url"]


def static_url(path: str) -> str:
    """``/_/static/<path>?v=<content hash>`` for a file of the app's static folder.

    Browsers may keep the answer for a year: a new version of the file has a new hash,
    hence a new URL. The hash is computed once per file (again when the file changes,
    with ``--dev``). Never raises: a missing file gives ``?v=error-missing-file``, a
    folder ``?v=error-is-a-directory``, each logged once as a warning.
    """
    from tether.runtime.assets import current_assets, no_assets

    return (current_assets() or no_assets()).url(path)
