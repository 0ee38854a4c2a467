"""Static assets with content-hash cache busting, and the app page.

``static_url(path)`` gives ``/_/static/<path>?v=<hash>``. A request whose ``v`` is the
file's current hash may be cached for a year; any other revalidates with the hash as its
``ETag``. The hash is SHA-256 of the bytes, cut to 16 hex digits (64 bits): in the
standard library, hardware-accelerated here (about 1.3 GB/s on this machine, twice
BLAKE2b's 0.7 GB/s), and computed once per file anyway.

Serving builds on Starlette's ``StaticFiles`` (``If-None-Match``) and its ``FileResponse``
(Range, HEAD); paths are checked here (one spelling per file, never outside the folder).
Small files are hashed by reading them, so their bytes are kept
and sent from memory, which spares the thread hops of opening and reading a file per
request; a Range request still goes through ``FileResponse``.
"""

from __future__ import annotations

import hashlib
import html
import logging
import mimetypes
import os
import re
import stat
import threading
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from urllib.parse import parse_qsl, quote

import anyio.to_thread
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import FileResponse, Response
from starlette.staticfiles import NotModifiedResponse, StaticFiles

from tether.runtime.asgi import Receive, Scope, SendMessage, route_path

__all__ = ["STATIC_PREFIX", "AppPage", "Assets", "use_assets"]

log = logging.getLogger("tether")


STATIC_PREFIX = "/_/static/"
MISSING = "error-missing-file"
IS_DIRECTORY = "error-is-a-directory"
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
HASH_DIGITS = 16
IN_MEMORY_BYTES = 256 * 1024
"""Files up to this size are served from memory..."""
MEMORY_BUDGET = 64 * 1024 * 1024
"""...until this many bytes are held; bigger or later files are read from disk."""
ENCODINGS = (("br", ".br"), ("gzip", ".gz"))
"""Precompressed siblings, in order of preference."""
MAX_WARNED = 1000
"""Missing paths ``static_url`` logs (once each) before it stops logging them."""
PAGE_CACHE_CONTROL = "private, no-cache"
"""The app page: it may set the session cookie, so no shared cache may keep it."""
_CHUNK = 1024 * 1024


def content_hash(path: str) -> tuple[str, bytes | None]:
    """The file's hash, and its bytes when it is small enough to keep."""
    digest = hashlib.sha256()
    kept: list[bytes] = []
    size = 0
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
            if size <= IN_MEMORY_BYTES:
                kept.append(chunk)
    return digest.hexdigest()[:HASH_DIGITS], b"".join(kept) if size <= IN_MEMORY_BYTES else None


@dataclass(slots=True)
class Variant:
    """One representation of an asset: the file itself, or a precompressed sibling."""

    path: str
    stat: os.stat_result
    etag: str
    content: bytes | None = None


@dataclass(slots=True)
class Asset:
    """What is known of one file: its hash and representations."""

    hash: str
    plain: Variant
    encoded: dict[str, Variant] = field(default_factory=dict)
    media_type: str = "text/plain"

    def fresh(self, now: os.stat_result) -> bool:
        return _same_file(self.plain.stat, now)


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_size, a.st_mtime_ns, a.st_ctime_ns, a.st_ino) == (
        b.st_size,
        b.st_mtime_ns,
        b.st_ctime_ns,
        b.st_ino,
    )


def canonical(path: str) -> str | None:
    """The one spelling of a path inside the static folder (``css/app.css``: no empty or
    ``.`` parts, ``/`` separators), or None for one that may not be served: ``..``, a
    hidden name (``.git``), a NUL byte."""
    parts = [p for p in path.replace("\\", "/").split("/") if p and p != "."]
    if "\0" in path or any(p.startswith(".") for p in parts):
        return None
    return "/".join(parts)


