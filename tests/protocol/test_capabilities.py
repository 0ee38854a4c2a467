"""Capabilities through the sans-I/O Connection: signed out, checked in, updates back, pushes."""

from __future__ import annotations

import datetime as dt

import orjson
import pytest

from tether.codec import BlobMedia, PortableRegistry
from tether.codec.capability import (
    ANY,
    Capability,
    apply_updates,
    collect_updates,
    scope_key,
    unwrap_capability,
)
from tether.codec.capability_wire import CapabilitySession, HolderWire, Signer, SigningWire
from tether.errors import (
    InsecureJelly,
    LocalProtocolError,
    PermissionDenied,
    RemoteError,
    RemoteProtocolError,
    SerializationError,
)
from tether.protocol import (
    Call,
    Connection,
    Event,
    Failure,
    Frame,
    Push,
    Rejected,
    Response,
    Role,
    State,
)

REGISTRY = PortableRegistry()
SIGNER = Signer(b"x" * 32)


class Box:
    def __init__(self, cap: object, label: str = "") -> None:
        self.cap = cap
        self.label = label


REGISTRY.register(Box, "caps.Box")


# -- helpers ---------------------------------------------------------------------------


def relay(source: Connection, target: Connection) -> list[Event]:
    for frame in source.frames_to_send():
        target.receive_frame(frame)
    return target.events_received()


def open_pair(
    *, trusted: bool = False, session: CapabilitySession | None = None
) -> tuple[Connection, Connection]:
    client = Connection(Role.CLIENT, registry=REGISTRY, capabilities=HolderWire())
    wire = SigningWire(SIGNER, session or CapabilitySession(b"s" * 16), trusted=trusted)
    server = Connection(Role.SERVER, registry=REGISTRY, capabilities=wire)
    client.send_hello("k")
    relay(client, server)
    server.accept("client", {})
    relay(server, client)
    assert client.state is server.state is State.OPEN
    return client, server


def text(message: object) -> str:
    return orjson.dumps(message).decode()


def given_by_server(
    client: Connection, server: Connection, *scopes: list[object]
) -> list[Capability]:
    """Capabilities the client holds: the server returned them from a call."""
    client.send_call("get", [], {})
    [call] = relay(client, server)
    assert isinstance(call, Call)
    server.send_response(call.id, [Capability(scope) for scope in scopes])
    [response] = relay(server, client)
    assert isinstance(response, Response)
    assert response.capabilities == []  # none was sent in the call
    held = response.value
    assert type(held) is list
    assert all(type(cap) is Capability for cap in held)
    return held


def call_with(client: Connection, server: Connection, *args: object, **kwargs: object) -> Call:
    client.send_call("play", list(args), kwargs)
    [call] = relay(client, server)
    assert isinstance(call, Call)
    return call


def denied(client: Connection, server: Connection, value: object) -> tuple[Failure, Rejected]:
    """The client sends ``value``; the server must refuse that call with PermissionDenied."""
    client.send_call("play", [value], {})
    [rejected] = relay(client, server)
    assert isinstance(rejected, Rejected)
    [failure] = relay(server, client)
    assert isinstance(failure, Failure)
    assert type(failure.error) is PermissionDenied
    assert type(rejected.error) is PermissionDenied
    assert client.state is server.state is State.OPEN
    return failure, rejected


# -- capabilities in calls -------------------------------------------------------------


def test_a_capability_from_the_server_is_signed_and_held() -> None:
    client, server = open_pair()
    client.send_call("get", [], {})
    [call] = relay(client, server)
    assert isinstance(call, Call)
    server.send_response(call.id, Capability(["video", 7]).narrow(["hd"]))
    server_frames = [str(frame) for frame in server.frames_to_send()]
    [entry] = orjson.loads(server_frames[0])["objects"]
    assert entry["scope"] == ["video", 7, "hd"]  # narrow folded into the signed scope
    assert str(entry["mac"]).startswith("1.")
    assert "narrow" not in entry
    for frame in server_frames:
        client.receive_frame(frame)
    [response] = client.events_received()
    assert isinstance(response, Response)
    cap = response.value
    assert type(cap) is Capability
    assert cap.scope == ["video", 7, "hd"]
    assert cap.is_valid
    assert cap._mac == entry["mac"]


