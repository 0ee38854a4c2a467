"""Static assets at /_/static/ (content-hash cache busting) and the app page at /, against a
real server: static_url, caching headers, traversal, precompressed siblings, the CLI."""

from __future__ import annotations

import gzip
import hashlib
import logging
import mimetypes
import os
import re
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from email.utils import formatdate
from pathlib import Path

import httpx
import pytest

import tether.runtime.assets as assets_module
from tests.conftest import TIMEOUT
from tether import testing
from tether.client import Client
from tether.runtime.assets import IN_MEMORY_BYTES, Assets, use_assets
from tether.static import static_url

CSS = b"body { color: #123456; }\n" * 80  # 2 KiB
JS = b"console.log('tether');\n" * 90
SECRET = b"TOP-SECRET-c0ffee"
IMMUTABLE = "public, max-age=31536000, immutable"
STATIC_HEADERS = {
    "date",
    "server",
    "etag",
    "cache-control",
    "last-modified",
    "accept-ranges",
    "content-length",
    "content-type",
    "x-content-type-options",
}
COOKIE = re.compile(r"tether-session=[A-Za-z0-9_\-]+; Path=/; HttpOnly; SameSite=Lax")


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def sibling_tag(plain: bytes, encoding: str, sibling: bytes) -> str:
    """The ETag of a precompressed sibling: the file's hash, the coding, its own hash."""
    return f'"{digest(plain)}-{encoding}-{digest(sibling)[:8]}"'


def versioned(name: str, data: bytes) -> str:
    return f"/_/static/{name}?v={digest(data)}"


@pytest.fixture(autouse=True)
def _own_static_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    """``use_assets`` (run by ``create_app``) sets a process-wide folder: undone after each
    test."""
    monkeypatch.setattr(assets_module, "_current", None)


@pytest.fixture
def static(tmp_path: Path) -> Path:
    """tmp_path/static with css/app.css and js/app.js; tmp_path/secret.txt is outside."""
    folder = tmp_path / "static"
    (folder / "css").mkdir(parents=True)
    (folder / "js").mkdir()
    (folder / "css" / "app.css").write_bytes(CSS)
    (folder / "js" / "app.js").write_bytes(JS)
    (tmp_path / "secret.txt").write_bytes(SECRET)
    return folder


@contextmanager
def serving(folder: Path | None, *, dev: bool = False) -> Iterator[httpx.Client]:
    """A real server of ``folder`` and an HTTP client of it (keep-alive)."""
    static_dir = None if folder is None else str(folder)
    with (
        testing.serve(None, static_dir=static_dir, dev=dev) as url,
        httpx.Client(base_url=url, timeout=TIMEOUT) as client,
    ):
        yield client


def raw_get(client: httpx.Client, target: str, **headers: str) -> tuple[httpx.Response, bytes]:
    """GET ``target`` with exactly these ``Accept-Encoding`` etc., and the body as sent
    (httpx would decode a gzip body)."""
    request = client.build_request("GET", target)
    request.headers.pop("accept-encoding", None)
    request.headers.update(headers)
    response = client.send(request, stream=True)
    try:
        return response, b"".join(response.iter_raw())
    finally:
        response.close()


def raw_request(port: int, target: str) -> bytes:
    """Sends ``GET target`` as is on a plain socket (no client normalises the path) and
    returns the whole answer."""
    line = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    chunks = []
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(line.encode("latin-1"))
        for _ in range(10_000):  # bounded: an answer here is far below 10,000 reads
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def bump_mtime(path: Path, seconds: float = 10) -> None:
    info = path.stat()
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns + int(seconds * 1e9)))


# -- static_url -------------------------------------------------------------------------


def test_static_url_is_the_path_and_the_content_hash(static: Path) -> None:
    (static / "my file.css").write_bytes(b"spaced")
    assets = Assets(static)
    assert assets.url("css/app.css") == versioned("css/app.css", CSS)
    assert re.fullmatch(r"/_/static/css/app\.css\?v=[0-9a-f]{16}", assets.url("css/app.css"))
    assert assets.url("/css/app.css") == versioned("css/app.css", CSS)
    assert assets.url("my file.css") == versioned("my%20file.css", b"spaced")
    use_assets(static)
    assert static_url("css/app.css") == versioned("css/app.css", CSS)
    assert static_url("/js/app.js") == versioned("js/app.js", JS)


