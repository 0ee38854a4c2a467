"""HTTP endpoints (``@server.http_endpoint``) served by a real server, called over HTTP."""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Callable, Iterator
from http.client import HTTPConnection
from typing import Any

import httpx
import pytest

import tests.apps.endpoints as app
from tests.conftest import TIMEOUT
from tether import server, testing
from tether.http import EndpointRegistry

API = "/_/api"
FAILED = "An exception was raised. Check the application logs for details."
CHALLENGE = 'Basic realm="Tether API", charset="UTF-8"'
TEXT = "text/plain; charset=utf-8"
SPECIAL_ORIGIN = "https://app.example.com"
LIMIT = 1000
COOKIE = re.compile(r"tether-session=([A-Za-z0-9_-]+); Path=/; HttpOnly; SameSite=Lax")
EVIL = "http://evil.example"

Api = Callable[..., httpx.Response]
"""``api(method, path, **httpx_options)``: one request to ``/_/api<path>``."""


# -- servers and clients ----------------------------------------------------------------


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=TIMEOUT) as client:
        yield client


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    """The server with the default options."""
    with testing.serve("tests.apps.endpoints") as served:
        yield str(served)


@pytest.fixture(scope="module")
def special_url() -> Iterator[str]:
    """A server with a configured origin, a small body limit, dev mode and a proxy."""
    with testing.serve(
        "tests.apps.endpoints",
        origin=SPECIAL_ORIGIN,
        max_request_bytes=LIMIT,
        dev=True,
        trusted_proxies=["127.0.0.1"],
    ) as served:
        yield str(served)


def _api(client: httpx.Client, origin: str) -> Api:
    def request(method: str, path: str, **options: Any) -> httpx.Response:
        client.cookies.clear()  # cookies are only ever sent explicitly, in a header
        return client.request(method, origin + API + path, **options)

    return request


@pytest.fixture
def api(client: httpx.Client, url: str) -> Api:
    return _api(client, url)


@pytest.fixture
def special_api(client: httpx.Client, special_url: str) -> Api:
    return _api(client, special_url)


@pytest.fixture
def authenticator() -> Iterator[None]:
    server.set_user_authenticator(app.check_user)
    try:
        yield
    finally:
        server.set_user_authenticator(None)


@pytest.fixture
def no_authenticator() -> Iterator[None]:
    server.set_user_authenticator(None)
    try:
        yield
    finally:
        server.set_user_authenticator(None)


def basic(username: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"authorization": f"Basic {token}"}


def new_cookie(response: httpx.Response) -> str:
    """The one ``Set-Cookie`` of ``response`` (checked exactly), as a ``Cookie`` header."""
    cookies = response.headers.get_list("set-cookie")
    assert len(cookies) == 1, cookies
    assert COOKIE.fullmatch(cookies[0]), cookies[0]
    return cookies[0].partition(";")[0]


def browser_session(api: Api) -> str:
    """A browser's session cookie, its count at 1."""
    response = api("GET", "/t/count")
    assert response.json() == 1
    return new_cookie(response)


# -- routing and parameters -------------------------------------------------------------


def test_path_parameters_are_one_decoded_segment_each(api: Api) -> None:
    response = api("GET", "/t/echo/a%2Fb/c%20d")
    assert response.status_code == 200
    assert response.json() == {"a": "a/b", "b": "c d", "path": "/t/echo/a/b/c d"}
    assert api("GET", "/t/echo/a/b/c").status_code == 404
    assert api("GET", "/t/echo/a").status_code == 404


def test_a_parameter_may_be_part_of_a_segment(api: Api) -> None:
    response = api("GET", "/t/files/report.v2.txt")
    assert (response.status_code, response.text) == (200, "report.v2")
    assert api("GET", "/t/files/a%2Fb.txt").text == "a/b"
    assert api("GET", "/t/files/report.csv").status_code == 404
    assert api("GET", "/t/files/.txt").status_code == 404  # a parameter is never empty


def test_a_literal_path_wins_over_a_pattern(api: Api) -> None:
    assert api("GET", "/t/users/me").text == "literal"
    assert api("GET", "/t/users/7").text == "pattern 7"