def test_a_call_carries_capabilities_to_the_server() -> None:
    client, server = open_pair()
    video, audio, doc = given_by_server(client, server, ["video", 7], ["audio", 1], ["doc", 3])
    call_id = client.send_call(
        "play", [video, Box(audio, "boxed"), [{"deep": video}]], {"doc": doc.narrow(["page", 2])}
    )
    assert client._sent_caps[call_id] == [video, audio, video, doc.narrow(["page", 2])]
    assert client._sent_caps[call_id][0] is video
    [call] = relay(client, server)
    assert isinstance(call, Call)
    first, box, nested = call.args
    assert type(first) is Capability
    assert first.scope == ["video", 7]
    assert first.is_valid
    assert isinstance(box, Box)
    assert box.label == "boxed"
    assert type(box.cap) is Capability
    assert box.cap.scope == ["audio", 1]
    assert nested == [{"deep": first}]
    page = call.kwargs["doc"]
    assert type(page) is Capability
    assert page.scope == ["doc", 3, "page", 2]
    assert unwrap_capability(page, ["doc", ANY, "page", ANY]) == ["doc", 3, "page", 2]
    assert [cap.scope for cap in call.capabilities] == [
        ["video", 7],
        ["audio", 1],
        ["video", 7],
        ["doc", 3, "page", 2],
    ]
    assert call.capabilities[1] is box.cap
    assert call.capabilities[3] is page
    assert call.capabilities[0] is first


def test_a_call_without_capabilities_records_none() -> None:
    client, server = open_pair()
    call_id = client.send_call("play", [1, "two"], {"x": [3]})
    assert call_id not in client._sent_caps
    call = relay(client, server)[0]
    assert isinstance(call, Call)
    assert call.capabilities == []


def test_an_unsendable_call_records_no_capabilities() -> None:
    client, server = open_pair()
    [cap] = given_by_server(client, server, ["video", 7])
    with pytest.raises(SerializationError, match="cannot serialize arguments to 'play'"):
        client.send_call("play", [cap, object()], {})
    assert client._sent_caps == {}
    assert client.frames_to_send() == []
    assert client.pending_calls == 0


def test_an_unsigned_capability_from_a_client_fails_only_that_call() -> None:
    client, server = open_pair()
    forged = Capability(["video", 7])
    failure, rejected = denied(client, server, forged)
    assert rejected.command == "play"
    assert "cannot receive arguments of 'play'" in str(failure.error)
    assert "unsigned capability at msg['args'][0]" in str(failure.error)
    assert failure.capabilities == [forged]
    assert failure.capabilities[0] is forged
    assert client.pending_calls == 0
    assert client._sent_caps == {}
    # The connection is still usable, with a real capability.
    [cap] = given_by_server(client, server, ["video", 7])
    call = call_with(client, server, cap)
    assert call.args[0] == cap


def test_a_forged_capability_inside_a_portable_object_fails_the_call() -> None:
    client, server = open_pair()
    denied(client, server, Box(Capability(["video", 7])))


@pytest.mark.parametrize(
    "change",
    [
        {"scope": ["video", 8]},
        {"scope": ["video"]},
        {"mac": "1." + "0" * 64},
        {"mac": 7},
        {"scope": []},
        {"scope": "video"},
        {"narrow": "x"},
    ],
    ids=["altered", "widened", "bad digest", "mac int", "empty", "scope str", "narrow str"],
)
def test_a_tampered_capability_from_a_client_fails_that_call(change: dict[str, object]) -> None:
    client, server = open_pair()
    [cap] = given_by_server(client, server, ["video", 7])
    client.send_call("play", [cap], {})
    [frame] = client.frames_to_send()
    message = orjson.loads(frame)
    message["objects"][0].update(change)
    server.receive_frame(text(message))
    [rejected] = server.events_received()
    assert isinstance(rejected, Rejected)
    assert type(rejected.error) is PermissionDenied
    [failure] = relay(server, client)
    assert isinstance(failure, Failure)
    assert type(failure.error) is PermissionDenied
    assert failure.capabilities == [cap]
    call = call_with(client, server, cap)  # the untouched capability still works
    assert call.args == [cap]


