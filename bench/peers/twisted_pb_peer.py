"""Twisted Perspective Broker with ``pb.Copyable`` / ``pb.RemoteCopy`` items.

``PBItem`` is both Copyable (sent by copying its ``__dict__``) and RemoteCopy (rebuilt on
receipt), registered with ``pb.setUnjellyableForClass`` in both processes, so each side
gets real ``PBItem`` objects.  The client runs the default reactor in the main thread
and awaits ``callRemote`` Deferreds one at a time (``defer.ensureDeferred`` coroutine).
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet import reactor as _reactor
from twisted.spread import pb

from peers.common import HOST, Plan, Recorder, check_server_items, run_async


class PBItem(pb.Copyable, pb.RemoteCopy):
    def __init__(self, id: int, name: str, tags: list[str]) -> None:
        self.id = id
        self.name = name
        self.tags = tags

    def __repr__(self) -> str:
        return f"PBItem({self.id!r}, {self.name!r}, {self.tags!r})"


reactor: Any = _reactor  # the global reactor's type hides the IReactor* methods

pb.setUnjellyableForClass(PBItem, PBItem)  # type: ignore[no-untyped-call]


class BenchRoot(pb.Root):
    def remote_echo(self, i: int, s: str) -> list[Any]:
        return [i, s]

    def remote_roundtrip(self, items: list[PBItem]) -> list[PBItem]:
        check_server_items(items, PBItem)
        return items


def serve(host: str, port: int) -> None:
    factory = pb.PBServerFactory(BenchRoot())  # type: ignore[no-untyped-call]
    reactor.listenTCP(port, factory, interface=host)
    reactor.run()


def run_client(port: int, plan: Plan, rec: Recorder) -> None:
    failure: list[Any] = []

    async def main() -> None:
        factory = pb.PBClientFactory()  # type: ignore[no-untyped-call]
        reactor.connectTCP(HOST, port, factory)
        root = await factory.getRootObject()  # type: ignore[no-untyped-call]
        try:

            async def echo(i: int, s: str) -> Any:
                return await root.callRemote("echo", i, s)

            async def roundtrip(items: list[PBItem]) -> Any:
                return await root.callRemote("roundtrip", items)

            await run_async(plan, rec, echo, roundtrip, PBItem)
        finally:
            factory.disconnect()  # type: ignore[no-untyped-call]

    d = defer.ensureDeferred(main())
    d.addErrback(failure.append)
    d.addBoth(lambda _: reactor.stop())
    reactor.run()
    if failure:
        failure[0].raiseException()