def test_form_then_query_then_path_parameters_later_wins(api: Api) -> None:
    response = api(
        "POST",
        "/t/params/path?x=query&y=query",
        data={"x": "form", "y": "form", "z": "form"},
    )
    assert response.status_code == 200
    assert response.json() == {"x": "path", "y": "query", "z": "form"}


def test_multipart_fields_and_files(api: Api) -> None:
    response = api(
        "POST",
        "/t/params/p?q=1",
        data={"note": "hello"},
        files={"doc": ("report.csv", b"a,b\n1,2", "text/csv")},
    )
    assert response.status_code == 200
    assert response.json() == {
        "x": "p",
        "q": "1",
        "note": "hello",
        "doc": {
            "media": True,
            "name": "report.csv",
            "content_type": "text/csv",
            "bytes": "a,b\n1,2",
        },
    }


def test_unexpected_or_missing_parameters_are_a_400(api: Api) -> None:
    response = api("GET", "/t/strict?q=1&extra=2")
    assert response.status_code == 400
    assert response.headers["content-type"] == TEXT
    assert response.text.startswith("bad parameters for /t/strict: ")
    assert "extra" in response.text
    missing = api("GET", "/t/strict")
    assert missing.status_code == 400
    assert missing.text.startswith("bad parameters for /t/strict: ")
    assert api("GET", "/t/strict?q=ok").text == "ok"
    assert api("GET", "/t/strict?q=").status_code == 200  # a blank value is a value


def test_an_unknown_path_is_a_404(api: Api) -> None:
    for method in ("GET", "POST", "DELETE"):
        response = api(method, "/t/no-such-endpoint")
        assert response.status_code == 404
        assert response.headers["content-type"] == TEXT
        assert response.text == "No matching API endpoint"
    assert api("GET", "").status_code == 404


# -- server.request ---------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/t/request", "/t/request-async"])
def test_the_request_of_a_get(api: Api, url: str, path: str) -> None:
    response = api(
        "GET",
        path + "?a=1&a=2&b=%C3%A9",
        headers={"X-Custom-Thing": "Yes", "cookie": "flavour=mint; tether-session=abc; n=1"},
    )
    assert response.status_code == 200
    seen = response.json()
    assert seen["method"] == "GET"
    assert seen["path"] == path
    assert seen["headers"]["x-custom-thing"] == "Yes"
    assert seen["headers"]["cookie"] == "flavour=mint; n=1"
    assert all(name == name.lower() for name in seen["headers"])
    assert seen["query_params"] == {"a": "2", "b": "é"}
    assert seen["form_params"] == {}
    assert seen["body"] is None
    assert seen["body_json"] is None
    assert seen["origin"] == url
    assert seen["remote_address"] == "127.0.0.1"
    assert (seen["username"], seen["password"], seen["user"]) == (None, None, None)


def test_the_session_cookie_alone_leaves_no_cookie_header(api: Api) -> None:
    seen = api("GET", "/t/request", headers={"cookie": "tether-session=abc"}).json()
    assert "cookie" not in seen["headers"]


def test_the_request_body_and_form(api: Api) -> None:
    seen = api("POST", "/t/request", data={"f": "v", "g": "w"}).json()
    assert seen["form_params"] == {"f": "v", "g": "w"}
    assert seen["body"] == {
        "media": True,
        "name": None,
        "content_type": "application/x-www-form-urlencoded",
        "bytes": "f=v&g=w",
    }
    raw = api("PUT", "/t/request", content=b"\x00raw", headers={"content-type": "x/y"}).json()
    assert raw["method"] == "PUT"
    assert raw["body"]["content_type"] == "x/y"
    assert raw["body"]["bytes"] == "\x00raw"
    assert raw["body_json"] is None
    untyped = api("POST", "/t/request", content=b"abc").json()
    assert untyped["body"]["content_type"] == "application/octet-stream"


@pytest.mark.parametrize("content_type", ["application/json", "application/vnd.api+json"])
def test_a_json_body_is_parsed(api: Api, content_type: str) -> None:
    seen = api(
        "POST",
        "/t/request-async",
        content=b'{"a": [1, 2.5, null]}',
        headers={"content-type": content_type},
    ).json()
    assert seen["body_json"] == {"a": [1, 2.5, None]}
    assert seen["body"]["content_type"] == content_type


