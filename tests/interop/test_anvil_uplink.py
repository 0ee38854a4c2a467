"""The real anvil-uplink client (PyPI, its own virtual environment, its own process)
against Tether's ``/_/uplink``: values, media, both call directions, errors, portable
classes, keys, and a script that goes away."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import ROOT, TIMEOUT, free_port, wait_for_port
from tests.interop.conftest import Script, uplink_url
from tether import testing
from tether.client import AsyncClient
from tether.errors import NoServerFunctionError, RemoteError, UplinkDisconnectedError

UPLINK_KEY = "interop-uplink-key"
CLIENT_KEY = "interop-client-key"
Run = Callable[[str, str, str], Script]


def serve_on(port: int) -> subprocess.Popen[str]:
    """``tether serve`` of the interop app on ``port`` (again on the same port after a
    stop: scripts reconnect to it). Stop it with ``tests.conftest.stop``."""
    command = [
        sys.executable,
        "-m",
        "tether",
        "serve",
        "tests.apps.interop",
        "--port",
        str(port),
        "--uplink-key",
        UPLINK_KEY,
        "--store",
        "memory",
    ]
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    wait_for_port(port, process)
    return process


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with testing.serve(
        "tests.apps.interop", uplink_key=UPLINK_KEY, client_key=CLIENT_KEY
    ) as served:
        yield served


def test_values_of_every_kind_cross_both_ways(url: str, run_script: Run) -> None:
    script = run_script(
        """
        import datetime as dt
        anvil.server.connect(KEY, url=URL, quiet=True)
        d = lambda v: anvil.server.call("interop.describe", v)
        out([d(2**40), d(-(2**70)), d(float("inf")), d(float("-inf")), d(float("nan")),
             d(dt.date(2024, 2, 29)),
             d(dt.datetime(2024, 2, 29, 12, 30, 5, 250000, tzinfo=dt.timezone.utc)),
             d("héllo"), d([1, [2, None]]), d({"k": True})])
        back = anvil.server.call("interop.echo", 2**40, float("inf"), dt.date(2024, 2, 29), k=[1])
        out([back["args"][0] == 2**40, back["args"][1] == float("inf"),
             back["args"][2] == dt.date(2024, 2, 29), back["kwargs"]])
        """,
        uplink_url(url),
        UPLINK_KEY,
    )
    assert script.read() == [
        "int 1099511627776",
        "int -1180591620717411303424",
        "float inf",
        "float -inf",
        "float nan",
        "date datetime.date(2024, 2, 29)",
        "datetime 2024-02-29T12:30:05.250000+00:00",
        "str 'héllo'",
        "list [1, [2, None]]",
        "dict {'k': True}",
    ]
    assert script.read() == [True, True, True, {"k": [1]}]


@pytest.mark.parametrize("size", [0, 65536, 1024 * 1024])
def test_media_up_and_down(url: str, run_script: Run, size: int) -> None:
    script = run_script(
        f"""
        anvil.server.connect(KEY, url=URL, quiet=True)
        sent = anvil.BlobMedia("text/plain", b"u" * {size}, name="up.txt")
        out(anvil.server.call("interop.describe", sent))
        got = anvil.server.call("interop.media", {size})
        data = got.get_bytes()
        out([got.content_type, got.name, len(data), data == b"m" * {size}])
        """,
        uplink_url(url),
        UPLINK_KEY,
    )
    assert script.read() == f"media text/plain up.txt {size}"
    assert script.read() == ["application/octet-stream", f"{size}.bin", size, True]


def test_errors_arrive_as_the_clients_classes(url: str, run_script: Run) -> None:
    script = run_script(
        """
        anvil.server.connect(KEY, url=URL, quiet=True)

        # anvil-uplink re-raises an error as a class of its own only for names
        # registered this way (a portable class alone arrives as AnvilWrappedError)
        @anvil.server.portable_class("interop.Refused")
        class Refused(anvil.server.AnvilWrappedError):
            pass

        anvil.server._register_exception_type("interop.Refused", Refused)

        seen = []
        for call in (lambda: anvil.server.call("interop.nope"),
                     lambda: anvil.server.call("interop.fail", "permission"),
                     lambda: anvil.server.call("interop.fail", "portable"),
                     lambda: anvil.server.call("interop.fail", "plain")):
            try:
                call()
            except Exception as exc:
                error = getattr(exc, "error_obj", None) or {}
                seen.append([type(exc).__name__, error.get("type"), str(exc)])
        out(seen)
        """,
        uplink_url(url),
        UPLINK_KEY,
    )
    seen = script.read()
    assert isinstance(seen, list)
    assert [kind for kind, _, _ in seen] == [
        "NoServerFunctionError",  # anvil.server's own classes
        "PermissionDenied",
        "Refused",  # the script's class registered under that type name
        "AnvilWrappedError",  # anything else: its type name and message
    ]
    assert seen[0][2] == "no server function named 'interop.nope'"
    assert seen[1][2] == "not you"
    assert seen[2][1:] == ["interop.Refused", "refused here"]
    assert seen[3][1] == "ZeroDivisionError"
    assert "plain failure" in seen[3][2]


def test_portable_classes_with_the_same_name_round_trip(url: str, run_script: Run) -> None:
    script = run_script(
        """
        anvil.server.connect(KEY, url=URL, quiet=True)

        @anvil.server.portable_class("interop.Point")
        class Point:
            def __init__(self, x, y):
                self.x, self.y = x, y

        p = anvil.server.call("interop.point", Point(1, 2))
        out([type(p).__name__, p.x, p.y, anvil.server.call("interop.point_class") is Point])
        """,
        uplink_url(url),
        UPLINK_KEY,
    )
    assert script.read() == ["Point", 2, 1, True]


async def test_tether_calls_the_scripts_functions(url: str, run_script: Run) -> None:
    script = run_script(
        """
        @anvil.server.callable("script.double")
        def double(x):
            return x * 2

        @anvil.server.callable
        def script_context():
            return "called"

        @anvil.server.callable("script.fail")
        def fail():
            raise KeyError("missing key")

        anvil.server.connect(KEY, url=URL, quiet=True)
        out("ready")
        sys.stdin.read()  # until the test is done
        """,
        uplink_url(url),
        UPLINK_KEY,
    )
    assert script.read() == "ready"
    async with asyncio.timeout(TIMEOUT), AsyncClient(url) as client:
        results = await asyncio.gather(*(client.call("script.double", n) for n in range(20)))
        assert results == [n * 2 for n in range(20)]
        assert await client.call("script_context") == "called"
        assert await client.call("interop.call_script", "script.double", 21) == 42
        with pytest.raises(RemoteError) as raised:
            await client.call("script.fail")
        assert raised.value.type_name == "KeyError"
        assert "missing key" in str(raised.value)
        assert script.process.stdin is not None
        script.process.stdin.close()  # the script disconnects
        script.process.wait(TIMEOUT)
        deadline = asyncio.get_running_loop().time() + TIMEOUT
        while True:  # its registrations vanish with it
            try:
                await client.call("script.double", 1)
            except (NoServerFunctionError, UplinkDisconnectedError):
                break
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)


def test_keys(url: str, run_script: Run) -> None:
    client_key = run_script(
        """
        anvil.server.connect(KEY, url=URL, quiet=True)
        out(anvil.server.call("interop.context"))
        """,
        uplink_url(url),
        CLIENT_KEY,
    )
    assert client_key.read() == ["uplink", "client_uplink", False]
    trusted = run_script(
        """
        anvil.server.connect(KEY, url=URL, quiet=True)
        out(anvil.server.call("interop.context"))
        """,
        uplink_url(url),
        UPLINK_KEY,
    )
    assert trusted.read() == ["uplink", "uplink", True]
    wrong = run_script(
        """
        try:
            anvil.server.connect(KEY, url=URL, quiet=True)
            anvil.server.call("interop.context")
        except Exception as exc:
            out([type(exc).__name__, str(exc)])
        """,
        uplink_url(url),
        "wrong-key",
    )
    _kind, message = wrong.read()  # type: ignore[misc]
    assert "key" in message.lower(), message


# -- capabilities -----------------------------------------------------------------------


def test_capabilities_minted_narrowed_tampered_and_minted_by_the_script(
    url: str, run_script: Run
) -> None:
    script = run_script(
        """
        anvil.server.connect(KEY, url=URL, quiet=True)
        def attempt(call):
            try:
                return call()
            except Exception as exc:
                return [type(exc).__name__, str(exc)]

        cap = anvil.server.call("interop.mint", "doc", 17)
        out([type(cap).__name__, cap.scope])
        folded = anvil.server.call("interop.mint_narrowed")  # narrowed by Tether: folded
        out([folded.scope, anvil.server.call("interop.check", folded, "doc", 1, "page", 2)])
        narrow = cap.narrow(["page", 3])
        out(anvil.server.call("interop.check", narrow, "doc", 17, "page", "*"))
        tampered = anvil.server.Capability.__new__(anvil.server.Capability)
        tampered.__dict__.update(cap.__dict__)
        tampered._scope = ["doc", 18]
        out(attempt(lambda: anvil.server.call("interop.check", tampered, "doc", 18)))
        mine = anvil.server.Capability(["script", 1])  # unsigned: a trusted script's own
        out(attempt(lambda: anvil.server.call("interop.check", mine, "script", 1)))
        """,
        uplink_url(url),
        UPLINK_KEY,
    )
    assert script.read() == ["Capability", ["doc", 17]]
    assert script.read() == [["doc", 1, "page", 2], [["doc", 1, "page", 2]] * 2]
    assert script.read() == [["doc", 17, "page", 3]] * 2  # narrowed by the script: accepted
    kind, message = script.read()  # type: ignore[misc]
    assert kind == "PermissionDenied", message
    assert script.read() == [["script", 1], ["script", 1]]


def test_an_untrusted_script_cannot_mint(url: str, run_script: Run) -> None:
    script = run_script(
        """
        anvil.server.connect(KEY, url=URL, quiet=True)
        try:
            anvil.server.call("interop.check", anvil.server.Capability(["mine"]), "mine")
        except Exception as exc:
            out(type(exc).__name__)
        """,
        uplink_url(url),
        CLIENT_KEY,
    )
    assert script.read() == "PermissionDenied"


def test_updates_flow_back_to_the_script_and_across_hops(url: str, run_script: Run) -> None:
    script = run_script(
        """
        anvil.server.connect(KEY, url=URL, quiet=True)
        seen = []
        cap = anvil.server.call("interop.mint", "job", 1)
        cap.set_update_handler(seen.append)
        anvil.server.call("interop.progress", cap, 10)
        out(seen)

        @anvil.server.callable("script.work")
        def work(job_cap):
            job_cap.send_update({"step": "script"})
            return "worked"

        out("ready")
        sys.stdin.read()
        """,
        uplink_url(url),
        UPLINK_KEY,
    )
    assert script.read() == [{"progress": 10}]
    assert script.read() == "ready"

    async def through_the_script() -> list[object]:
        async with asyncio.timeout(TIMEOUT), AsyncClient(url) as client:
            cap = await client.call("interop.mint", "job", 2)
            seen: list[object] = []
            cap.set_update_handler(seen.append)  # type: ignore[attr-defined]
            # Tether client -> server function -> the script's function -> back
            assert await client.call("interop.relay", "script.work", cap) == "worked"
            return seen

    assert asyncio.run(through_the_script()) == [{"step": "script"}]


# -- the script's functions run for the Tether caller -----------------------------------


def test_a_scripts_function_sees_its_caller_and_their_session(url: str, run_script: Run) -> None:
    script = run_script(
        """
        @anvil.server.callable("script.who")
        def who():
            ctx = anvil.server.context
            return [ctx.client.type, ctx.remote_caller.is_trusted,
                    anvil.server.call("interop.recall")]  # in the caller's session

        anvil.server.connect(KEY, url=URL, quiet=True)
        out(anvil.server.call("interop.origins"))  # Tether code's answer...
        out([anvil.server.get_app_origin(), anvil.server.get_api_origin()])  # ...the client's
        out("ready")
        sys.stdin.read()
        """,
        uplink_url(url),
        UPLINK_KEY,
    )
    assert script.read() == [url, url + "/_/api"]
    assert script.read() == [url, url + "/_/api"]
    assert script.read() == "ready"

    async def as_a_client() -> object:
        async with asyncio.timeout(TIMEOUT), AsyncClient(url) as client:
            await client.call("interop.remember", "mine")
            return await client.call("script.who")

    assert asyncio.run(as_a_client()) == ["uplink", False, "mine"]


def test_the_app_the_script_sees(run_script: Run) -> None:
    with testing.serve(
        "tests.apps.interop", uplink_key=UPLINK_KEY, app_id="shop", environment="staging"
    ) as served:
        script = run_script(
            """
            anvil.server.connect(KEY, url=URL, quiet=True)
            out([anvil.app.id, anvil.app.environment.name, anvil.app.branch])
            """,
            uplink_url(served),
            UPLINK_KEY,
        )
        assert script.read() == ["shop", "staging", "master"]


def test_script_threads_call_while_the_server_calls_the_script(url: str, run_script: Run) -> None:
    script = run_script(
        """
        import threading

        @anvil.server.callable("script.square")
        def square(x):
            return x * x

        anvil.server.connect(KEY, url=URL, quiet=True)
        results = {}

        def worker(n):
            results[n] = [anvil.server.call("interop.echo", n, i)["args"] for i in range(10)]

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        # meanwhile the server calls the script, from a server function
        squares = [anvil.server.call("interop.call_script", "script.square", n) for n in range(10)]
        for t in threads:
            t.join()
        out([squares, all(results[n] == [[n, i] for i in range(10)] for n in range(4))])
        """,
        uplink_url(url),
        UPLINK_KEY,
    )
    assert script.read() == [[n * n for n in range(10)], True]


# -- a server that goes away and comes back ---------------------------------------------


def test_the_script_reconnects_and_registers_again(run_script: Run) -> None:
    from tests.conftest import stop

    port = free_port()
    server = serve_on(port)
    try:
        script = run_script(
            """
            @anvil.server.callable("script.ping")
            def ping():
                return "pong"

            anvil.server.connect(KEY, url=URL, quiet=True)
            out(anvil.server.call("interop.call_script", "script.ping"))
            sys.stdin.readline()  # the server is restarted meanwhile
            out(until_reconnected(lambda: anvil.server.call("interop.call_script", "script.ping")))
            """,
            f"ws://127.0.0.1:{port}/_/uplink",
            UPLINK_KEY,
        )
        assert script.read() == "pong"
        stop(server)
        server = serve_on(port)
        assert script.process.stdin is not None
        script.process.stdin.write("go\n")
        script.process.stdin.flush()
        assert script.read() == "pong"  # reconnected, and its function registered again
    finally:
        stop(server)


# -- a whole Anvil app's server modules -------------------------------------------------


def test_an_anvil_app_via_run_app_via_uplink(url: str, anvil_python: object) -> None:
    import queue
    import subprocess
    import threading

    from tests.conftest import ROOT

    runner = subprocess.Popen(
        [str(anvil_python), "-m", "anvil.run_app_via_uplink", "shop"],
        cwd=ROOT / "examples" / "anvil_uplink",
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={
            "ANVIL_UPLINK_URL": uplink_url(url),
            "ANVIL_UPLINK_KEY": UPLINK_KEY,
            "PYTHONUNBUFFERED": "1",
        },
    )
    lines: queue.Queue[str] = queue.Queue()
    assert runner.stdout is not None
    reader = threading.Thread(target=lambda: [lines.put(line) for line in runner.stdout or ()])
    reader.start()
    try:
        seen: list[str] = []
        while not seen or not seen[-1].startswith("http"):  # it prints the app's origin
            try:
                seen.append(lines.get(timeout=TIMEOUT).strip())
            except queue.Empty:
                pytest.fail(f"the runner did not connect: {seen}")
        assert "**** You're all set! ****" in seen
        assert seen[-1] == url  # it asked the server for its origin

        async def as_a_client() -> list[object]:
            async with asyncio.timeout(TIMEOUT), AsyncClient(url) as client:
                return [
                    await client.call("shop_price", "teapot"),
                    await client.call("shop.basket_total", ["teapot", "kettle"]),
                ]

        assert asyncio.run(as_a_client()) == [1999, 6549]
    finally:
        runner.kill()
        runner.wait(TIMEOUT)
        reader.join(TIMEOUT)
        runner.stdout.close()


# -- what a script must not get away with -----------------------------------------------


def test_what_the_server_refuses_from_a_script(url: str, run_script: Run) -> None:
    script = run_script(
        """
        anvil.server.connect(KEY, url=URL, quiet=True)

        @anvil.server.portable_class("interop.NotOnTheServer")
        class Unknown:
            pass

        def attempt(call):
            try:
                return ["ok", call()]
            except Exception as exc:
                return [type(exc).__name__, str(exc)]

        out(attempt(lambda: anvil.server.call("interop.describe", Unknown())))
        underscore = anvil.server.Capability.__new__(anvil.server.Capability)
        underscore.__dict__.update(anvil.server.Capability(["x"]).__dict__)
        underscore._scope = ["_", "secret"]
        out(attempt(lambda: anvil.server.call("interop.check", underscore, "_", "secret")))
        out(attempt(lambda: anvil.server.call("interop.describe", "still fine")))
        """,
        uplink_url(url),
        UPLINK_KEY,
    )
    kind, message = script.read()  # type: ignore[misc]
    assert kind != "ok"
    assert "interop.NotOnTheServer" in message  # named, and never imported
    kind, _ = script.read()  # type: ignore[misc]
    assert kind == "PermissionDenied"
    assert script.read() == ["ok", "str 'still fine'"]  # the connection lives on


def test_a_wrong_key_fails_every_call_and_runs_nothing(url: str, run_script: Run) -> None:
    script = run_script(
        """
        try:
            anvil.server.connect(KEY, url=URL, quiet=True)
        except Exception as exc:
            out(["connect", type(exc).__name__])
        for _ in range(3):
            try:
                anvil.server.call("interop.remember", "from a wrong key")
                out("ran")
            except Exception as exc:
                out([type(exc).__name__, "key" in str(exc).lower()])
        """,
        uplink_url(url),
        "wrong-key",
    )
    lines = [script.read() for _ in range(3)]
    if lines[0] and lines[0][0] == "connect":  # type: ignore[index]
        lines = [*lines[1:], script.read()]
    assert all(line != "ran" and line[1] is True for line in lines), lines  # type: ignore[index]


def test_a_call_in_flight_when_the_server_goes_fails_then_works_again(
    run_script: Run,
) -> None:
    from tests.conftest import stop

    port = free_port()
    server = serve_on(port)
    try:
        script = run_script(
            """
            anvil.server.connect(KEY, url=URL, quiet=True)
            out("calling")
            try:
                anvil.server.call("interop.slow", 30)
                out("answered")
            except Exception as exc:
                out(["failed", type(exc).__name__])
            out(until_reconnected(lambda: anvil.server.call("interop.describe", 1)))
            """,
            f"ws://127.0.0.1:{port}/_/uplink",
            UPLINK_KEY,
        )
        assert script.read() == "calling"
        import time

        time.sleep(0.5)  # the call is in flight (it sleeps 30 s on the server)
        server.kill()  # the server drops the socket mid-call
        server.communicate(timeout=TIMEOUT)
        server = serve_on(port)
        failed = script.read()
        assert isinstance(failed, list)
        assert failed[0] == "failed", failed
        assert script.read() == "int 1"  # reconnected
    finally:
        stop(server)


def test_the_keep_alive_is_answered(url: str, run_script: Run) -> None:
    # anvil-uplink's keep-alive is this very call, made every few seconds on its own.
    script = run_script(
        """
        anvil.server.connect(KEY, url=URL, quiet=True)
        out(anvil.server.call("anvil.private.echo", "still there?"))
        """,
        uplink_url(url),
        UPLINK_KEY,
    )
    assert script.read() == "still there?"


def test_global_data_both_ways(url: str, run_script: Run) -> None:
    script = run_script(
        """
        anvil.server.connect(KEY, url=URL, quiet=True)

        @anvil.server.portable_class("interop.Priced")
        class Priced:
            def __init__(self, cents, currency):
                self.cents, self.currency = cents, currency

            def __serialize__(self, global_data):
                global_data["currency"] = self.currency
                return self.cents

            def __deserialize__(self, data, global_data):
                self.cents, self.currency = data, global_data["currency"]

        back = anvil.server.call("interop.double_prices", [Priced(100, "EUR"), Priced(5, "EUR")])
        out([[p.cents, p.currency] for p in back])
        """,
        uplink_url(url),
        UPLINK_KEY,
    )
    assert script.read() == [[200, "EUR!"], [10, "EUR!"]]
