"""The sans-I/O Connection: handshake, calls, errors, media chunks, and every bad frame."""

from __future__ import annotations

import os
import pickle

import orjson
import pytest

from tether.codec import (
    CHUNK_SIZE,
    BlobMedia,
    GlobalData,
    Limits,
    PortableRegistry,
    portable_registry,
)
from tether.errors import (
    FrameTooLarge,
    InsecureJelly,
    LocalProtocolError,
    NoServerFunctionError,
    PermissionDenied,
    ProtocolError,
    RemoteError,
    RemoteProtocolError,
    SerializationError,
)
from tether.protocol import (
    PROTOCOL_VERSION,
    Authenticated,
    AuthFailed,
    Call,
    Connection,
    Event,
    Failure,
    Frame,
    Hello,
    Register,
    Rejected,
    Response,
    Role,
    State,
)
from tether.protocol.reading import SMALL_FRAME

REGISTRY = PortableRegistry()
SMALL = Limits(max_frame_bytes=1024)


@REGISTRY.decorator("proto.Video")
class Video:
    def __init__(self, title: str) -> None:
        self.title = title


@REGISTRY.decorator("proto.GcProbe")
class GcProbe:
    """Notes whether the garbage collector was running while it was built."""

    def __init__(self, label: str) -> None:
        self.label = label

    def __serialize__(self, global_data: GlobalData) -> object:
        return self.label

    def __deserialize__(self, data: object, global_data: GlobalData) -> None:
        import gc

        self.label = data
        self.gc_was_running = gc.isenabled()


@REGISTRY.decorator("proto.Counted")
class Counted:
    def __init__(self, label: str) -> None:
        self.label = label

    def __serialize__(self, global_data: GlobalData) -> object:
        global_data["count"] = int(global_data.get("count", 0)) + 1  # type: ignore[call-overload]
        return self.label

    def __deserialize__(self, data: object, global_data: GlobalData) -> None:
        self.label = data
        self.count = global_data["count"]