def test_an_invalid_json_body_is_a_400(api: Api) -> None:
    response = api(
        "POST", "/t/request", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.headers["content-type"] == TEXT
    assert response.text.startswith("the request body is not valid JSON")


def test_server_request_outside_an_endpoint_raises() -> None:
    with pytest.raises(
        RuntimeError, match=r"^server\.request is only available in http_endpoint calls$"
    ):
        server.request  # noqa: B018 - the attribute access is what is tested


def test_server_request_is_not_seen_by_a_nested_call(api: Api) -> None:
    response = api("GET", "/t/nested")
    assert response.status_code == 200
    assert response.text == "server.request is only available in http_endpoint calls"


# -- return values ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "content_type", "body"),
    [
        ("text", TEXT, "héllo".encode()),
        ("bytes", "application/octet-stream", b"\x00\x01\xff"),
        ("unnamed-media", "text/csv", b"a,b"),
        ("dict", "application/json", b'{"a":1,"b":[true,null]}'),
        ("list", "application/json", b'[1,"two"]'),
    ],
)
def test_what_an_endpoint_returns_sets_the_content_type(
    api: Api, kind: str, content_type: str, body: bytes
) -> None:
    response = api("GET", f"/t/return/{kind}")
    assert response.status_code == 200
    assert response.headers["content-type"] == content_type
    assert response.content == body
    assert "content-disposition" not in response.headers


def test_named_media_is_inline_with_its_filename(api: Api) -> None:
    png = api("GET", "/t/return/png")
    assert png.headers["content-type"] == "image/png"
    assert png.headers["content-disposition"] == 'inline; filename="x.png"'
    assert png.content == b"\x89PNG"
    pdf = api("GET", "/t/return/unicode-name")
    assert pdf.headers["content-type"] == "application/pdf"
    assert pdf.headers["content-disposition"] == (
        "inline; filename=\"r_sum_.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9.pdf"
    )


def test_none_is_an_empty_200(api: Api) -> None:
    response = api("GET", "/t/return/none")
    assert response.status_code == 200
    assert response.content == b""
    assert "content-type" not in response.headers


def test_http_response_sets_status_and_headers(api: Api) -> None:
    made = api("GET", "/t/return/custom")
    assert made.status_code == 201
    assert made.text == "made"
    assert made.headers["content-type"] == TEXT
    assert made.headers["x-custom"] == "yes"
    assert made.headers["location"] == "/t/thing/1"
    typed = api("GET", "/t/return/custom-type")
    assert typed.status_code == 202
    assert typed.headers.get_list("content-type") == ["application/vnd.test+json"]
    assert typed.json() == {"ok": True}
    empty = api("GET", "/t/return/custom-empty")
    assert (empty.status_code, empty.content) == (204, b"")


@pytest.mark.parametrize(
    ("kind", "logged"),
    [
        ("portable", "portable object"),
        ("injection", "must be one line of text"),
        ("bad-status", "status must be an int"),
        ("control-character", "must be one line of text"),
        ("bad-media-type", "must be one line of text"),
        ("content-length", "cannot set the header 'content-length'"),
        ("transfer-encoding", "cannot set the header 'transfer-encoding'"),
        ("broken-media", "the disk went away"),
    ],
)
def test_what_http_cannot_carry_is_a_500(
    api: Api, caplog: pytest.LogCaptureFixture, kind: str, logged: str
) -> None:
    with caplog.at_level(logging.ERROR, logger="tether"):
        response = api("GET", f"/t/return/{kind}")
    assert response.status_code == 500
    assert response.headers["content-type"] == TEXT
    assert response.text == FAILED
    assert "set-cookie" not in response.headers  # the injected line never went out
    assert "evil" not in str(response.headers)
    assert logged in caplog.text


def test_an_informational_status_is_a_500(url: str) -> None:
    with httpx.Client(timeout=TIMEOUT) as fresh:  # the connection may be broken
        response = fresh.get(url + API + "/t/return/informational-status")
    assert (response.status_code, response.text) == (500, FAILED)


def test_a_header_name_that_is_not_a_token_is_a_500(url: str) -> None:
    with httpx.Client(timeout=TIMEOUT) as fresh:  # the connection may be broken
        response = fresh.get(url + API + "/t/return/bad-header-name")
    assert (response.status_code, response.text) == (500, FAILED)