def test_a_missing_file_or_a_folder_is_marked_and_warned_once(
    static: Path, caplog: pytest.LogCaptureFixture
) -> None:
    use_assets(static)
    with caplog.at_level(logging.WARNING, logger="tether"):
        for _ in range(2):
            assert static_url("css/gone.css") == "/_/static/css/gone.css?v=error-missing-file"
            assert static_url("css") == "/_/static/css?v=error-is-a-directory"
    warnings = [r for r in caplog.records if r.name == "tether" and r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "css/gone.css" in warnings[0].getMessage()
    assert "'css'" in warnings[1].getMessage()


def test_static_url_never_raises_nor_reaches_outside_the_folder(static: Path) -> None:
    assets = Assets(static)
    for name in ("../secret.txt", "css/../../secret.txt", "a\0b.css", "x" * 5000, ".env"):
        assert assets.url(name).endswith("?v=error-missing-file"), name
    assert assets.url("").endswith("?v=error-is-a-directory")
    assert Assets(None).url("css/app.css") == "/_/static/css/app.css?v=error-missing-file"


def test_static_url_never_raises_even_for_an_undecodable_name(static: Path) -> None:
    assert Assets(static).url("\udcff.css") == "/_/static/%FF.css?v=error-missing-file"


def test_without_a_static_folder_the_warning_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="tether"):
        for _ in range(2):
            assert static_url("a.css") == "/_/static/a.css?v=error-missing-file"
    assert len([r for r in caplog.records if r.name == "tether"]) == 1


def test_without_dev_static_url_keeps_the_first_hash(static: Path) -> None:
    assets = Assets(static)
    first = assets.url("css/app.css")
    (static / "css" / "app.css").write_bytes(CSS + b"/* v2 */")
    assert assets.url("css/app.css") == first


def test_with_dev_a_changed_file_gets_a_new_hash(static: Path) -> None:
    assets = Assets(static, dev=True)
    path = static / "css" / "app.css"
    assert assets.url("css/app.css") == versioned("css/app.css", CSS)
    changed = CSS.replace(b"#123456", b"#654321")  # the same size: only the mtime tells
    path.write_bytes(changed)
    bump_mtime(path)
    assert assets.url("css/app.css") == versioned("css/app.css", changed)
    bigger = changed + b"/* more */"
    path.write_bytes(bigger)
    assert assets.url("css/app.css") == versioned("css/app.css", bigger)


# -- serving ----------------------------------------------------------------------------


def test_a_versioned_request_may_be_cached_for_a_year(static: Path) -> None:
    with serving(static) as client:
        response = client.get(versioned("css/app.css", CSS))
    assert response.status_code == 200
    assert response.content == CSS
    assert set(response.headers.keys()) == STATIC_HEADERS  # no set-cookie, no vary
    assert response.headers["cache-control"] == IMMUTABLE
    assert response.headers["etag"] == f'"{digest(CSS)}"'
    assert response.headers["content-type"] == "text/css; charset=utf-8"
    assert response.headers["content-length"] == str(len(CSS))
    assert response.headers["accept-ranges"] == "bytes"
    mtime = (static / "css" / "app.css").stat().st_mtime
    assert response.headers["last-modified"] == formatdate(mtime, usegmt=True)


def test_an_unversioned_or_stale_request_revalidates(static: Path) -> None:
    with serving(static) as client:
        for target in ("/_/static/css/app.css", "/_/static/css/app.css?v=0123456789abcdef"):
            response = client.get(target)
            assert response.status_code == 200
            assert response.content == CSS
            assert response.headers["cache-control"] == "no-cache"
            assert response.headers["etag"] == f'"{digest(CSS)}"'
            assert set(response.headers.keys()) == STATIC_HEADERS


def test_a_matching_if_none_match_gives_304_without_a_body(static: Path) -> None:
    etag = f'"{digest(CSS)}"'
    with serving(static) as client:
        for sent in (etag, f"W/{etag}", f'"other", {etag}'):
            response = client.get(versioned("css/app.css", CSS), headers={"if-none-match": sent})
            assert response.status_code == 304
            assert response.content == b""
            assert response.headers["etag"] == etag
            assert response.headers["cache-control"] == IMMUTABLE
            assert "set-cookie" not in response.headers
        response = client.get("/_/static/css/app.css", headers={"if-none-match": '"other"'})
        assert response.status_code == 200
        assert response.content == CSS


def test_head_gives_the_length_and_no_body(static: Path) -> None:
    with serving(static) as client:
        response = client.head(versioned("css/app.css", CSS))
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["content-length"] == str(len(CSS))
    assert response.headers["etag"] == f'"{digest(CSS)}"'
    assert "set-cookie" not in response.headers