@REGISTRY.decorator("proto.Refused")
class Refused(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@REGISTRY.decorator
class Denied(Exception):
    """A portable exception under its default name (module.QualName)."""


class AppError(Exception):
    pass


# -- helpers ---------------------------------------------------------------------------


def relay(source: Connection, target: Connection) -> list[Event]:
    for frame in source.frames_to_send():
        target.receive_frame(frame)
    return target.events_received()


def open_pair(
    *,
    client_limits: Limits | None = None,
    server_limits: Limits | None = None,
    client_registry: PortableRegistry = REGISTRY,
    server_registry: PortableRegistry = REGISTRY,
    compact: bool = False,
) -> tuple[Connection, Connection]:
    client = Connection(
        Role.CLIENT, registry=client_registry, limits=client_limits, compact=compact
    )
    server = Connection(
        Role.SERVER, registry=server_registry, limits=server_limits, compact=compact
    )
    client.send_hello("secret")
    assert relay(client, server) == [Hello("secret", PROTOCOL_VERSION)]
    server.accept("client", {"app": "test"})
    assert relay(server, client) == [Authenticated("client", {"app": "test"})]
    assert client.state is server.state is State.OPEN
    return client, server


def call_on(client: Connection, server: Connection, *args: object) -> Call:
    client.send_call("f", list(args), {})
    [call] = relay(client, server)
    assert isinstance(call, Call)
    return call


def text(message: object) -> str:
    return orjson.dumps(message).decode()


def call_frame(**fields: object) -> str:
    return text({"type": "CALL", "id": "c1", "command": "f", "args": [], "kwargs": {}, **fields})


MEDIA_ENTRY = {"path": ["args", 0], "type": ["DataMedia"], "id": "m", "mime-type": "a/b"}
MEDIA_CALL = call_frame(args=[None], objects=[MEDIA_ENTRY])


def header(
    request: object = "c1", media: object = "m", index: object = 0, last: bool = True
) -> str:
    return text(
        {
            "type": "CHUNK_HEADER",
            "requestId": request,
            "mediaId": media,
            "chunkIndex": index,
            "lastChunk": last,
        }
    )


# -- handshake -------------------------------------------------------------------------


def test_handshake_accept() -> None:
    client = Connection(Role.CLIENT, registry=REGISTRY)
    server = Connection(Role.SERVER, registry=REGISTRY)
    assert client.state is server.state is State.NEW
    assert client.events_received() == []
    client.send_hello("k", session="s1")
    assert client.state is State.AUTHENTICATING
    [hello_frame] = client.frames_to_send()
    assert orjson.loads(hello_frame) == {"key": "k", "v": PROTOCOL_VERSION, "session": "s1"}
    server.receive_frame(hello_frame)
    assert server.events_received() == [Hello("k", PROTOCOL_VERSION)]
    assert server.state is State.AUTHENTICATING
    server.accept("uplink", {"name": "app"}, session="s2")
    assert server.state is State.OPEN
    [authenticated] = relay(server, client)
    assert authenticated == Authenticated("uplink", {"name": "app"})
    assert client.state is State.OPEN
    assert isinstance(authenticated, Authenticated)
    assert authenticated.extra["session"] == "s2"


def test_handshake_without_a_key_or_version() -> None:
    server = Connection(Role.SERVER, registry=REGISTRY)
    server.receive_frame('{"key": null}')
    assert server.events_received() == [Hello(None, 0)]


def test_an_auth_reply_without_app_info() -> None:
    client = Connection(Role.CLIENT, registry=REGISTRY)
    client.send_hello(None)
    client.receive_frame('{"auth": "OK", "priv": "client", "app-info": "odd"}')
    assert client.events_received() == [Authenticated("client", {})]


def test_handshake_reject() -> None:
    client = Connection(Role.CLIENT, registry=REGISTRY)
    server = Connection(Role.SERVER, registry=REGISTRY)
    client.send_hello("wrong")
    relay(client, server)
    server.reject("invalid key")
    assert server.state is State.CLOSED
    assert relay(server, client) == [AuthFailed("invalid key")]
    assert client.state is State.CLOSED
    # A closed connection ignores whatever still arrives.
    client.receive_frame("not even json")
    client.receive_frame(b"\x00")
    server.receive_frame(call_frame())
    assert client.events_received() == server.events_received() == []


def test_register_before_accept_is_kept_in_order() -> None:
    client = Connection(Role.CLIENT, registry=REGISTRY)
    server = Connection(Role.SERVER, registry=REGISTRY)
    client.send_hello("k")
    client.send_register("first")
    client.send_register("second.*")
    assert relay(client, server) == [
        Hello("k", PROTOCOL_VERSION),
        Register("first"),
        Register("second.*"),
    ]
    server.accept("uplink", {})
    relay(server, client)
    client.send_register("third")
    assert relay(client, server) == [Register("third")]


def test_register_before_any_hello_is_refused() -> None:
    server = Connection(Role.SERVER, registry=REGISTRY)
    with pytest.raises(RemoteProtocolError, match="REGISTER before the key"):
        server.receive_frame(text({"type": "REGISTER", "name": "f"}))


def test_the_default_registry() -> None:
    assert Connection(Role.CLIENT).registry is portable_registry


def test_output_frames_are_ignored() -> None:
    client, _ = open_pair()
    client.receive_frame('{"output": "hello from the server console"}')
    assert client.events_received() == []


# -- calls -----------------------------------------------------------------------------


def test_call_and_response() -> None:
    client, server = open_pair()
    call_id = client.send_call("add", [1, 2], {"z": 3}, meta={"call-stack": [{"type": "x"}]})
    assert client.pending_calls == 1
    [call] = relay(client, server)
    assert call == Call(call_id, "add", [1, 2], {"z": 3}, GlobalData())
    assert call.meta["call-stack"] == [{"type": "x"}]
    assert isinstance(call.global_data, GlobalData)
    server.send_response(call.id, {"sum": 6}, meta={"extra": True})
    [response] = relay(server, client)
    assert response == Response(call_id, {"sum": 6})
    assert response.meta["extra"] is True
    assert client.pending_calls == 0


def test_call_ids_are_distinct_and_sided() -> None:
    client, server = open_pair()
    ids = {client.send_call("f", [], {}) for _ in range(3)}
    assert len(ids) == 3
    assert len(client.frames_to_send()) == 3
    server_id = server.send_call("g", (), {})
    assert server_id.startswith("server-")
    [call] = relay(server, client)
    assert call == Call(server_id, "g", [], {}, GlobalData())
    client.send_response(server_id, None)
    assert relay(client, server) == [Response(server_id, None)]


def test_a_call_without_args_or_kwargs() -> None:
    _, server = open_pair()
    server.receive_frame(text({"type": "CALL", "id": "c1", "command": "f"}))
    assert server.events_received() == [Call("c1", "f", [], {}, GlobalData())]


def test_portable_values_and_global_data_cross_in_a_call() -> None:
    client, server = open_pair()
    client.send_call("f", [Video("cats"), Counted("a"), Counted("b")], {})
    [frame] = client.frames_to_send()
    assert orjson.loads(frame)["vt_global"] == {"count": 2}  # type: ignore[index]
    server.receive_frame(frame)
    [call] = server.events_received()
    assert isinstance(call, Call)
    video, first, second = call.args
    assert type(video) is Video
    assert video.title == "cats"  # type: ignore[attr-defined]
    assert first.count == second.count == 2  # type: ignore[attr-defined]
    assert call.global_data["count"] == 2


def test_compact_connections_send_runs() -> None:
    client, server = open_pair(compact=True)
    client.send_call("f", [[Video("a"), Video("b")]], {})
    [frame] = client.frames_to_send()
    assert orjson.loads(frame)["objects"] == [  # type: ignore[index]
        {"path": ["args", 0], "type": ["ValueType"], "typeName": "proto.Video", "items": [0, 1]}
    ]
    server.receive_frame(frame)
    [call] = server.events_received()
    assert [v.title for v in call.args[0]] == ["a", "b"]  # type: ignore[union-attr]


@pytest.mark.parametrize(("args", "expected"), [(["hi"], "hi"), ([], None)], ids=["arg", "none"])
def test_echo_is_answered_by_the_connection(args: list[object], expected: object) -> None:
    client, server = open_pair()
    call_id = client.send_call("anvil.private.echo", args, {})
    assert relay(client, server) == []  # no event: the connection answered itself
    assert relay(server, client) == [Response(call_id, expected)]


def test_frames_and_events_drain() -> None:
    client, server = open_pair()
    client.send_call("f", [], {})
    assert len(client.frames_to_send()) == 1
    assert client.frames_to_send() == []
    server.receive_frame(call_frame())
    assert len(server.events_received()) == 1
    assert server.events_received() == []


# -- errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "wire_type"),
    [
        (
            NoServerFunctionError("no server function named 'ecoh'"),
            "anvil.server.NoServerFunctionError",
        ),
        (ValueError("bad value"), "ValueError"),
        (KeyError("k"), "KeyError"),
        (AppError("app failed"), "tests.protocol.test_connection.AppError"),
        (PermissionDenied("nope"), "anvil.server.PermissionDenied"),
    ],
    ids=["tether error", "builtin", "builtin KeyError", "user class", "PermissionDenied"],
)
def test_error_wire_shape(error: Exception, wire_type: str) -> None:
    client, server = open_pair()
    call = call_on(client, server)
    server.send_error(call.id, error)
    [frame] = server.frames_to_send()
    assert orjson.loads(frame) == {
        "id": call.id,
        "error": {"type": wire_type, "message": str(error)},
    }
    client.receive_frame(frame)
    [failure] = client.events_received()
    assert isinstance(failure, Failure)
    assert failure.id == call.id
    assert client.pending_calls == 0
    received = failure.error
    if wire_type.startswith("anvil.server."):
        assert type(received) is type(error)
        assert str(received) == str(error)
    else:
        assert type(received) is RemoteError
        assert received.type_name == wire_type
        assert received.args == (str(error),)
        assert str(received) == f"{wire_type}: {error}"
        assert received.trace is None