@pytest.mark.parametrize("kind", ["not-modified-with-body", "no-content-with-body"])
def test_a_bodiless_status_with_a_body_keeps_the_connection(url: str, kind: str) -> None:
    host, port = url.removeprefix("http://").split(":")
    connection = HTTPConnection(host, int(port), timeout=TIMEOUT)
    try:
        connection.request("GET", API + f"/t/return/{kind}")
        first = connection.getresponse()  # refused (logged): no body is sent with a 204/304
        assert (first.status, first.read()) == (500, FAILED.encode())
        connection.request("GET", API + "/t/return/text")  # the same connection
        second = connection.getresponse()
        assert (second.status, second.read()) == (200, "héllo".encode())
    finally:
        connection.close()


@pytest.mark.parametrize("path", ["/t/fail", "/t/fail-async"])
@pytest.mark.parametrize("dev", [False, True])
def test_an_exception_is_a_500_with_the_traceback_only_in_the_log(
    api: Api, special_api: Api, caplog: pytest.LogCaptureFixture, path: str, dev: bool
) -> None:
    with caplog.at_level(logging.ERROR, logger="tether"):
        response = (special_api if dev else api)("GET", path)
    assert response.status_code == 500
    assert response.headers["content-type"] == TEXT
    assert response.text == FAILED
    records = [r for r in caplog.records if r.exc_info and isinstance(r.exc_info[1], ValueError)]
    assert len(records) == 1
    assert f"http endpoint {path!r}" in records[0].getMessage()
    assert "the secret detail" in caplog.text
    assert "Traceback" in caplog.text


# -- methods, HEAD and CORS -------------------------------------------------------------


def test_a_method_not_listed_is_a_405_with_allow(api: Api) -> None:
    response = api("DELETE", "/t/echo/a/b")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, POST, HEAD"
    assert response.headers["content-type"] == TEXT
    assert api("PATCH", "/t/put-delete").headers["allow"] == "PUT, DELETE"
    assert api("POST", "/t/get-only").headers["allow"] == "GET, HEAD"
    assert api("GET", "/t/put-delete").status_code == 405
    assert api("OPTIONS", "/t/get-only").status_code == 405  # no CORS: no preflight
    assert api("DELETE", "/t/put-delete").text == "DELETE"


def test_head_answers_a_get_endpoint_without_a_body(api: Api) -> None:
    response = api("HEAD", "/t/get-only")
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["content-type"] == TEXT
    assert response.headers["content-length"] == str(len("body of GET"))


def test_no_cors_headers_without_enable_cors(api: Api) -> None:
    response = api("GET", "/t/get-only", headers={"origin": EVIL})
    assert not [name for name in response.headers if name.startswith("access-control-")]


def test_enable_cors_lets_any_origin_read(api: Api) -> None:
    for headers in ({}, {"origin": EVIL}):
        response = api("GET", "/t/cors", headers=headers)
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in response.headers
    refused = api("DELETE", "/t/cors", headers={"origin": EVIL})
    assert refused.status_code == 405
    assert refused.headers["access-control-allow-origin"] == "*"


def test_an_options_preflight(api: Api) -> None:
    response = api(
        "OPTIONS",
        "/t/cors",
        headers={
            "origin": EVIL,
            "access-control-request-method": "POST",
            "access-control-request-headers": "X-Token, Content-Type",
        },
    )
    assert response.status_code == 204
    assert response.content == b""
    assert response.headers["access-control-allow-methods"] == "GET, POST, HEAD"
    assert response.headers["access-control-allow-headers"] == "X-Token, Content-Type"
    assert response.headers["access-control-max-age"] == "600"
    assert response.headers["access-control-allow-origin"] == "*"
    bare = api("OPTIONS", "/t/cors", headers={"origin": EVIL})
    assert bare.status_code == 204
    assert "access-control-allow-headers" not in bare.headers