@pytest.mark.parametrize("mac", ["².0", "1.é"], ids=["superscript generation", "non-ASCII digest"])
def test_a_mac_that_breaks_the_verifier_fails_only_that_call(mac: str) -> None:
    client, server = open_pair()
    [cap] = given_by_server(client, server, ["video", 7])
    client.send_call("play", [cap], {})
    [frame] = client.frames_to_send()
    message = orjson.loads(frame)
    message["objects"][0]["mac"] = mac
    server.receive_frame(text(message))
    [rejected] = server.events_received()
    assert isinstance(rejected, Rejected)
    assert type(rejected.error) is PermissionDenied


def test_a_trusted_peer_may_mint_capabilities() -> None:
    client, server = open_pair(trusted=True)
    call = call_with(client, server, Capability(["video", 7]))
    [cap] = call.args
    assert type(cap) is Capability
    assert cap.is_valid
    assert call.capabilities == [cap]
    # ...but not Anvil's reserved "_" scopes.
    client.send_call("play", [Capability(["x", "internal"])], {})
    [frame] = client.frames_to_send()
    message = orjson.loads(frame)
    message["objects"][0]["scope"] = ["_", "internal"]
    server.receive_frame(text(message))
    [rejected] = server.events_received()
    assert isinstance(rejected, Rejected)
    assert type(rejected.error) is PermissionDenied
    assert "reserved scope '_'" in str(rejected.error)
    [failure] = relay(server, client)
    assert isinstance(failure, Failure)
    assert type(failure.error) is PermissionDenied


def test_a_capability_revoked_on_the_server_arrives_invalid() -> None:
    session = CapabilitySession(b"s" * 16)
    client, server = open_pair(session=session)
    [cap] = given_by_server(client, server, ["video", 7])
    session.generation += 1
    call = call_with(client, server, cap)
    [arrived] = call.args
    assert type(arrived) is Capability
    assert not arrived.is_valid
    with pytest.raises(PermissionDenied, match="invalidated"):
        unwrap_capability(arrived, ["video", ANY])
    # Sent back, it stays invalid for its holder.
    server.send_response(call.id, arrived)
    [response] = relay(server, client)
    assert isinstance(response, Response)
    returned = response.value
    assert type(returned) is Capability
    assert str(returned._mac).startswith("0.")
    assert returned.is_valid  # the client cannot tell; the server can
    again = call_with(client, server, returned)
    assert type(again.args[0]) is Capability
    assert not again.args[0].is_valid


def test_a_capability_for_another_session_is_refused() -> None:
    client, server = open_pair()
    [cap] = given_by_server(client, server, ["video", 7])
    other_client, other_server = open_pair(session=CapabilitySession(b"t" * 16))
    failure, _ = denied(other_client, other_server, cap)
    assert "does not verify" in str(failure.error)


def test_the_echo_call_signs_the_narrowed_scope() -> None:
    client, server = open_pair()
    [cap] = given_by_server(client, server, ["video", 7])
    client.send_call("anvil.private.echo", [cap.narrow(["x"])], {})
    assert relay(client, server) == []
    [response] = relay(server, client)
    assert isinstance(response, Response)
    echoed = response.value
    assert type(echoed) is Capability
    assert echoed.scope == ["video", 7, "x"]
    assert echoed._narrow == []  # now signed over the full scope
    assert response.capabilities == [cap.narrow(["x"])]


def test_invalidating_the_holder_wire_invalidates_what_the_client_read() -> None:
    client, server = open_pair()
    wire = client.capabilities
    assert isinstance(wire, HolderWire)
    [before] = given_by_server(client, server, ["video", 7])
    narrowed = before.narrow(["x"])
    wire.invalidate()
    assert not before.is_valid
    assert not narrowed.is_valid
    [after] = given_by_server(client, server, ["video", 7])
    assert after.is_valid
    # The server decides: the invalidated copy is still sent and still verifies there.
    call = call_with(client, server, before)
    assert type(call.args[0]) is Capability
    assert call.args[0].is_valid


# -- updates in answers ----------------------------------------------------------------