def test_a_trace_and_meta_travel_with_an_error() -> None:
    client, server = open_pair()
    call = call_on(client, server)
    server.send_error(call.id, ValueError("x"), trace=[["app.py", 3]], meta={"dev": True})
    [frame] = server.frames_to_send()
    assert orjson.loads(frame) == {
        "id": call.id,
        "dev": True,
        "error": {"type": "ValueError", "message": "x", "trace": [["app.py", 3]]},
    }
    client.receive_frame(frame)
    [failure] = client.events_received()
    assert failure.error.trace == [["app.py", 3]]  # type: ignore[union-attr]
    assert failure.meta["dev"] is True  # type: ignore[union-attr]


def test_a_portable_exception_is_reraised_as_itself() -> None:
    client, server = open_pair()
    call = call_on(client, server)
    server.send_error(call.id, Refused("refused", 42))
    [frame] = server.frames_to_send()
    wire = orjson.loads(frame)
    assert wire["error"]["message"] == "refused"
    assert wire["error"]["value"] == {"args": ["refused"], "attrs": {"code": 42}}
    assert wire["objects"] == [
        {"path": ["error", "value"], "type": ["ValueType"], "typeName": "proto.Refused"}
    ]
    client.receive_frame(frame)
    [failure] = client.events_received()
    assert type(failure.error) is Refused  # type: ignore[union-attr]
    assert failure.error.args == ("refused",)  # type: ignore[union-attr]
    assert failure.error.code == 42  # type: ignore[union-attr]


def test_a_portable_exception_travels_under_its_registered_name() -> None:
    client, server = open_pair()
    call = call_on(client, server)
    server.send_error(call.id, Refused("refused", 42))
    [frame] = server.frames_to_send()
    assert orjson.loads(frame)["error"]["type"] == "proto.Refused"


def test_the_default_registry_names_portable_exceptions(monkeypatch: pytest.MonkeyPatch) -> None:
    # Registers in the process-wide registry (restored afterwards): Connection's default.
    monkeypatch.setattr(portable_registry, "by_name", dict(portable_registry.by_name))
    monkeypatch.setattr(portable_registry, "by_class", dict(portable_registry.by_class))

    class Oops(Exception):
        pass

    portable_registry.register(Oops, "app.Oops")
    client = Connection(Role.CLIENT)
    server = Connection(Role.SERVER)
    client.send_hello(None)
    relay(client, server)
    server.accept("client", {})
    relay(server, client)
    call = call_on(client, server)
    server.send_error(call.id, Oops("oops"))
    [frame] = server.frames_to_send()
    assert orjson.loads(frame)["error"]["type"] == "app.Oops"
    client.receive_frame(frame)
    [failure] = client.events_received()
    assert type(failure.error) is Oops  # type: ignore[union-attr]
    assert failure.error.args == ("oops",)  # type: ignore[union-attr]


def test_an_unsendable_portable_exception_falls_back_to_type_and_message() -> None:
    client, server = open_pair()
    call = call_on(client, server)
    error = Denied("no access")
    error.handle = object()  # type: ignore[attr-defined]
    server.send_error(call.id, error)
    [frame] = server.frames_to_send()
    wire = orjson.loads(frame)
    assert wire == {
        "id": call.id,
        "error": {"type": "tests.protocol.test_connection.Denied", "message": "no access"},
    }
    client.receive_frame(frame)
    [failure] = client.events_received()
    assert type(failure.error) is Denied  # type: ignore[union-attr]
    assert failure.error.args == ("no access",)  # type: ignore[union-attr]


