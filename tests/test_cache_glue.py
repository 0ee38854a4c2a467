"""tether._caches: the glue between a connection's Cacheable tables and whoever holds the
connection (the Outbox of call_remote, the ordered observe_* runner, stopped notices)."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

from tests.protocol.test_caches import PERSPECTIVE, Pond, open_pair, relay, show
from tether._caches import CacheHolder, CacheMessages, RemoteFuture, notify_stopped
from tether.errors import DeadReferenceError
from tether.protocol import CacheMessage, Connection


class Holder(CacheHolder):
    """A Peer or client, reduced to what its Outbox uses: a lock, a connection, pending
    futures, a loop; it counts the notices the Outbox asks for instead of making them."""

    def __init__(self, connection: Connection, loop: asyncio.AbstractEventLoop | None) -> None:
        self._guard = self.guard = threading.RLock()
        self.connection = connection
        self._pending = self.pending = {}
        self.loop = loop
        self.dead: str | None = None
        self.after = 0
        self._start_caches()
        self.outbox = self._outbox

    def _flush_from_any_thread_locked(self) -> None:
        pass  # the tests relay frames themselves

    def _event_loop(self) -> asyncio.AbstractEventLoop | None:
        return self.loop

    def _dead(self) -> str | None:
        return self.dead

    def _notify_stopped(self) -> None:
        self.after += 1


def owned() -> tuple[Connection, Connection, Pond]:
    client, server = open_pair()
    pond = Pond("ann")
    show(server, client, pond)
    return client, server, pond


def test_a_message_queued_while_another_thread_writes_goes_out_from_the_loop() -> None:
    client, server, pond = owned()
    loop = asyncio.new_event_loop()
    try:
        holder = Holder(server, loop)
        taken, release = threading.Event(), threading.Event()

        def writer() -> None:  # another thread holds the connection meanwhile
            with holder.guard:
                taken.set()
                release.wait(5)

        thread = threading.Thread(target=writer)
        thread.start()
        assert taken.wait(5)
        future = holder.outbox.observe(pond.observer, "add", ("bea",), {})
        assert list(holder.outbox.queue)  # queued, not waited for
        assert not holder.pending
        release.set()
        thread.join(5)
        loop.run_until_complete(asyncio.sleep(0))  # the loop sends the queue
        [call_id] = holder.pending
        assert holder.pending[call_id] is future
        [event] = relay(server, client)
        assert isinstance(event, CacheMessage)
        assert holder.after == 1
    finally:
        loop.close()


def test_a_dead_holder_fails_the_future_at_once() -> None:
    _, server, pond = owned()
    holder = Holder(server, None)
    holder.dead = "the connection of this mirror closed"
    future = holder.outbox.observe(pond.observer, "add", ("bea",), {})
    with pytest.raises(DeadReferenceError, match="closed"):
        future.result(0)


def test_call_remote_from_a_hook_of_the_same_connection_is_refused() -> None:
    _, server, pond = owned()
    holder = Holder(server, None)
    with holder.guard:
        server._writing += 1  # as while a message of this connection is written
        try:
            future = holder.outbox.observe(pond.observer, "add", ("bea",), {})
        finally:
            server._writing -= 1
    with pytest.raises(RuntimeError, match="writes a message"):
        future.result(0)
    assert not holder.pending


async def test_a_queue_for_a_holder_that_died_meanwhile_fails() -> None:
    _, server, pond = owned()
    holder = Holder(server, asyncio.get_running_loop())
    future = RemoteFuture()
    holder.outbox.queue.append((pond.observer, "add", ("bea",), {}, future))
    holder.dead = "the connection of this mirror closed"
    holder.outbox.send_queued()
    with pytest.raises(DeadReferenceError):
        future.result(0)
    assert holder.after == 1


def test_without_a_running_loop_what_is_queued_fails() -> None:
    _, server, pond = owned()
    closed = asyncio.new_event_loop()
    closed.close()
    for loop in (None, closed):
        holder = Holder(server, loop)
        future = RemoteFuture()
        holder.outbox.queue.append((pond.observer, "add", ("bea",), {}, future))
        holder.outbox.call_soon(holder.outbox.send_queued)
        with pytest.raises(DeadReferenceError, match="not running"):
            future.result(0)


async def test_an_unsendable_queued_message_fails_only_its_future() -> None:
    _, server, pond = owned()
    holder = Holder(server, asyncio.get_running_loop())
    bad, good = RemoteFuture(), RemoteFuture()
    holder.outbox.queue.append((pond.observer, "add", (object(),), {}, bad))
    holder.outbox.queue.append((pond.observer, "add", ("bea",), {}, good))
    holder.outbox.send_queued()
    with pytest.raises(Exception, match="cannot serialize"):
        bad.result(0)
    assert list(holder.pending.values()) == [good]
    assert pond.observers[0][0] is PERSPECTIVE


async def test_async_observe_methods_run_in_order_and_their_errors_are_answered() -> None:
    answers: list[tuple[str, object, BaseException | None]] = []
    runner = CacheMessages(lambda *answer: answers.append(answer))
    order: list[str] = []
    gate = asyncio.Event()

    async def slow(target: object, name: str) -> str:
        await gate.wait()
        order.append(name)
        return name

    async def fails(target: object) -> None:
        raise ValueError("no")

    def quick(target: object, name: str) -> str:
        order.append(name)
        return name

    runner.run(CacheMessage("1", None, slow, ["a"], {}))
    runner.run(CacheMessage("2", None, quick, ["b"], {}))
    runner.run(CacheMessage("3", None, fails, [], {}))
    assert order == []  # the async one holds the rest
    gate.set()
    for _ in range(10):
        await asyncio.sleep(0)
    assert order == ["a", "b"]
    assert [(a[0], a[1]) for a in answers] == [("1", "a"), ("2", "b"), ("3", None)]
    assert isinstance(answers[2][2], ValueError)


async def test_a_cancelled_async_observe_method_is_answered_as_cancelled() -> None:
    answers: list[tuple[str, object, BaseException | None]] = []
    runner = CacheMessages(lambda *answer: answers.append(answer))

    async def never(target: object) -> None:
        await asyncio.Event().wait()

    runner.run(CacheMessage("1", None, never, [], {}))
    await asyncio.sleep(0)
    [task] = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    task.cancel()
    for _ in range(5):
        await asyncio.sleep(0)
    assert answers[0][0] == "1"
    assert isinstance(answers[0][2], asyncio.CancelledError)


def test_a_stopped_observing_that_raises_is_logged_and_the_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[object] = []

    class Fails(Pond):
        def stopped_observing(self, perspective: object, observer: object) -> None:
            raise ValueError("no")

    class Counts(Pond):
        def stopped_observing(self, perspective: object, observer: object) -> None:
            calls.append(observer)

    first, second = Fails(), Counts()
    with caplog.at_level(logging.ERROR, logger="tether"):
        notify_stopped([(first, None, "o1"), (second, None, "o2")])  # type: ignore[list-item]
    assert calls == ["o2"]
    assert "Fails.stopped_observing raised" in caplog.text


async def test_on_the_loop_a_message_goes_out_at_once_and_its_future_can_be_awaited() -> None:
    client, server, pond = owned()
    holder = Holder(server, asyncio.get_running_loop())
    future = holder.outbox.observe(pond.observer, "add", ("bea",), {})
    [call_id] = holder.pending
    [event] = relay(server, client)
    assert isinstance(event, CacheMessage)
    holder.pending.pop(call_id).set_result(2)
    assert await future == 2
    # a release owed on this connection is notified from the loop, not from here
    server.caches.stopped.append((pond, PERSPECTIVE, pond.observer))
    holder.outbox.observe(pond.observer, "add", ("cid",), {})
    assert holder.after == 0
    await asyncio.sleep(0)
    assert holder.after == 1


def test_a_sync_observe_method_that_raises_is_answered_with_its_error() -> None:
    answers: list[tuple[str, object, BaseException | None]] = []
    runner = CacheMessages(lambda *answer: answers.append(answer))

    def fails(target: object) -> None:
        raise KeyError("gone")

    runner.run(CacheMessage("1", None, fails, [], {}))
    runner.run(CacheMessage("2", None, lambda target: "ok", [], {}))
    assert [(a[0], a[1], type(a[2])) for a in answers] == [
        ("1", None, KeyError),
        ("2", "ok", type(None)),
    ]