def test_updates_go_back_in_the_response() -> None:
    client, server = open_pair()
    job, other = given_by_server(client, server, ["job", 1], ["job", 2])
    seen: list[object] = []
    job.set_update_handler(seen.append)
    call_id = client.send_call("run", [job, other, job], {})
    [call] = relay(client, server)
    assert isinstance(call, Call)
    [arrived, *_] = call.args
    assert type(arrived) is Capability
    arrived.send_update({"progress": 10})
    arrived.send_update({"done": True})
    updates = collect_updates(call.capabilities)
    assert updates == {'["job", 1]': {"progress": 10, "done": True}}
    server.send_response(call.id, "ok", updates=updates)
    [frame] = server.frames_to_send()
    assert orjson.loads(frame)["capUpdates"] == updates
    client.receive_frame(frame)
    [response] = client.events_received()
    assert response == Response(call_id, "ok")
    assert isinstance(response, Response)
    assert response.updates == {'["job", 1]': {"progress": 10, "done": True}}
    assert response.capabilities == [job, other, job]
    assert all(c is s for c, s in zip(response.capabilities, (job, other, job), strict=True))
    assert call_id not in client._sent_caps
    applied = apply_updates(response.capabilities, response.updates)
    assert applied == [(job, {"progress": 10, "done": True})]
    assert seen == [{"progress": 10, "done": True}]


def test_updates_for_a_narrowed_capability_use_its_full_scope() -> None:
    client, server = open_pair()
    [doc] = given_by_server(client, server, ["doc", 3])
    page = doc.narrow(["page", {"n": 2}])
    call = call_with(client, server, page)
    [arrived] = call.args
    assert type(arrived) is Capability
    arrived.send_update("seen")
    server.send_response(call.id, None, updates=collect_updates(call.capabilities))
    [response] = relay(server, client)
    assert isinstance(response, Response)
    assert response.updates == {'["doc", 3, "page", {"n": 2}]': "seen"}
    assert apply_updates(response.capabilities, response.updates) == [(page, "seen")]
    assert doc._take_update() is None


@pytest.mark.parametrize("updates", [None, {}], ids=["None", "empty"])
def test_no_updates_write_no_cap_updates(updates: dict[str, object] | None) -> None:
    client, server = open_pair()
    [cap] = given_by_server(client, server, ["job", 1])
    call = call_with(client, server, cap)
    server.send_response(call.id, 1, updates=updates)
    [frame] = server.frames_to_send()
    assert "capUpdates" not in orjson.loads(frame)
    client.receive_frame(frame)
    [response] = client.events_received()
    assert isinstance(response, Response)
    assert response.updates is None
    assert response.capabilities == [cap]


def test_updates_with_rich_values_survive() -> None:
    client, server = open_pair()
    job, extra = given_by_server(client, server, ["job", 1], ["extra"])
    call = call_with(client, server, job)
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    update = {
        "when": when,
        "box": Box("x", "label"),
        "big": 2**70,
        "nan": float("nan"),
        "day": dt.date(2026, 1, 2),
        "granted": Capability(["extra"]),
    }
    server.send_response(call.id, None, updates={scope_key(["job", 1]): update})
    [response] = relay(server, client)
    assert isinstance(response, Response)
    assert response.updates is not None
    received = response.updates['["job", 1]']
    assert type(received) is dict
    assert received["when"] == when
    assert isinstance(received["box"], Box)
    assert received["box"].label == "label"
    assert received["big"] == 2**70
    assert received["nan"] != received["nan"]
    assert received["day"] == dt.date(2026, 1, 2)
    granted = received["granted"]
    assert type(granted) is Capability
    assert granted == extra
    assert granted._mac == extra._mac
    assert response.capabilities == [job]  # capabilities in the reply are not "sent"


def test_an_unsendable_update_queues_nothing() -> None:
    client, server = open_pair()
    [cap] = given_by_server(client, server, ["job", 1])
    call = call_with(client, server, cap)
    with pytest.raises(SerializationError, match="cannot serialize return value"):
        server.send_response(call.id, "ok", updates={'["job", 1]': object()})
    assert server.frames_to_send() == []


def test_cap_updates_that_are_not_a_dict_are_ignored() -> None:
    client, server = open_pair()
    [cap] = given_by_server(client, server, ["job", 1])
    call_id = client.send_call("run", [cap], {})
    client.frames_to_send()
    client.receive_frame(text({"id": call_id, "response": 1, "capUpdates": [["job", 1]]}))
    [response] = client.events_received()
    assert isinstance(response, Response)
    assert response.value == 1
    assert response.updates is None
    assert response.capabilities == [cap]