class Assets:
    """The static folder of one app: hashes, URLs, and the ASGI app serving it."""

    def __init__(self, directory: str | Path | None, *, dev: bool = False) -> None:
        self.directory = os.path.realpath(directory) if directory is not None else None
        self.dev = dev
        self._assets: dict[str, Asset] = {}
        self._held = 0
        self._warned: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self.files = AssetFiles(self)

    def __repr__(self) -> str:
        return f"Assets({self.directory!r}, dev={self.dev})"

    # -- finding files ------------------------------------------------------------------

    def lookup(self, path: str) -> tuple[str, os.stat_result] | None:
        """The file or folder at ``path`` inside the static folder, or None.

        None for what does not exist, and for what would leave the folder: ``..``,
        absolute paths, symlinks pointing outside, hidden names (``.git``), NUL bytes.
        """
        key = canonical(path)
        if self.directory is None or key is None or path.startswith(("/", "\\")):
            return None
        full = os.path.realpath(os.path.join(self.directory, *key.split("/")))
        if full != self.directory and not full.startswith(self.directory + os.sep):
            return None
        try:
            return full, os.stat(full)
        except (OSError, ValueError):
            return None

    def cached(self, path: str, now: os.stat_result) -> Asset | None:
        """The asset known for ``path``, if neither the file nor its precompressed
        siblings changed since."""
        asset = self._assets.get(path)
        if asset is None or not asset.fresh(now):
            return None
        for variant in asset.encoded.values():
            try:
                if not _same_file(variant.stat, os.stat(variant.path)):
                    return None
            except OSError:
                return None
        return asset

    def asset(self, path: str, found: tuple[str, os.stat_result]) -> Asset:
        """The asset of a regular file, hashed again when it (or a sibling) changed."""
        full, now = found
        asset = self.cached(path, now)
        if asset is not None:
            return asset
        digest, content = content_hash(full)
        media_type = mimetypes.guess_type(full)[0] or "application/octet-stream"
        asset = Asset(digest, Variant(full, now, f'"{digest}"', content), media_type=media_type)
        for encoding, suffix in ENCODINGS:
            sibling = self.lookup(path + suffix)
            # a sibling older than the file was made from an older version: not served
            if (
                sibling is None
                or not stat.S_ISREG(sibling[1].st_mode)
                or sibling[1].st_mtime_ns < now.st_mtime_ns
            ):
                continue
            try:  # its own hash in the tag: a regenerated sibling never matches an old range
                sibling_digest, body = content_hash(sibling[0])
            except OSError:  # unreadable, or gone: the file is served without it
                continue
            etag = f'"{digest}-{encoding}-{sibling_digest[:8]}"'
            asset.encoded[encoding] = Variant(*sibling, etag, body)
        with self._lock:
            old = self._assets.get(path)
            for variant in (old.plain, *old.encoded.values()) if old is not None else ():
                self._held -= len(variant.content or b"")  # replaced: no longer held
            for variant in (asset.plain, *asset.encoded.values()):
                if variant.content is not None:
                    if self._held + len(variant.content) > MEMORY_BUDGET:
                        variant.content = None  # over budget: read from disk
                    else:
                        self._held += len(variant.content)
            self._assets[path] = asset
        return asset

    # -- static_url ---------------------------------------------------------------------

    def known_hash(self, path: str) -> str | None:
        """The hash this process last computed for ``path`` (None: none yet)."""
        asset = self._assets.get(path)
        return asset.hash if asset is not None else None

    def url(self, path: str) -> str:
        """``/_/static/<path>?v=<hash>``; never raises (see :func:`tether.static.static_url`).
        May read and hash the file: from ``async`` code, mind the loop for big files."""
        path = canonical(path) or path.lstrip("/")
        try:
            quoted = quote(path, errors="surrogateescape")
        except UnicodeEncodeError:  # not a name a file system gave
            return f"{STATIC_PREFIX}?v={self._marker(repr(path), MISSING, 'is not a file name')}"
        asset = None if self.dev else self._assets.get(path)
        if asset is not None:
            return f"{STATIC_PREFIX}{quoted}?v={asset.hash}"
        found = self.lookup(path)
        if found is None:
            version = self._marker(path, MISSING, "is missing from the static folder")
        elif not stat.S_ISREG(found[1].st_mode):
            version = self._marker(path, IS_DIRECTORY, "is a folder, not a file")
        else:
            try:
                version = self.asset(path, found).hash
            except OSError as exc:
                version = self._marker(path, MISSING, f"cannot be read ({exc})")
        return f"{STATIC_PREFIX}{quoted}?v={version}"

    def _marker(self, path: str, marker: str, why: str) -> str:
        """Logs a missing file or a folder once per path (the first MAX_WARNED paths:
        ``static_url`` of names from user input must not fill memory or the log)."""
        key = (path, marker)
        if key not in self._warned and len(self._warned) <= MAX_WARNED:
            self._warned.add(key)
            if len(self._warned) > MAX_WARNED:
                log.warning("static_url: more missing files than %d; no longer logged", MAX_WARNED)
            else:
                where = self.directory or "(no static folder)"
                log.warning("static_url(%r): %s %s", path, why, where)
        return marker