def test_a_remote_error_is_passed_on_unchanged() -> None:
    client, server = open_pair()
    call = call_on(client, server)
    server.send_error(call.id, RemoteError("deep", "lib.DeepError"))
    empty = RemoteError("x", "lib.Empty")
    empty.args = ()
    server.send_error(call.id, empty)
    first, second = (orjson.loads(f)["error"] for f in server.frames_to_send())
    assert first == {"type": "lib.DeepError", "message": "deep"}
    assert second == {"type": "lib.Empty", "message": ""}


@pytest.mark.parametrize(
    ("error", "expected_type", "type_name", "message"),
    [
        ("boom", RemoteError, "Exception", "boom"),
        ({"type": "x.Y", "message": 5}, RemoteError, "x.Y", "5"),
        ({"type": 5, "message": "m", "trace": "odd"}, RemoteError, "Exception", "m"),
        ({"type": "proto.Video", "message": "m"}, RemoteError, "proto.Video", "m"),
        ({"type": "tether.PermissionDenied", "message": "m"}, PermissionDenied, None, "m"),
        ({"type": "proto.Refused", "message": "m"}, Refused, None, "m"),
        ({"message": "m", "value": "not an exception"}, RemoteError, "Exception", "m"),
    ],
    ids=[
        "error a str",
        "message not a str",
        "type not a str",
        "type a portable non-exception",
        "tether. prefix",
        "portable exception without value",
        "value not an exception",
    ],
)
def test_errors_from_any_peer(
    error: object, expected_type: type, type_name: str | None, message: str
) -> None:
    client, _ = open_pair()
    call_id = client.send_call("f", [], {})
    client.receive_frame(text({"id": call_id, "error": error}))
    [failure] = client.events_received()
    assert type(failure.error) is expected_type  # type: ignore[union-attr]
    assert failure.error.args == (message,)  # type: ignore[union-attr]
    if type_name is not None:
        assert failure.error.type_name == type_name  # type: ignore[union-attr]
        assert failure.error.trace is None  # type: ignore[union-attr]


# -- what cannot be sent or received ---------------------------------------------------


@pytest.mark.parametrize(
    ("value", "limits"),
    [
        (object(), None),
        ({1: "x"}, None),
        ("\ud800", None),
        ("x" * 2000, SMALL),
        (b"x" * 11, Limits(max_media_bytes=10)),
        ([b"x" * 6, BlobMedia("a/b", b"y" * 6)], Limits(max_media_bytes=10)),
    ],
    ids=["object", "int key", "lone surrogate", "frame too big", "media too big", "media add up"],
)
def test_an_unsendable_response_queues_nothing(value: object, limits: Limits | None) -> None:
    client, server = open_pair(server_limits=limits)
    call = call_on(client, server)
    with pytest.raises(SerializationError, match="cannot serialize return value"):
        server.send_response(call.id, value)
    assert server.frames_to_send() == []
    server.send_response(call.id, "fine")
    assert relay(server, client) == [Response(call.id, "fine")]


def test_unsendable_meta_queues_nothing() -> None:
    client, server = open_pair()
    call = call_on(client, server)
    with pytest.raises(SerializationError):
        server.send_response(call.id, 1, meta={"x": object()})
    assert server.frames_to_send() == []


def test_unsendable_arguments_queue_nothing() -> None:
    client, _ = open_pair()
    with pytest.raises(SerializationError, match=r"arguments to 'f'.*msg\['kwargs'\]\['k'\]"):
        client.send_call("f", [], {"k": {1, 2}})
    assert client.frames_to_send() == []
    assert client.pending_calls == 0


@pytest.mark.parametrize(
    "connection",
    [
        Connection(Role.CLIENT),
        Connection(Role.SERVER),
    ],
    ids=["new client", "new server"],
)
def test_send_call_needs_an_open_connection(connection: Connection) -> None:
    with pytest.raises(ProtocolError, match="cannot call 'f'"):
        connection.send_call("f", [], {})
    assert connection.frames_to_send() == []


def test_send_call_after_close_raises() -> None:
    client, _ = open_pair()
    client.receive_close()
    with pytest.raises(ProtocolError, match="connection is closed"):
        client.send_call("f", [], {})


def closed_client() -> Connection:
    client, _ = open_pair()
    client.receive_close()
    return client


def hello_sent() -> Connection:
    client = Connection(Role.CLIENT)
    client.send_hello("k")
    return client


LOCAL_MISUSE = {
    "send_call before open": lambda: Connection(Role.CLIENT).send_call("f", [], {}),
    "send_call after close": lambda: closed_client().send_call("f", [], {}),
    "hello twice": lambda: hello_sent().send_hello("k"),
    "hello from a server": lambda: Connection(Role.SERVER).send_hello("k"),
    "accept on a client": lambda: Connection(Role.CLIENT).accept("client", {}),
    "accept before the hello": lambda: Connection(Role.SERVER).accept("client", {}),
}