def test_a_range_request_gets_those_bytes(static: Path) -> None:
    with serving(static) as client:
        response = client.get("/_/static/css/app.css", headers={"range": "bytes=0-3"})
    assert response.status_code == 206
    assert response.content == CSS[:4]
    assert response.headers["content-range"] == f"bytes 0-3/{len(CSS)}"
    assert response.headers["etag"] == f'"{digest(CSS)}"'
    assert "set-cookie" not in response.headers


def test_a_big_file_is_served_from_disk_the_same_way(static: Path) -> None:
    big = os.urandom(IN_MEMORY_BYTES + 50_000)
    (static / "big.bin").write_bytes(big)
    etag = f'"{digest(big)}"'
    with serving(static) as client:
        response = client.get(versioned("big.bin", big))
        assert response.status_code == 200
        assert response.content == big
        assert response.headers["etag"] == etag
        assert response.headers["cache-control"] == IMMUTABLE
        assert response.headers["content-length"] == str(len(big))
        assert "set-cookie" not in response.headers
        ranged = client.get("/_/static/big.bin", headers={"range": "bytes=0-3"})
        assert ranged.status_code == 206
        assert ranged.content == big[:4]
        assert ranged.headers["content-range"] == f"bytes 0-3/{len(big)}"
        cached = client.get("/_/static/big.bin", headers={"if-none-match": etag})
        assert cached.status_code == 304
        assert cached.content == b""
        assert cached.headers["etag"] == etag
        head = client.head("/_/static/big.bin")
        assert head.status_code == 200
        assert head.content == b""
        assert head.headers["content-length"] == str(len(big))


def test_other_methods_get_405_and_missing_files_404(static: Path) -> None:
    with serving(static) as client:
        for method in ("POST", "PUT", "DELETE"):
            response = client.request(method, "/_/static/css/app.css")
            assert response.status_code == 405
            assert response.headers["allow"] == "GET, HEAD"
            assert "set-cookie" not in response.headers
        for target in ("/_/static/css/gone.css", "/_/static/css", "/_/static/", "/_/static/css/"):
            response = client.get(target)
            assert response.status_code == 404, target
            assert "set-cookie" not in response.headers


def test_a_changed_file_is_served_with_its_new_bytes_without_dev(static: Path) -> None:
    path = static / "css" / "app.css"
    changed = CSS + b"/* v2 */"
    with serving(static) as client:
        assert client.get("/_/static/css/app.css").content == CSS
        path.write_bytes(changed)
        response = client.get(versioned("css/app.css", CSS))  # the page's old URL
        assert response.status_code == 200
        assert response.content == changed
        assert response.headers["etag"] == f'"{digest(changed)}"'
        assert response.headers["cache-control"] == "no-cache"  # stale v: never immutable
        assert response.headers["content-length"] == str(len(changed))
        response = client.get(versioned("css/app.css", changed))
        assert response.headers["cache-control"] == IMMUTABLE


def test_a_file_created_after_a_404_is_served(static: Path) -> None:
    with serving(static) as client:
        assert client.get("/_/static/late.css").status_code == 404
        (static / "late.css").write_bytes(b"late")
        url = Assets(static).url("late.css")
        assert url == versioned("late.css", b"late")
        response = client.get(url)
        assert response.status_code == 200
        assert response.content == b"late"


def test_odd_names_round_trip_from_static_url_to_the_file(static: Path) -> None:
    name = "é #1 50%?.css"
    (static / name).write_bytes(b"odd")
    with serving(static) as client:
        url = static_url(name)
        assert url == versioned("%C3%A9%20%231%2050%25%3F.css", b"odd")
        response = client.get(url)
    assert response.status_code == 200
    assert response.content == b"odd"
    assert response.headers["cache-control"] == IMMUTABLE