def test_error_answers_carry_the_capabilities_sent() -> None:
    client, server = open_pair()
    [cap] = given_by_server(client, server, ["job", 1])
    call = call_with(client, server, Box(cap))
    server.send_error(call.id, ValueError("no"))
    [failure] = relay(server, client)
    assert isinstance(failure, Failure)
    assert isinstance(failure.error, RemoteError)
    assert failure.capabilities == [cap]
    assert failure.capabilities[0] is cap
    assert failure.updates is None
    assert client._sent_caps == {}


def test_an_undecodable_answer_carries_the_capabilities_sent() -> None:
    client, server = open_pair()
    [cap] = given_by_server(client, server, ["job", 1])
    call_id = client.send_call("run", [cap], {})
    client.frames_to_send()
    client.receive_frame(
        text(
            {
                "id": call_id,
                "response": None,
                "objects": [{"path": ["response"], "type": ["ValueType"], "typeName": "nope"}],
            }
        )
    )
    [failure] = client.events_received()
    assert isinstance(failure, Failure)
    assert isinstance(failure.error, InsecureJelly)
    assert failure.capabilities == [cap]
    assert client._sent_caps == {}


def test_an_answer_with_bad_media_forgets_the_capabilities_sent() -> None:
    client, server = open_pair()
    [cap] = given_by_server(client, server, ["job", 1])
    call_id = client.send_call("run", [cap], {})
    client.frames_to_send()
    bad_media = {"path": ["response"], "type": ["DataMedia"], "id": 5}
    client.receive_frame(text({"id": call_id, "response": None, "objects": [bad_media]}))
    [failure] = client.events_received()
    assert isinstance(failure, Failure)
    assert isinstance(failure.error, SerializationError)
    assert client.pending_calls == 0
    assert client._sent_caps == {}
    assert failure.capabilities == [cap]


def test_a_forged_capability_in_a_clients_answer_is_a_failure_on_the_server() -> None:
    client, server = open_pair()
    granted = Capability(["job", 1])
    call_id = server.send_call("on_client", [granted], {})
    assert server._sent_caps[call_id] == [granted]
    [call] = relay(server, client)
    assert isinstance(call, Call)
    [held] = call.args
    assert type(held) is Capability
    assert call.capabilities == [held]
    client.send_response(call.id, Capability(["job", 2]))  # minted by the client
    [failure] = relay(client, server)
    assert isinstance(failure, Failure)
    assert type(failure.error) is PermissionDenied
    assert failure.capabilities == [granted]
    assert failure.capabilities[0] is granted
    assert server._sent_caps == {}
    # A capability the client was given comes back fine, narrowed or not.
    server.send_call("on_client", [], {})
    [call] = relay(server, client)
    assert isinstance(call, Call)
    client.send_response(call.id, held.narrow(["x"]))
    [response] = relay(client, server)
    assert isinstance(response, Response)
    assert response.value == Capability(["job", 1, "x"])


# -- forgetting sent capabilities ------------------------------------------------------


def test_abandon_forgets_the_capabilities_sent() -> None:
    client, server = open_pair()
    [cap] = given_by_server(client, server, ["job", 1])
    call_id = client.send_call("run", [cap], {})
    kept = client.send_call("run", [cap], {})
    assert set(client._sent_caps) == {call_id, kept}
    client.abandon(call_id)
    assert set(client._sent_caps) == {kept}
    client.abandon(call_id)  # twice is harmless
    client.abandon("never-sent")
    assert set(client._sent_caps) == {kept}
    # A late answer with updates is dropped.
    calls = relay(client, server)
    assert [type(call) for call in calls] == [Call, Call]
    for call in calls:
        assert isinstance(call, Call)
        server.send_response(call.id, None, updates={'["job", 1]': call.id})
    [response] = relay(server, client)
    assert isinstance(response, Response)
    assert response.id == kept
    assert response.capabilities == [cap]
    assert client._sent_caps == {}


def test_receive_close_forgets_the_capabilities_sent() -> None:
    client, server = open_pair()
    [cap] = given_by_server(client, server, ["job", 1])
    call_id = client.send_call("run", [cap], {})
    assert client._sent_caps == {call_id: [cap]}
    assert client.receive_close() == [call_id]
    assert client._sent_caps == {}


# -- live pushes -----------------------------------------------------------------------