@pytest.mark.parametrize("misuse", LOCAL_MISUSE.values(), ids=list(LOCAL_MISUSE))
def test_local_misuse_is_a_local_protocol_error(misuse: object) -> None:
    # STYLE.md: LocalProtocolError is "this side broke the protocol"; Remote is the peer.
    with pytest.raises(LocalProtocolError):
        misuse()  # type: ignore[operator]


def test_undecodable_call_is_rejected_and_the_connection_stays_usable() -> None:
    sender_registry = PortableRegistry()

    @sender_registry.decorator("proto.Secret")
    class Secret:
        pass

    client, server = open_pair(client_registry=sender_registry)
    call_id = client.send_call("f", [Secret()], {})
    [rejected] = relay(client, server)
    assert isinstance(rejected, Rejected)
    assert (rejected.id, rejected.command) == (call_id, "f")
    assert isinstance(rejected.error, InsecureJelly)
    assert "'proto.Secret'" in str(rejected.error)
    [frame] = server.frames_to_send()
    wire = orjson.loads(frame)
    assert wire["id"] == call_id
    assert wire["error"]["type"] == "anvil.server.InsecureJelly"
    assert "cannot receive arguments of 'f'" in wire["error"]["message"]
    client.receive_frame(frame)
    [failure] = client.events_received()
    assert isinstance(failure.error, InsecureJelly)  # type: ignore[union-attr]
    later = client.send_call("g", [1], {})
    assert relay(client, server) == [Call(later, "g", [1], {}, GlobalData())]


def test_a_call_with_a_bad_media_id_is_rejected() -> None:
    _, server = open_pair()
    bad = {"path": ["args", 0], "type": ["DataMedia"], "id": 5}
    server.receive_frame(call_frame(args=[None], objects=[bad]))
    [rejected] = server.events_received()
    assert isinstance(rejected, Rejected)
    assert isinstance(rejected.error, SerializationError)
    [frame] = server.frames_to_send()
    assert orjson.loads(frame)["error"]["type"] == "anvil.server.SerializationError"


@pytest.mark.parametrize(
    "answer",
    [
        {
            "response": None,
            "objects": [{"path": ["response"], "type": ["ValueType"], "typeName": "x.Y"}],
        },
        {"response": None, "objects": [{"path": ["response"], "type": ["DataMedia"], "id": 5}]},
        {
            "error": {"type": "E", "message": "m", "value": None},
            "objects": [{"path": ["id"], "type": ["Long"], "value": "1"}],
        },
    ],
    ids=["unknown class", "bad media id", "objects outside the values"],
)
def test_an_undecodable_answer_is_a_failure(answer: dict[str, object]) -> None:
    client, _ = open_pair()
    call_id = client.send_call("f", [], {})
    client.receive_frame(text({"id": call_id, **answer}))
    [failure] = client.events_received()
    assert isinstance(failure, Failure)
    assert failure.id == call_id
    assert isinstance(failure.error, SerializationError)
    assert client.pending_calls == 0


@pytest.mark.parametrize(
    "entry",
    [
        {"path": ["args"], "type": ["Long"], "value": "5"},
        {"path": ["kwargs"], "type": ["Date"], "value": "2024-01-01"},
    ],
    ids=["args replaced by an int", "kwargs replaced by a date"],
)
def test_objects_cannot_replace_args_or_kwargs(entry: dict[str, object]) -> None:
    _, server = open_pair()
    try:
        server.receive_frame(call_frame(objects=[entry]))
    except RemoteProtocolError:
        return
    for event in server.events_received():
        assert not isinstance(event, Call), (
            f"a Call with args={event.args!r} kwargs={event.kwargs!r}"
        )


# -- media -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "chunk_sizes"),
    [
        (0, [0]),
        (CHUNK_SIZE, [CHUNK_SIZE]),
        (CHUNK_SIZE + 1, [CHUNK_SIZE, 1]),
        (1024 * 1024, [CHUNK_SIZE] * 16),
    ],
    ids=["empty", "64K", "64K+1", "1MiB"],
)
def test_media_in_a_call_is_sent_in_chunks(size: int, chunk_sizes: list[int]) -> None:
    client, server = open_pair()
    content = os.urandom(size)
    media = BlobMedia("image/png", content, "a.png")
    call_id = client.send_call("upload", [media], {"note": "n"})
    frames = client.frames_to_send()
    message = orjson.loads(frames[0])
    assert message["args"] == [None]
    assert message["objects"] == [
        {
            "path": ["args", 0],
            "type": ["DataMedia"],
            "id": "0",
            "mime-type": "image/png",
            "name": "a.png",
        }
    ]
    headers, parts = frames[1::2], frames[2::2]
    assert len(headers) == len(parts) == len(chunk_sizes)
    assert [orjson.loads(h) for h in headers] == [  # type: ignore[arg-type]
        {
            "type": "CHUNK_HEADER",
            "requestId": call_id,
            "mediaId": "0",
            "chunkIndex": i,
            "lastChunk": i == len(chunk_sizes) - 1,
        }
        for i in range(len(chunk_sizes))
    ]
    assert all(type(h) is str for h in headers)
    assert all(type(p) is bytes for p in parts)
    assert [len(p) for p in parts] == chunk_sizes
    for frame in frames[:-1]:
        server.receive_frame(frame)
        assert server.events_received() == []  # nothing until every chunk is in
    server.receive_frame(frames[-1])
    [call] = server.events_received()
    assert call == Call(call_id, "upload", [media], {"note": "n"}, GlobalData())
    [received] = call.args  # type: ignore[union-attr]
    assert isinstance(received, BlobMedia)
    assert (received.content_type, received.name, received.get_bytes()) == (
        "image/png",
        "a.png",
        content,
    )


