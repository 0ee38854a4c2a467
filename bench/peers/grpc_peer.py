"""gRPC-Python "with conversion": protobuf messages <-> Item objects on both sides.

The .proto below is compiled at run time with grpcio-tools (``--python_out`` only) into
a temporary directory in each process; the service uses grpc's generic handlers, so no
``_pb2_grpc`` stubs are needed.  W3: the client converts Items to an ``ItemList``
message, the server converts it to Items, then back to a message, and the client
converts the reply to Items again.  Sync server (ThreadPoolExecutor) and sync stub.
"""

from __future__ import annotations

import importlib
import shutil
import sys
import tempfile
from concurrent import futures
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc

from peers.common import HOST, Item, Plan, Recorder, check_server_items, run_sync

PROTO = """
syntax = "proto3";
package tetherbench;
message EchoRequest { int64 i = 1; string s = 2; }
message EchoReply { int64 i = 1; string s = 2; }
message ItemMsg { int64 id = 1; string name = 2; repeated string tags = 3; }
message ItemList { repeated ItemMsg items = 1; }
"""
SERVICE = "tetherbench.Bench"


def load_messages() -> ModuleType:
    """Compile PROTO into a temp dir, import the generated module, remove the dir."""
    from grpc_tools import protoc

    out = Path(tempfile.mkdtemp(prefix="tether-bench-grpc-"))
    try:
        (out / "tetherbench.proto").write_text(PROTO)
        include = Path(protoc.__file__).parent / "_proto"
        rc = protoc.main(
            [
                "protoc",
                f"-I{out}",
                f"-I{include}",
                f"--python_out={out}",
                str(out / "tetherbench.proto"),
            ]
        )
        if rc != 0:
            raise RuntimeError(f"protoc failed with exit code {rc}")
        sys.path.insert(0, str(out))
        try:
            return importlib.import_module("tetherbench_pb2")
        finally:
            sys.path.remove(str(out))
    finally:
        shutil.rmtree(out, ignore_errors=True)


def _items_to_msg(pb2: ModuleType, items: list[Item]) -> Any:
    msg = pb2.ItemList()
    add = msg.items.add
    for it in items:
        add(id=it.id, name=it.name, tags=it.tags)
    return msg


def _msg_to_items(msg: Any) -> list[Item]:
    return [Item(m.id, m.name, list(m.tags)) for m in msg.items]


def serve(host: str, port: int) -> None:
    pb2 = load_messages()

    def echo(req: Any, context: grpc.ServicerContext) -> Any:
        return pb2.EchoReply(i=req.i, s=req.s)

    def roundtrip(req: Any, context: grpc.ServicerContext) -> Any:
        items = _msg_to_items(req)
        check_server_items(items, Item)
        return _items_to_msg(pb2, items)

    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Echo": grpc.unary_unary_rpc_method_handler(
                echo,
                request_deserializer=pb2.EchoRequest.FromString,
                response_serializer=pb2.EchoReply.SerializeToString,
            ),
            "Roundtrip": grpc.unary_unary_rpc_method_handler(
                roundtrip,
                request_deserializer=pb2.ItemList.FromString,
                response_serializer=pb2.ItemList.SerializeToString,
            ),
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"{host}:{port}")
    server.start()
    server.wait_for_termination()


def run_client(port: int, plan: Plan, rec: Recorder) -> None:
    pb2 = load_messages()
    with grpc.insecure_channel(f"{HOST}:{port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        echo_rpc = channel.unary_unary(
            f"/{SERVICE}/Echo",
            request_serializer=pb2.EchoRequest.SerializeToString,
            response_deserializer=pb2.EchoReply.FromString,
        )
        roundtrip_rpc = channel.unary_unary(
            f"/{SERVICE}/Roundtrip",
            request_serializer=pb2.ItemList.SerializeToString,
            response_deserializer=pb2.ItemList.FromString,
        )

        def echo(i: int, s: str) -> list[Any]:
            reply = echo_rpc(pb2.EchoRequest(i=i, s=s))
            return [reply.i, reply.s]

        def roundtrip(items: list[Item]) -> list[Item]:
            return _msg_to_items(roundtrip_rpc(_items_to_msg(pb2, items)))

        run_sync(plan, rec, echo, roundtrip, Item)