def test_a_push_reaches_the_client() -> None:
    client, server = open_pair()
    when = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)
    server.send_push('["job", 1]', {"progress": 50, "at": when, "box": Box(None, "b")})
    [frame] = server.frames_to_send()
    message = orjson.loads(frame)
    assert message["type"] == "PUSH"
    assert message["key"] == '["job", 1]'
    client.receive_frame(frame)
    [push] = client.events_received()
    assert isinstance(push, Push)
    assert push.key == '["job", 1]'
    assert push.error is None
    update = push.update
    assert type(update) is dict
    assert update["progress"] == 50
    assert update["at"] == when
    assert isinstance(update["box"], Box)
    assert update["box"].label == "b"


@pytest.mark.parametrize("update", [None, "text", [1, 2], 2**70], ids=repr)
def test_any_update_may_be_pushed(update: object) -> None:
    client, server = open_pair()
    server.send_push("k", update)
    assert relay(server, client) == [Push("k", update)]


def test_a_push_may_carry_a_capability() -> None:
    client, server = open_pair()
    server.send_push("k", {"next": Capability(["job", 2])})
    [push] = relay(server, client)
    assert isinstance(push, Push)
    assert type(push.update) is dict
    cap = push.update["next"]
    assert type(cap) is Capability
    assert cap.is_valid
    call = call_with(client, server, cap)  # a signed capability the client may use
    assert call.args == [Capability(["job", 2])]


def test_a_fan_out_encodes_a_push_once_per_dialect() -> None:
    _, first = open_pair()
    second_client, second = open_pair()
    shared: dict[bool, Frame] = {}
    first.send_push("k", {"n": 1}, shared)
    assert list(shared) == [first.compact]
    [frame] = first.frames_to_send()
    second.send_push("k", {"n": 999}, shared)
    assert second.frames_to_send() == [frame]  # the frame encoded for the first, as is
    second_client.receive_frame(frame)
    assert second_client.events_received() == [Push("k", {"n": 1})]


def test_a_push_holding_a_capability_is_encoded_per_connection() -> None:
    _, first = open_pair()
    _, second = open_pair(session=CapabilitySession(b"t" * 16))
    shared: dict[bool, Frame] = {}
    update = {"cap": Capability(["job", 3])}
    first.send_push("k", update, shared)
    second.send_push("k", update, shared)
    assert shared == {}
    [one] = first.frames_to_send()
    [two] = second.frames_to_send()
    assert one != two  # signed for each connection's session


def test_only_an_open_server_pushes() -> None:
    client, server = open_pair()
    with pytest.raises(LocalProtocolError, match="not allowed for a client in state open"):
        client.send_push("k", 1)
    fresh = Connection(Role.SERVER, capabilities=SigningWire(SIGNER, CapabilitySession()))
    with pytest.raises(LocalProtocolError, match="not allowed for a server in state new"):
        fresh.send_push("k", 1)
    server.receive_close()
    with pytest.raises(LocalProtocolError, match="not allowed for a server in state closed"):
        server.send_push("k", 1)
    assert client.frames_to_send() == []
    assert fresh.frames_to_send() == []
    assert server.frames_to_send() == []


@pytest.mark.parametrize(
    "update",
    [
        BlobMedia("image/png", b"png"),
        {"a": [BlobMedia("a/b", b"")]},
        b"raw bytes",
    ],
    ids=["media", "nested empty media", "bytes"],
)
def test_a_push_with_media_is_refused_and_queues_nothing(update: object) -> None:
    _, server = open_pair()
    server.send_call("earlier", [], {})
    with pytest.raises(SerializationError, match="an update with Media cannot be pushed"):
        server.send_push("k", update)
    [frame] = server.frames_to_send()  # what was queued before is kept
    assert orjson.loads(frame)["command"] == "earlier"


def test_an_unsendable_push_queues_nothing() -> None:
    _, server = open_pair()
    with pytest.raises(SerializationError, match=r"cannot serialize .* at msg\['update'\]"):
        server.send_push("k", object())
    assert server.frames_to_send() == []


def test_a_push_to_a_server_is_a_protocol_error() -> None:
    _, server = open_pair()
    with pytest.raises(RemoteProtocolError, match="unknown message type 'PUSH'"):
        server.receive_frame(text({"type": "PUSH", "key": "k", "update": 1}))


def test_a_push_before_authentication_is_a_protocol_error() -> None:
    client = Connection(Role.CLIENT, capabilities=HolderWire())
    client.send_hello("k")
    with pytest.raises(RemoteProtocolError, match="PUSH before authentication"):
        client.receive_frame(text({"type": "PUSH", "key": "k", "update": 1}))