def test_media_in_a_response() -> None:
    client, server = open_pair()
    call = call_on(client, server)
    first = BlobMedia("text/plain", b"a" * (CHUNK_SIZE + 5), "a.txt")
    server.send_response(call.id, {"file": first, "raw": b"\x00\x01", "n": 1})
    frames = server.frames_to_send()
    assert [type(f) for f in frames] == [str, str, bytes, str, bytes, str, bytes]
    assert [orjson.loads(h)["mediaId"] for h in frames[1::2]] == ["0", "0", "1"]  # type: ignore[arg-type]
    assert all(orjson.loads(h)["requestId"] == call.id for h in frames[1::2])  # type: ignore[arg-type]
    for frame in frames:
        client.receive_frame(frame)
    assert client.events_received() == [
        Response(call.id, {"file": first, "raw": b"\x00\x01", "n": 1})
    ]


def test_media_of_two_messages_interleave_by_request() -> None:
    client, server = open_pair()
    first = client.send_call("f", [b"one"], {})
    frames_one = client.frames_to_send()
    second = client.send_call("f", [b"two"], {})
    frames_two = client.frames_to_send()
    for frame in [frames_one[0], frames_two[0], *frames_two[1:], *frames_one[1:]]:
        server.receive_frame(frame)
    events = server.events_received()
    assert [(e.id, e.args) for e in events] == [(second, [b"two"]), (first, [b"one"])]  # type: ignore[union-attr]


def test_media_over_max_media_bytes_fails_that_call_only() -> None:
    limits = Limits(max_media_bytes=CHUNK_SIZE + 10)
    client, server = open_pair(server_limits=limits)
    call_id = client.send_call("f", [b"x" * (3 * CHUNK_SIZE)], {})
    [rejected] = relay(client, server)
    assert isinstance(rejected, Rejected)
    assert rejected.id == call_id
    assert "max_media_bytes" in str(rejected.error)
    [failure] = relay(server, client)
    assert isinstance(failure, Failure)
    assert isinstance(failure.error, SerializationError)
    later = client.send_call("g", [b"small"], {})
    assert relay(client, server) == [Call(later, "g", [b"small"], {}, GlobalData())]


def test_an_answer_over_max_media_bytes_is_a_failure() -> None:
    client, server = open_pair(client_limits=Limits(max_media_bytes=10))
    call = call_on(client, server)
    server.send_response(call.id, b"y" * 11)
    [failure] = relay(server, client)
    assert isinstance(failure, Failure)
    assert "max_media_bytes" in str(failure.error)
    assert client.pending_calls == 0


def test_a_pickle_in_a_media_chunk_stays_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []
    monkeypatch.setattr(os, "system", lambda *a: calls.append(a))
    _, server = open_pair()
    for frame in (MEDIA_CALL, header(), CLASSIC_PICKLE):
        server.receive_frame(frame)
    [call] = server.events_received()
    assert call.args == [BlobMedia("a/b", CLASSIC_PICKLE)]  # type: ignore[union-attr]
    assert calls == []


# -- bad frames ------------------------------------------------------------------------


class Exploit:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo pwned",))


CLASSIC_PICKLE = b"cos\nsystem\n(S'echo pwned'\ntR."
PICKLES = {
    "classic": CLASSIC_PICKLE,
    "protocol 0": pickle.dumps(Exploit(), protocol=0),
    "protocol 5": pickle.dumps(Exploit(), protocol=5),
}