def test_cors_with_cross_site_session_names_the_origin(api: Api) -> None:
    preflight = api(
        "OPTIONS",
        "/t/cors-session",
        headers={"origin": EVIL, "access-control-request-method": "POST"},
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == EVIL
    assert preflight.headers["access-control-allow-credentials"] == "true"
    assert preflight.headers["vary"] == "Origin"
    cookie = browser_session(api)
    response = api("POST", "/t/cors-session", headers={"origin": EVIL, "cookie": cookie})
    assert response.json() == 2  # the browser's session
    assert response.headers["access-control-allow-origin"] == EVIL
    assert response.headers["access-control-allow-credentials"] == "true"
    assert "set-cookie" not in response.headers  # cross-site: never sets the cookie
    # Without an Origin, or with the "null" one of a sandboxed frame, no site is named;
    # the answer varies with Origin, so no cache hands one site's answer to another.
    for headers in ({"cookie": cookie}, {"cookie": cookie, "origin": "null"}):
        other = api("GET", "/t/cors-session", headers=headers)
        assert "access-control-allow-origin" not in other.headers
        assert "access-control-allow-credentials" not in other.headers
        assert other.headers["vary"] == "Origin"


# -- credentials ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer abc",
        "Basic",
        "Basic !!!not-base64",
        "Basic bm8tY29sb24=",  # "no-colon"
        "Basic //79",  # not UTF-8
    ],
)
def test_require_credentials_without_good_basic_is_a_401(
    api: Api, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"authorization": authorization}
    response = api("GET", "/t/basic", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == CHALLENGE
    assert response.headers["content-type"] == TEXT


def test_require_credentials_with_basic(api: Api) -> None:
    response = api("GET", "/t/basic", headers=basic("bob", "pa:ss wörd"))
    assert response.status_code == 200
    assert response.json() == {"username": "bob", "password": "pa:ss wörd"}
    seen = api("GET", "/t/request", headers=basic("bob", "x")).json()
    assert (seen["username"], seen["password"], seen["user"]) == ("bob", "x", None)


def test_authenticate_users_with_a_function(api: Api) -> None:
    assert api("GET", "/t/auth-fn").status_code == 401
    wrong = api("GET", "/t/auth-fn", headers=basic("alice", "wrong"))
    assert wrong.status_code == 401
    assert wrong.headers["www-authenticate"] == CHALLENGE
    assert api("GET", "/t/auth-fn", headers=basic("mallory", "wonderland")).status_code == 401
    right = api("GET", "/t/auth-fn", headers=basic("alice", "wonderland"))
    assert right.status_code == 200
    assert right.json() == {"name": "alice"}


@pytest.mark.usefixtures("authenticator")
def test_authenticate_users_with_the_user_authenticator(api: Api) -> None:
    wrong = api("GET", "/t/auth-global", headers=basic("alice", "nope"))
    assert wrong.status_code == 401
    assert wrong.headers["www-authenticate"] == CHALLENGE
    right = api("GET", "/t/auth-global", headers=basic("alice", "wonderland"))
    assert right.status_code == 200
    assert right.json() == {"name": "alice"}


@pytest.mark.usefixtures("no_authenticator")
def test_authenticate_users_true_without_an_authenticator_is_a_500(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="tether"):
        response = api("GET", "/t/auth-global", headers=basic("alice", "wonderland"))
    assert response.status_code == 500
    assert response.text == FAILED
    assert "set_user_authenticator" in caplog.text


# -- call context, origins, threads -----------------------------------------------------


@pytest.mark.parametrize("path", ["/t/context", "/t/context-async"])
def test_the_context_of_an_endpoint(api: Api, url: str, path: str) -> None:
    seen = api("GET", path).json()
    assert seen["type"] == "server_module"
    assert seen["client"] == "http"
    assert seen["ip"] == "127.0.0.1"
    assert seen["caller"] == "http"
    assert seen["trusted"] is False
    assert seen["app_origin"] == url
    assert seen["api_origin"] == url + "/_/api"


def test_the_configured_origin_wins(special_api: Api) -> None:
    seen = special_api("GET", "/t/context").json()
    assert seen["app_origin"] == SPECIAL_ORIGIN
    assert seen["api_origin"] == SPECIAL_ORIGIN + "/_/api"
    assert special_api("GET", "/t/request").json()["origin"] == SPECIAL_ORIGIN


def test_a_trusted_proxy_gives_the_client_address(special_api: Api) -> None:
    forwarded = {"x-forwarded-for": "203.0.113.9"}
    assert special_api("GET", "/t/request", headers=forwarded).json()["remote_address"] == (
        "203.0.113.9"
    )
    assert special_api("GET", "/t/context", headers=forwarded).json()["ip"] == "203.0.113.9"


def test_forwarded_headers_of_an_untrusted_peer_are_ignored(api: Api) -> None:
    forwarded = {"x-forwarded-for": "203.0.113.9", "x-forwarded-proto": "https"}
    response = api("GET", "/t/request", headers=forwarded)
    assert response.json()["remote_address"] == "127.0.0.1"
    assert "Secure" not in new_cookie(api("GET", "/t/count", headers=forwarded))


def test_sync_endpoints_run_in_the_pool_and_async_ones_on_the_loop(api: Api) -> None:
    sync = api("GET", "/t/context").json()
    asynchronous = api("GET", "/t/context-async").json()
    assert sync["on_loop"] is False
    assert asynchronous["on_loop"] is True
    assert sync["thread"] != asynchronous["thread"]


# -- request size -----------------------------------------------------------------------


def test_a_body_over_max_request_bytes_is_a_413(special_api: Api) -> None:
    assert special_api("POST", "/t/size", content=b"x" * LIMIT).text == str(LIMIT)
    response = special_api("POST", "/t/size", content=b"x" * (LIMIT + 1))
    assert response.status_code == 413
    assert response.headers["content-type"] == TEXT
    assert response.text == f"the request body is over {LIMIT} bytes"


def test_a_chunked_body_over_max_request_bytes_is_a_413(special_api: Api) -> None:
    chunks = iter([b"x" * 600, b"x" * 600])
    response = special_api("POST", "/t/size", content=chunks)
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert response.status_code == 413


# -- sessions ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/t/count", "/t/count-async"])
def test_a_session_is_made_on_use_and_continues_with_its_cookie(api: Api, path: str) -> None:
    first = api("GET", path)
    assert first.json() == 1
    cookie = new_cookie(first)
    second = api("GET", path, headers={"cookie": f"other=1; {cookie}"})
    assert second.json() == 2
    assert "set-cookie" not in second.headers


def test_an_async_endpoint_continues_the_browser_session(api: Api) -> None:
    cookie = browser_session(api)
    assert api("GET", "/t/count-async", headers={"cookie": cookie}).json() == 2
    assert api("GET", "/t/count", headers={"cookie": cookie}).json() == 3


def test_the_cookie_is_secure_behind_a_trusted_https_proxy(special_api: Api) -> None:
    response = special_api("GET", "/t/count", headers={"x-forwarded-proto": "https"})
    cookies = response.headers.get_list("set-cookie")
    assert len(cookies) == 1
    assert re.fullmatch(COOKIE.pattern + "; Secure", cookies[0]), cookies[0]


def test_an_endpoint_that_does_not_use_the_session_sets_no_cookie(api: Api) -> None:
    assert "set-cookie" not in api("GET", "/t/untouched").headers
    cookie = browser_session(api)
    assert "set-cookie" not in api("GET", "/t/untouched", headers={"cookie": cookie}).headers


def test_reading_an_empty_session_makes_none(api: Api) -> None:
    response = api("GET", "/t/read-session")
    assert (response.status_code, response.content) == (200, b"")  # None: an empty 200
    assert "set-cookie" not in response.headers  # nothing stored, no cookie handed out


def test_a_cross_site_request_with_cross_site_session_never_sets_the_cookie(api: Api) -> None:
    # No cookie, a write: the session is fresh, and still the answer does not set it
    # (a form on another site must not log the browser into a session of its choosing).
    response = api("POST", "/t/count-xsite", headers={"origin": EVIL})
    assert response.json() == 1
    assert "set-cookie" not in response.headers


def test_the_configured_origin_is_the_same_site(special_api: Api) -> None:
    # Behind a proxy the Host is the backend's; the page's Origin is the public one.
    first = special_api("GET", "/t/count")
    cookie = new_cookie(first).split(";")[0]
    headers = {"origin": SPECIAL_ORIGIN, "cookie": cookie}
    assert special_api("POST", "/t/count", headers=headers).json() == 2


def test_basic_credentials_that_are_not_ascii_are_a_401(api: Api) -> None:
    response = api("GET", "/t/basic", headers={"authorization": "Basic \xe9\xe9".encode("latin-1")})
    assert response.status_code == 401


def test_an_unknown_cookie_gets_a_fresh_session(api: Api) -> None:
    response = api("GET", "/t/count", headers={"cookie": "tether-session=unknown-token"})
    assert response.json() == 1
    assert "unknown-token" not in new_cookie(response)


def test_a_same_origin_request_gets_the_browser_session(api: Api, url: str) -> None:
    cookie = browser_session(api)
    response = api("POST", "/t/count", headers={"origin": url, "cookie": cookie})
    assert response.json() == 2
    assert "set-cookie" not in response.headers


CROSS_SITE = [{"origin": EVIL}, {"sec-fetch-site": "cross-site"}]


@pytest.mark.parametrize("cross_site", CROSS_SITE)
def test_a_cross_site_request_gets_a_fresh_session(api: Api, cross_site: dict[str, str]) -> None:
    cookie = browser_session(api)
    response = api("POST", "/t/count", headers={**cross_site, "cookie": cookie})
    assert response.json() == 1
    assert api("GET", "/t/count", headers={"cookie": cookie}).json() == 2  # untouched


@pytest.mark.parametrize("cross_site", CROSS_SITE)
def test_a_cross_site_request_does_not_replace_the_browser_cookie(
    api: Api, cross_site: dict[str, str]
) -> None:
    cookie = browser_session(api)
    response = api("POST", "/t/count", headers={**cross_site, "cookie": cookie})
    assert response.json() == 1
    assert "set-cookie" not in response.headers


@pytest.mark.parametrize("cross_site", CROSS_SITE)
def test_cross_site_session_gives_a_cross_site_request_the_browser_session(
    api: Api, cross_site: dict[str, str]
) -> None:
    cookie = browser_session(api)
    response = api("POST", "/t/count-xsite", headers={**cross_site, "cookie": cookie})
    assert response.json() == 2
    assert "set-cookie" not in response.headers


def test_reset_session_sends_a_new_cookie(api: Api) -> None:
    old = browser_session(api)
    response = api("GET", "/t/reset", headers={"cookie": old})
    assert response.json() == 1
    new = new_cookie(response)
    assert new != old
    assert api("GET", "/t/count", headers={"cookie": new}).json() == 2
    stale = api("GET", "/t/count", headers={"cookie": old})  # the old session is gone
    assert stale.json() == 1
    assert new_cookie(stale) not in (old, new)


def test_the_page_cookie_is_the_endpoint_session(client: httpx.Client, api: Api, url: str) -> None:
    client.cookies.clear()
    page = client.get(url + "/")  # may be a 404 without a static dir: it still sets the cookie
    cookie = new_cookie(page)
    first = api("GET", "/t/count", headers={"cookie": cookie})
    assert first.json() == 1
    assert "set-cookie" not in first.headers
    assert api("GET", "/t/count", headers={"cookie": cookie}).json() == 2


# -- registration (in process, on a registry of its own) --------------------------------


def test_registration_normalizes_methods() -> None:
    registry = EndpointRegistry()
    endpoint = registry.register(app.untouched, "/x/:id", ["get", "Post", "GET"])
    assert endpoint.methods == ("GET", "POST", "HEAD")
    assert endpoint.allow == "GET, POST, HEAD"
    assert registry.register(app.untouched, "/y", ["PUT"]).methods == ("PUT",)
    found = registry.find(["x", "7"])
    assert found is not None
    assert found[1] == {"id": "7"}


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({"path": "no-slash"}, ValueError),
        ({"path": ""}, ValueError),
        ({"path": "/a", "methods": ["GE T"]}, ValueError),
        ({"path": "/a", "methods": "GET"}, ValueError),
        ({"path": "/a", "methods": []}, ValueError),
        ({"path": "/a/:x/:x"}, ValueError),
        ({"path": "/a/:x-:x"}, ValueError),
        ({"path": "/a", "authenticate_users": "x"}, TypeError),
    ],
)
def test_bad_registrations_are_refused(arguments: dict[str, Any], error: type[Exception]) -> None:
    registry = EndpointRegistry()
    with pytest.raises(error):
        registry.register(app.untouched, **arguments)
    assert registry.endpoints == {}


def test_bad_registration_arguments_of_the_facade() -> None:
    with pytest.raises(TypeError):
        EndpointRegistry().register("not a function", "/a")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        server.set_user_authenticator("x")  # type: ignore[arg-type]