class AssetFiles(StaticFiles):
    """``/_/static/``: ``StaticFiles`` with content-hash ETags and versioned caching."""

    def __init__(self, assets: Assets) -> None:
        super().__init__(directory=assets.directory, check_dir=False)
        self.assets = assets

    async def __call__(self, scope: Scope, receive: Receive, send: SendMessage) -> None:
        try:
            response = await self.respond(scope)
        except HTTPException as exc:
            response = Response(exc.detail, exc.status_code, exc.headers, media_type="text/plain")
        await response(scope, receive, send)

    async def respond(self, scope: Scope) -> Response:
        """The answer to one request: on the loop for a known file (a ``stat``), in a
        thread when it must be read and hashed.

        Raises:
            HTTPException: 404 (nothing there, or outside the folder), 405 (not GET/HEAD).
        """
        if scope["method"] not in ("GET", "HEAD"):
            raise HTTPException(405, headers={"Allow": "GET, HEAD"})
        path = route_path(scope)[len(STATIC_PREFIX) :]
        if canonical(path) != path:  # one URL per file: one cache entry, one hash
            raise HTTPException(404)
        found = self.assets.lookup(path)
        if found is None or not stat.S_ISREG(found[1].st_mode):
            raise HTTPException(404)
        asset = self.assets.cached(path, found[1])
        if asset is None:
            try:
                asset = await anyio.to_thread.run_sync(self.assets.asset, path, found)
            except OSError:
                raise HTTPException(404) from None
        request = Headers(scope=scope)
        variant, encoding = asset.plain, None
        if asset.encoded:
            accepted = _accepted(request.get("accept-encoding", ""))
            for name, candidate in asset.encoded.items():
                if name in accepted:
                    variant, encoding = candidate, name
                    break
        headers = {
            "etag": variant.etag,
            "cache-control": IMMUTABLE if _version(scope) == asset.hash else REVALIDATE,
            "last-modified": formatdate(variant.stat.st_mtime, usegmt=True),
            "accept-ranges": "bytes",
            "x-content-type-options": "nosniff",
        }
        if asset.encoded:
            headers["vary"] = "Accept-Encoding"
        if encoding is not None:
            headers["content-encoding"] = encoding
        if self.is_not_modified(Headers(headers=headers), request):
            return NotModifiedResponse(Headers(headers=headers))
        if variant.content is not None and "range" not in request:
            return Response(variant.content, headers=headers, media_type=asset.media_type)
        return FileResponse(
            variant.path, headers=headers, media_type=asset.media_type, stat_result=variant.stat
        )


def _version(scope: Scope) -> str | None:
    query = scope.get("query_string")
    if not query:
        return None
    found = None
    for name, value in parse_qsl(query.decode("latin-1")):
        if name == "v":
            found = value
    return found