# -- traversal --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def outside(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The port of a server of root/static, with root/secret.txt outside it, a symlink to
    it and to root itself inside, and a hidden static/.env."""
    root = tmp_path_factory.mktemp("outside")
    (root / "secret.txt").write_bytes(SECRET)
    folder = root / "static"
    folder.mkdir()
    (folder / "ok.txt").write_bytes(b"fine")
    (folder / ".env").write_bytes(SECRET)
    os.symlink(root / "secret.txt", folder / "link.txt")
    os.symlink(root, folder / "up")
    with testing.serve(None, static_dir=str(folder)) as url:
        yield int(url.rsplit(":", 1)[1])


@pytest.mark.parametrize(
    "target",
    [
        "/_/static/../secret.txt",
        "/_/static/%2e%2e/secret.txt",
        "/_/static/%2E%2E%2Fsecret.txt",
        "/_/static/..%2fsecret.txt",
        "/_/static/..%5csecret.txt",
        "/_/static/css/../../secret.txt",
        "/_/static//etc/passwd",
        "/_/static/%2Fetc%2Fpasswd",
        "/_/static/link.txt",
        "/_/static/up/secret.txt",
        "/_/static/.env",
        "/_/static/%2eenv",
        "/_/static/ok.txt%00",
        "/_/static/ok.txt%00.png",
    ],
)
def test_nothing_outside_the_folder_nor_hidden_is_served(outside: int, target: str) -> None:
    answer = raw_request(outside, target)
    status = int(answer.split(b" ", 2)[1])
    assert status in (400, 404), answer[:200]
    assert SECRET not in answer
    assert b"root:" not in answer
    assert b"set-cookie" not in answer.lower()


def test_the_folder_itself_is_served_next_to_the_traversals(outside: int) -> None:
    answer = raw_request(outside, "/_/static/ok.txt")
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert answer.endswith(b"\r\n\r\nfine")


def test_a_file_replaced_by_a_symlink_to_outside_is_not_served(static: Path) -> None:
    path = static / "css" / "app.css"
    with serving(static) as client:
        assert client.get("/_/static/css/app.css").content == CSS
        path.unlink()
        os.symlink(static.parent / "secret.txt", path)
        response = client.get("/_/static/css/app.css")
        assert SECRET not in response.content
        assert response.status_code == 404


# -- precompressed siblings -------------------------------------------------------------


@pytest.fixture
def compressed(static: Path) -> Path:
    """static/app.js with app.js.gz and app.js.br (any bytes: never decoded) beside it."""
    (static / "app.js").write_bytes(JS)
    (static / "app.js.gz").write_bytes(gzip.compress(JS))
    (static / "app.js.br").write_bytes(b"brotli bytes")
    for sibling in ("app.js.gz", "app.js.br"):
        bump_mtime(static / sibling, 1)
    return static


@pytest.mark.parametrize(
    ("accept", "encoding"),
    [
        ("br, gzip", "br"),
        ("gzip, br", "br"),
        ("gzip", "gzip"),
        ("br;q=0, gzip", "gzip"),
        ("br; q=0.0, gzip;q=0.5", "gzip"),
        ("gzip;q=0, br;q=0", None),
        ("deflate", None),
        (None, None),
    ],
)
def test_a_precompressed_sibling_is_sent_when_accepted(
    compressed: Path, accept: str | None, encoding: str | None
) -> None:
    suffix = {"br": ".br", "gzip": ".gz", None: ""}[encoding]
    expected = (compressed / f"app.js{suffix}").read_bytes()
    headers = {} if accept is None else {"accept-encoding": accept}
    with serving(compressed) as client:
        response, body = raw_get(client, versioned("app.js", JS), **headers)
    assert response.status_code == 200
    assert body == expected
    assert response.headers["vary"] == "Accept-Encoding"
    assert response.headers.get("content-encoding") == encoding
    tag = f'"{digest(JS)}"' if encoding is None else sibling_tag(JS, encoding, expected)
    assert response.headers["etag"] == tag
    assert response.headers["cache-control"] == IMMUTABLE
    assert response.headers["content-type"].startswith(str(mimetypes.guess_type("app.js")[0]))
    assert response.headers["content-length"] == str(len(expected))


def test_a_sibling_older_than_the_file_is_ignored(compressed: Path) -> None:
    bump_mtime(compressed / "app.js.br", -100)
    with serving(compressed) as client:
        response, body = raw_get(client, "/_/static/app.js", **{"accept-encoding": "br"})
        assert response.headers.get("content-encoding") is None
        assert body == JS
        response, body = raw_get(client, "/_/static/app.js", **{"accept-encoding": "br, gzip"})
        assert response.headers["content-encoding"] == "gzip"
        assert body == (compressed / "app.js.gz").read_bytes()
        tag = sibling_tag(JS, "gzip", (compressed / "app.js.gz").read_bytes())
        response, body = raw_get(
            client, "/_/static/app.js", **{"accept-encoding": "gzip", "if-none-match": tag}
        )
        assert response.status_code == 304
        assert body == b""
        assert response.headers["vary"] == "Accept-Encoding"


def test_a_regenerated_or_deleted_big_sibling_is_served_correctly(static: Path) -> None:
    big = os.urandom(IN_MEMORY_BYTES + 50_000)  # random: its gzip is as big, kept on disk
    (static / "big.js").write_bytes(big)
    (static / "big.js.gz").write_bytes(gzip.compress(big))
    bump_mtime(static / "big.js.gz", 1)
    with serving(static) as client:
        response, body = raw_get(client, "/_/static/big.js", **{"accept-encoding": "gzip"})
        assert response.headers["content-encoding"] == "gzip"
        regenerated = gzip.compress(big, compresslevel=1) + gzip.compress(b"")
        (static / "big.js.gz").write_bytes(regenerated)
        bump_mtime(static / "big.js.gz", 2)
        response, body = raw_get(client, "/_/static/big.js", **{"accept-encoding": "gzip"})
        assert response.status_code == 200
        assert body == regenerated
        (static / "big.js.gz").unlink()
        response, body = raw_get(client, "/_/static/big.js", **{"accept-encoding": "gzip"})
        assert response.status_code == 200
        assert body == big


# -- the app page -----------------------------------------------------------------------

INDEX = """<!doctype html>
<link rel="stylesheet" href="{{ static_url('css/app.css') }}">
<script src="{{static_url("js/app.js")}}"></script>
<p>{{ other }}</p>
<p>{{ static_url('x') + evil }}</p>
"""


def test_the_app_page_fills_in_static_url_and_nothing_else(static: Path) -> None:
    (static / "index.html").write_text(INDEX)
    expected = (
        INDEX.replace("{{ static_url('css/app.css') }}", versioned("css/app.css", CSS))
        .replace('{{static_url("js/app.js")}}', versioned("js/app.js", JS))
        .encode()
    )
    with serving(static) as client:
        response = client.get("/")
        assert response.status_code == 200
        assert response.content == expected
        assert b"{{ other }}" in response.content
        assert b"{{ static_url('x') + evil }}" in response.content
        assert response.headers["content-type"] == "text/html; charset=utf-8"
        assert response.headers["cache-control"] == "private, no-cache"  # it sets a cookie
        etag = response.headers["etag"]
        assert re.fullmatch(r'"[0-9a-f]{16}"', etag)
        assert COOKIE.fullmatch(response.headers["set-cookie"])
        again = client.get("/")  # the client sends the cookie back: none is set
        assert again.content == expected
        assert "set-cookie" not in again.headers
        cached = client.get("/", headers={"if-none-match": etag})
        assert cached.status_code == 304
        assert cached.content == b""
        assert cached.headers["etag"] == etag
        assert cached.headers["cache-control"] == "private, no-cache"
        head = client.head("/")
        assert head.status_code == 200
        assert head.content == b""
        assert head.headers["content-length"] == str(len(expected))
        post = client.post("/")
        assert post.status_code == 405
        assert post.headers["allow"] == "GET, HEAD"


def test_with_dev_the_app_page_follows_a_changed_asset(static: Path) -> None:
    (static / "index.html").write_text("{{ static_url('css/app.css') }}")
    changed = CSS + b"/* v2 */"
    with serving(static, dev=True) as client:
        assert client.get("/").text == versioned("css/app.css", CSS)
        (static / "css" / "app.css").write_bytes(changed)
        assert client.get("/").text == versioned("css/app.css", changed)


def test_without_index_html_the_page_is_404(static: Path) -> None:
    with serving(static) as client:
        response = client.get("/")
    assert response.status_code == 404
    assert "index.html" in response.text


def test_without_a_static_folder_nothing_is_served(tmp_path: Path) -> None:
    for folder in (None, tmp_path / "absent"):
        with serving(folder) as client:
            assert client.get("/_/static/x").status_code == 404
            assert client.get("/_/static/index.html").status_code == 404
            response = client.get("/")
            assert response.status_code == 404
            assert "index.html" in response.text


# -- tether serve -----------------------------------------------------------------------

APP = """
from tether import server
from tether.static import static_url