@pytest.mark.parametrize("as_text", [True, False], ids=["text frame", "binary frame"])
@pytest.mark.parametrize("payload", PICKLES.values(), ids=list(PICKLES))
def test_a_pickle_is_refused_and_never_run(
    payload: bytes, as_text: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[object] = []
    monkeypatch.setattr(os, "system", lambda *a: calls.append(a))
    for connection in (*open_pair(), Connection(Role.SERVER, registry=REGISTRY)):
        frame: Frame = payload.decode("latin-1") if as_text else payload
        with pytest.raises(RemoteProtocolError):
            connection.receive_frame(frame)
        assert connection.events_received() == []
    assert calls == []


def receiver(kind: str) -> Connection:
    if kind == "new server":
        return Connection(Role.SERVER, registry=REGISTRY)
    if kind == "new client":
        return Connection(Role.CLIENT, registry=REGISTRY)
    if kind == "authenticating server":
        server = Connection(Role.SERVER, registry=REGISTRY)
        server.receive_frame('{"key": "k", "v": 8}')
        return server
    if kind == "authenticating client":
        return hello_sent()
    client, server = open_pair(server_limits=SMALL if kind == "small server" else None)
    return client if kind == "client" else server


BAD_FRAMES: dict[str, tuple[str, list[Frame]]] = {
    "not JSON": ("server", ["{nope"]),
    "empty text": ("server", [""]),
    "JSON array": ("server", ["[1, 2]"]),
    "JSON string": ("server", ['"CALL"']),
    "JSON null": ("server", ["null"]),
    "unknown type": ("server", ['{"type": "PICKLE"}']),
    "type not a str": ("server", ['{"type": 5}']),
    "no type and nothing known": ("server", ['{"hello": 1}']),
    "CALL before auth": ("new server", [call_frame()]),
    "CALL while authenticating": ("authenticating server", [call_frame()]),
    "CALL to a new client": ("new client", [call_frame()]),
    "response before auth": ("authenticating client", ['{"id": "x", "response": 1}']),
    "CALL without id": ("server", [text({"type": "CALL", "command": "f"})]),
    "CALL with int id": ("server", [call_frame(id=5)]),
    "CALL with empty id": ("server", [call_frame(id="")]),
    "CALL with 129-char id": ("server", [call_frame(id="i" * 129)]),
    "CALL without command": ("server", [text({"type": "CALL", "id": "c1"})]),
    "CALL with non-str command": ("server", [call_frame(command=5)]),
    "CALL with null command": ("server", [call_frame(command=None)]),
    "CALL args a dict": ("server", [call_frame(args={})]),
    "CALL args a str": ("server", [call_frame(args="x")]),
    "CALL args null": ("server", [call_frame(args=None)]),
    "CALL kwargs a list": ("server", [call_frame(kwargs=[])]),
    "CALL kwargs null": ("server", [call_frame(kwargs=None)]),
    "answer to an unknown id": ("client", ['{"id": "nope", "response": 1}']),
    "error to an unknown id": ("client", ['{"id": "nope", "error": {"type": "E"}}']),
    "answer with an int id": ("client", ['{"id": 5, "response": 1}']),
    "answer to a call received": ("server", [call_frame(), '{"id": "c1", "response": 1}']),
    "binary frame without header": ("server", [b"\x00\x01"]),
    "binary frame after the last chunk": ("server", [MEDIA_CALL, header(), b"x", b"y"]),
    "text frame where a chunk was expected": (
        "server",
        [MEDIA_CALL, header(), call_frame(id="c2")],
    ),
    "two headers in a row": ("server", [MEDIA_CALL, header(last=False), header(index=1)]),
    "chunk for an unknown request": ("server", [MEDIA_CALL, header(request="zzz")]),
    "chunk for a finished request": ("server", [MEDIA_CALL, header(), b"x", header()]),
    "chunk with no request": ("server", [header(request=None)]),
    "chunk for unknown media": ("server", [MEDIA_CALL, header(media="other")]),
    "chunk with int media id": ("server", [MEDIA_CALL, header(media=0)]),
    "chunk out of order": ("server", [MEDIA_CALL, header(index=1)]),
    "chunk index repeated": ("server", [MEDIA_CALL, header(last=False), b"x", header(index=0)]),
    "chunk index a str": ("server", [MEDIA_CALL, header(index="0")]),
    "duplicate id while media is pending": ("server", [MEDIA_CALL, MEDIA_CALL]),
    "duplicate id without media while media is pending": ("server", [MEDIA_CALL, call_frame()]),
    "frame over max_frame_bytes": (
        "small server",
        [text({"type": "REGISTER", "name": "x" * 1100})],
    ),
    "multibyte frame over max_frame_bytes": (
        "small server",
        [text({"type": "REGISTER", "name": "é" * 700})],
    ),
    "chunk over max_frame_bytes": ("small server", [MEDIA_CALL, header(), b"x" * 1025]),
    "REGISTER before the key": ("new server", [text({"type": "REGISTER", "name": "f"})]),
    "REGISTER with empty name": ("server", [text({"type": "REGISTER", "name": ""})]),
    "REGISTER with int name": ("server", [text({"type": "REGISTER", "name": 5})]),
    "REGISTER to a client": ("client", [text({"type": "REGISTER", "name": "f"})]),
    "hello with an int key": ("new server", ['{"key": 5, "v": 8}']),
    "hello with a str version": ("new server", ['{"key": "k", "v": "8"}']),
    "a second hello": ("authenticating server", ['{"key": "k", "v": 8}']),
    "hello to an open server": ("server", ['{"key": "k", "v": 8}']),
    "auth reply to an open client": ("client", ['{"auth": "OK", "priv": "client"}']),
    "auth reply before the hello": ("new client", ['{"auth": "OK", "priv": "client"}']),
    "auth error to a server": ("server", ['{"error": "bad key"}']),
}


@pytest.mark.parametrize(("kind", "frames"), BAD_FRAMES.values(), ids=list(BAD_FRAMES))
def test_bad_frames_are_remote_protocol_errors(kind: str, frames: list[Frame]) -> None:
    connection = receiver(kind)
    *good, bad = frames
    for frame in good:
        connection.receive_frame(frame)
    with pytest.raises(RemoteProtocolError):
        connection.receive_frame(bad)


@pytest.mark.parametrize(
    "frame",
    ["x" * 1025, text({"type": "REGISTER", "name": "x" * 1100})],
    ids=["junk", "valid JSON"],
)
def test_an_oversized_frame_is_frame_too_large(frame: str) -> None:
    with pytest.raises(FrameTooLarge):
        receiver("small server").receive_frame(frame)
    assert issubclass(FrameTooLarge, RemoteProtocolError)


def test_a_frame_at_max_frame_bytes_is_read() -> None:
    server = receiver("small server")
    size = 1024 - len(text({"type": "REGISTER", "name": ""}))
    frame = text({"type": "REGISTER", "name": "x" * size})
    assert len(frame.encode()) == 1024
    server.receive_frame(frame)
    assert server.events_received() == [Register("x" * size)]


# -- abandon and close -----------------------------------------------------------------


def test_abandon_makes_a_late_answer_ignored() -> None:
    client, server = open_pair()
    call = call_on(client, server)
    client.abandon(call.id)
    client.abandon(call.id)  # twice: no-op
    client.abandon("never-sent")  # unknown: no-op
    assert client.pending_calls == 0
    server.send_response(call.id, "late")
    assert relay(server, client) == []
    later = call_on(client, server)
    server.send_error(later.id, ValueError("x"))
    assert len(relay(server, client)) == 1


def test_abandon_makes_a_late_answer_with_media_ignored() -> None:
    client, server = open_pair()
    call = call_on(client, server)
    client.abandon(call.id)
    server.send_response(call.id, BlobMedia("a/b", b"late"))
    assert relay(server, client) == []
    later = call_on(client, server)
    server.send_response(later.id, 1)
    assert relay(server, client) == [Response(later.id, 1)]


def test_abandon_while_the_answer_media_is_arriving() -> None:
    client, server = open_pair()
    call = call_on(client, server)
    server.send_response(call.id, b"x" * (CHUNK_SIZE + 1))
    first, *rest = server.frames_to_send()
    client.receive_frame(first)
    client.abandon(call.id)
    for frame in rest:
        client.receive_frame(frame)
    assert client.events_received() == []


def test_receive_close_returns_the_pending_call_ids() -> None:
    client, server = open_pair()
    first = call_on(client, server)
    second = client.send_call("g", [b"media"], {})
    third = client.send_call("h", [], {})
    server.send_response(first.id, 1)
    relay(server, client)
    assert client.receive_close() == [second, third]
    assert client.state is State.CLOSED
    assert client.pending_calls == 0
    assert client.receive_close() == []


def test_receive_close_mid_chunk_forgets_the_partial_message() -> None:
    _, server = open_pair()
    server.receive_frame(MEDIA_CALL)
    server.receive_frame(header())
    assert server.receive_close() == []
    server.receive_frame(b"x")  # ignored: closed
    assert server.events_received() == []


def test_a_late_answer_with_bad_media_entries_is_dropped_quietly() -> None:
    client, server = Connection(Role.CLIENT), Connection(Role.SERVER)
    client.send_hello(None)
    relay(client, server)
    server.accept("client", {})
    relay(server, client)
    call_id = client.send_call("slow", [], {})
    relay(client, server)
    client.abandon(call_id)
    bad = {
        "id": call_id,
        "response": None,
        "objects": [{"path": ["response"], "type": ["DataMedia"], "id": 7}],
    }
    client.receive_frame(orjson.dumps(bad).decode())
    assert client.events_received() == []
    assert client.state is State.OPEN


def test_only_a_frame_over_small_frame_is_decoded_with_the_collector_paused() -> None:
    client, server = open_pair()
    client.send_call("f", [GcProbe("small")], {})
    client.send_call("f", [GcProbe("x" * SMALL_FRAME)], {})
    small, big = relay(client, server)
    assert isinstance(small, Call)
    assert isinstance(big, Call)
    assert small.args[0].gc_was_running  # too few objects to matter: no pause
    assert not big.args[0].gc_was_running


def test_the_garbage_collector_is_paused_only_while_decoding_and_encoding() -> None:
    import gc

    big = "x" * (SMALL_FRAME + 1)  # a small frame is decoded without the pause
    client, server = Connection(Role.CLIENT), Connection(Role.SERVER)
    client.send_hello(None)
    relay(client, server)
    server.accept("client", {})
    relay(server, client)
    assert gc.isenabled()
    client.send_call("f", [1], {})
    client.send_call("f", [big], {})
    relay(client, server)
    assert gc.isenabled()
    gc.disable()
    try:
        client.send_call("f", [2, big], {})
        relay(client, server)
        assert not gc.isenabled()  # a caller's choice to disable it is kept
    finally:
        gc.enable()
    for broken in ("{broken", "{broken" + big):
        with pytest.raises(RemoteProtocolError):
            server.receive_frame(broken)
        assert gc.isenabled()