MEDIA_ENTRY = {"path": ["update"], "type": ["DataMedia"], "id": "m", "mime-type": "a/b"}


@pytest.mark.parametrize(
    ("push", "message"),
    [
        ({"key": 5, "update": 1}, "PUSH needs a string key"),
        ({"key": None, "update": 1}, "PUSH needs a string key"),
        ({"update": 1}, "PUSH needs a string key"),
        ({"key": "k"}, "PUSH needs an update"),
        ({"key": "k", "update": None, "objects": [MEDIA_ENTRY]}, "PUSH cannot carry media"),
    ],
    ids=["int key", "null key", "no key", "no update", "media"],
)
def test_bad_pushes_are_protocol_errors(push: dict[str, object], message: str) -> None:
    client, _ = open_pair()
    with pytest.raises(RemoteProtocolError, match=message):
        client.receive_frame(text({"type": "PUSH", **push}))
    assert client.events_received() == []


def test_a_push_with_a_malformed_media_entry_is_a_protocol_error() -> None:
    client, _ = open_pair()
    bad = {"path": ["update"], "type": ["DataMedia"], "id": 5}
    with pytest.raises(RemoteProtocolError):
        client.receive_frame(text({"type": "PUSH", "key": "k", "update": None, "objects": [bad]}))


@pytest.mark.parametrize(
    ("objects", "error"),
    [
        ([{"path": ["update"], "type": ["ValueType"], "typeName": "nope"}], InsecureJelly),
        ([{"path": ["update"], "type": ["Capability"], "scope": "x"}], SerializationError),
        (
            [{"path": ["update"], "type": ["Capability"], "scope": ["a"], "mac": 1}],
            SerializationError,
        ),
        ([{"path": ["other"], "type": ["Float"], "value": "NaN"}], SerializationError),
        ("not a list", SerializationError),
    ],
    ids=["unregistered class", "bad capability", "bad mac", "outside the update", "objects"],
)
def test_an_unreadable_push_is_an_event_with_its_error(
    objects: object, error: type[Exception]
) -> None:
    client, _ = open_pair()
    client.receive_frame(text({"type": "PUSH", "key": "k", "update": None, "objects": objects}))
    [push] = client.events_received()
    assert isinstance(push, Push)
    assert push.key == "k"
    assert push.update is None
    assert type(push.error) is error
    assert client.state is State.OPEN


# -- connections without capabilities --------------------------------------------------


def plain_pair() -> tuple[Connection, Connection]:
    client = Connection(Role.CLIENT, registry=REGISTRY)
    server = Connection(Role.SERVER, registry=REGISTRY)
    client.send_hello("k")
    relay(client, server)
    server.accept("client", {})
    relay(server, client)
    return client, server


def test_a_connection_without_capabilities_refuses_to_send_them() -> None:
    client, server = plain_pair()
    assert client.capabilities is None
    with pytest.raises(SerializationError, match="cannot serialize arguments to 'play'"):
        client.send_call("play", [Capability(["video", 7])], {})
    with pytest.raises(SerializationError, match="cannot serialize arguments"):
        client.send_call("play", [], {"box": Box(Capability(["video", 7]))})
    client.send_call("get", [], {})
    [call] = relay(client, server)
    assert isinstance(call, Call)
    with pytest.raises(SerializationError, match="cannot serialize return value"):
        server.send_response(call.id, Capability(["video", 7]))
    with pytest.raises(SerializationError, match=r"cannot serialize .*Capability"):
        server.send_push("k", Capability(["video", 7]))
    assert client.frames_to_send() == server.frames_to_send() == []
    assert client._sent_caps == server._sent_caps == {}


def test_a_connection_without_capabilities_refuses_to_read_them() -> None:
    client, server = open_pair()
    _, plain_server = plain_pair()
    [cap] = given_by_server(client, server, ["video", 7])
    client.send_call("play", [cap], {})
    [frame] = client.frames_to_send()
    plain_server.receive_frame(frame)
    [rejected] = plain_server.events_received()
    assert isinstance(rejected, Rejected)
    assert type(rejected.error) is SerializationError
    assert "unknown object type ['Capability']" in str(rejected.error)