URL = static_url("a.css")


@server.callable
def asset_url() -> str:
    return URL
"""


def make_app(tmp_path: Path, css: bytes) -> Path:
    folder = tmp_path / "app"
    (folder / "static").mkdir(parents=True)
    (folder / "app.py").write_text(APP)
    (folder / "static" / "a.css").write_bytes(css)
    return folder


def check_served_app(port: int, css: bytes) -> None:
    with Client(f"ws://127.0.0.1:{port}/_/ws") as client:
        url = client.call("asset_url")
    assert url == versioned("a.css", css)
    response = httpx.get(f"http://127.0.0.1:{port}{url}", timeout=TIMEOUT)
    assert response.status_code == 200
    assert response.content == css
    assert response.headers["cache-control"] == IMMUTABLE


def test_tether_serve_hashes_static_beside_the_app_at_import(
    tether_serve: Callable[..., tuple[object, int]], tmp_path: Path
) -> None:
    folder = make_app(tmp_path, b"a { color: red; }")
    _, port = tether_serve(str(folder))
    check_served_app(port, b"a { color: red; }")


def test_tether_serve_static_option_serves_another_folder(
    tether_serve: Callable[..., tuple[object, int]], tmp_path: Path
) -> None:
    folder = make_app(tmp_path, b"a { color: red; }")
    other = tmp_path / "other"
    other.mkdir()
    (other / "a.css").write_bytes(b"a { color: blue; }")
    _, port = tether_serve(str(folder), "--static", str(other))
    check_served_app(port, b"a { color: blue; }")


def test_testing_serve_gives_static_url_the_folder_while_importing(
    static: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))  # load_app puts the folder first
    module = "tether_assets_import_probe"
    (static.parent / f"{module}.py").write_text(
        "from tether.static import static_url\nURL = static_url('css/app.css')\n"
    )
    try:
        with testing.serve(str(static.parent / f"{module}.py"), static_dir=str(static)):
            imported = sys.modules[module].URL
        assert imported == versioned("css/app.css", CSS)
    finally:
        sys.modules.pop(module, None)


# -- one spelling per file, bounded caches ----------------------------------------------


@pytest.mark.parametrize(
    "spelling", ["css//app.css", "css/app.css/", "/css/app.css", "css\\app.css"]
)
def test_only_the_canonical_spelling_of_a_path_is_served(static: Path, spelling: str) -> None:
    # Each spelling would be one more cache entry and one more hash of the file.
    with serving(static) as client:
        assert client.get("/_/static/css/app.css").status_code == 200
        assert client.get("/_/static/" + spelling).status_code == 404


def test_static_url_gives_the_canonical_spelling(static: Path) -> None:
    assets = Assets(static)
    assert assets.url("css//app.css") == versioned("css/app.css", CSS)
    assert assets.url("./css/app.css") == versioned("css/app.css", CSS)


def test_an_unreadable_sibling_is_skipped(static: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (static / "js" / "app.js.gz").write_bytes(gzip.compress(JS))
    real = assets_module.content_hash

    def failing(path: str) -> tuple[str, bytes | None]:
        if path.endswith(".gz"):
            raise PermissionError(f"cannot read {path}")
        return real(path)

    monkeypatch.setattr(assets_module, "content_hash", failing)
    assets = Assets(static)
    found = assets.lookup("js/app.js")
    assert found is not None
    for n in range(3):  # served without it, every time, and nothing leaks from the budget
        os.utime(found[0], ns=(n * 10**9, n * 10**9))  # changed: hashed again
        asset = assets.asset("js/app.js", (found[0], os.stat(found[0])))
        assert asset.hash == digest(JS)
        assert asset.encoded == {}
        assert assets._held == len(JS)


def test_missing_files_are_logged_up_to_a_bound(
    static: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assets = Assets(static)
    with caplog.at_level(logging.WARNING, logger="tether"):
        for n in range(assets_module.MAX_WARNED + 50):
            assert assets.url(f"user-input-{n}.css").endswith("?v=error-missing-file")
    logged = [r.getMessage() for r in caplog.records if r.name == "tether"]
    assert len(logged) == assets_module.MAX_WARNED + 1
    assert "no longer logged" in logged[-1]
    assert len(assets._warned) == assets_module.MAX_WARNED + 1
    assert assets._assets == {}  # only files that exist are kept


# -- mounted under a prefix -------------------------------------------------------------


async def test_mounted_under_a_prefix(static: Path) -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from tether import create_app

    tether_app = create_app(static_dir=str(static))
    host = Starlette(routes=[Mount("/app", app=tether_app)])
    transport = httpx.ASGITransport(app=host)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            asset = await client.get("/app" + versioned("css/app.css", CSS))
            assert (asset.status_code, asset.content) == (200, CSS)
            assert (await client.get("/app/")).status_code == 404  # no index.html: the page
            assert (await client.get("/app/_/api/none")).text == "No matching API endpoint"
    finally:
        await tether_app.dispatcher.close()