def _accepted(header: str) -> set[str]:
    """The codings an ``Accept-Encoding`` header accepts (``q=0`` refuses one)."""
    accepted = set()
    for item in header.split(","):
        name, _, params = item.strip().partition(";")
        quality = params.strip().removeprefix("q=").strip()
        if quality and quality.replace(".", "").strip("0") == "":
            continue
        accepted.add(name.strip().lower())
    return accepted


_PLACEHOLDER = re.compile(r"\{\{\s*static_url\(\s*(?:'([^'\\\n]*)'|\"([^\"\\\n]*)\")\s*\)\s*\}\}")


class AppPage:
    """``/``: the static folder's ``index.html``, its ``{{ static_url('path') }}``
    placeholders replaced by versioned URLs. Nothing else in it is evaluated."""

    def __init__(self, assets: Assets) -> None:
        self.assets = assets
        self._rendered: tuple[os.stat_result, dict[str, str], bytes, str] | None = None

    def render(self) -> tuple[bytes, str] | None:
        """The page and its ETag, or None when there is no ``index.html``. Rendered again
        when ``index.html`` changed, or the server hashed an asset it names anew."""
        found = self.assets.lookup("index.html")
        if found is None or not stat.S_ISREG(found[1].st_mode):
            return None
        cached = self._rendered
        if (
            cached is not None
            and not self.assets.dev
            and _same_file(cached[0], found[1])
            and all(self.assets.known_hash(p) in (h, None) for p, h in cached[1].items())
        ):
            return cached[2], cached[3]
        with open(found[0], encoding="utf-8", errors="replace") as file:
            template = file.read()
        used: dict[str, str] = {}

        def substitute(match: re.Match[str]) -> str:
            path = (match.group(1) or match.group(2) or "").lstrip("/")
            url = self.assets.url(path)
            used[path] = url.rpartition("?v=")[2]
            return html.escape(url)

        page = _PLACEHOLDER.sub(substitute, template).encode()
        etag = f'"{hashlib.sha256(page).hexdigest()[:HASH_DIGITS]}"'
        self._rendered = (found[1], used, page, etag)
        return page, etag

    async def __call__(self, scope: Scope, receive: Receive, send: SendMessage) -> None:
        if scope["method"] not in ("GET", "HEAD"):
            response = Response("Method Not Allowed", 405, {"allow": "GET, HEAD"})
        else:
            try:
                # reading index.html and hashing what it names: off the loop
                rendered = await anyio.to_thread.run_sync(self.render)
            except OSError as exc:
                log.error("cannot read the app page: %s", exc)
                rendered = None
            if rendered is None:
                response = Response(
                    "Not Found: this app has no static/index.html", 404, media_type="text/plain"
                )
            else:
                page, etag = rendered
                headers = {"etag": etag, "cache-control": PAGE_CACHE_CONTROL}
                if StaticFiles.is_not_modified(
                    self.assets.files, Headers(headers=headers), Headers(scope=scope)
                ):
                    response = NotModifiedResponse(Headers(headers=headers))
                else:
                    response = Response(page, headers=headers, media_type="text/html")
        await response(scope, receive, send)


_current: Assets | None = None
_current_lock = threading.Lock()


def use_assets(directory: str | Path | None, *, dev: bool = False) -> Assets:
    """The process's static folder for ``static_url`` (the newest app's); the same
    ``Assets`` again for the same folder and mode, so hashes are computed once."""
    global _current
    wanted = os.path.realpath(directory) if directory is not None else None
    with _current_lock:
        if _current is None or _current.directory != wanted or _current.dev != dev:
            _current = Assets(directory, dev=dev)
        return _current


def current_assets() -> Assets | None:
    return _current


_none: Assets | None = None


def no_assets() -> Assets:
    """Where ``static_url`` looks in a process with no static folder (every file missing,
    each warned about once)."""
    global _none
    if _none is None:
        _none = Assets(None)
    return _none
