"""The session stores: every store behaves the same; SQLite also survives a restart."""

from __future__ import annotations

import asyncio
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import TIMEOUT
from tether.runtime.stores import MemoryStore, SqliteStore, Store, open_store


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    made: Store = MemoryStore() if request.param == "memory" else SqliteStore(tmp_path / "t.db")
    await made.open()
    try:
        yield made
    finally:
        await made.close()


@pytest.fixture
def sqlite_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "t.db"


async def test_the_secret_is_the_first_one_stored(store: Store) -> None:
    async with asyncio.timeout(TIMEOUT):
        assert await store.secret(b"a" * 32) == b"a" * 32
        assert await store.secret(b"b" * 32) == b"a" * 32


async def test_an_unknown_session_is_none(store: Store) -> None:
    async with asyncio.timeout(TIMEOUT):
        assert await store.load_session("nobody") is None


async def test_a_new_session_is_empty_at_generation_one(store: Store) -> None:
    async with asyncio.timeout(TIMEOUT):
        await store.create_session("s", 100.0)
        record = await store.load_session("s")
        assert record is not None
        assert record.data == {}
        assert record.generation == 1
        assert record.last_seen == 100.0


async def test_a_save_that_reaches_the_store_first_is_kept_by_the_create(store: Store) -> None:
    """A fresh session's first save may overtake its creation (an HTTP endpoint makes the
    session while it runs): creating it then keeps what was saved."""
    async with asyncio.timeout(TIMEOUT):
        await store.save_session("s", {"a": b"1"}, (), 110.0)
        await store.create_session("s", 120.0)
        record = await store.load_session("s")
        assert record is not None
        assert (record.data, record.generation, record.last_seen) == ({"a": b"1"}, 1, 110.0)


async def test_saves_change_only_their_own_keys(store: Store) -> None:
    async with asyncio.timeout(TIMEOUT):
        await store.create_session("s", 100.0)
        await store.save_session("s", {"a": b"1", "b": b"2", "c": b"3"}, (), 101.0)
        await store.save_session("s", {"a": b"10"}, (), 102.0)
        await store.save_session("s", {"d": b"4"}, ("b", "missing"), 103.0)
        record = await store.load_session("s")
        assert record is not None
        assert record.data == {"a": b"10", "c": b"3", "d": b"4"}
        assert record.last_seen == 103.0


async def test_a_loaded_record_is_a_copy(store: Store) -> None:
    async with asyncio.timeout(TIMEOUT):
        await store.save_session("s", {"a": b"1"}, (), 100.0)
        record = await store.load_session("s")
        assert record is not None
        record.data["a"] = b"changed"
        record.data["b"] = b"added"
        again = await store.load_session("s")
        assert again is not None
        assert again.data == {"a": b"1"}


async def test_saving_recreates_a_missing_session(store: Store) -> None:
    async with asyncio.timeout(TIMEOUT):
        await store.save_session("never-made", {"a": b"1"}, ("b",), 100.0)
        record = await store.load_session("never-made")
        assert record is not None
        assert (record.data, record.generation, record.last_seen) == ({"a": b"1"}, 1, 100.0)

        await store.create_session("s", 100.0)
        await store.save_session("s", {"old": b"x"}, (), 100.0)
        assert await store.purge_sessions(150.0) == 2
        await store.save_session("s", {"new": b"y"}, (), 200.0)
        record = await store.load_session("s")
        assert record is not None
        assert (record.data, record.generation, record.last_seen) == ({"new": b"y"}, 1, 200.0)


async def test_touch_raises_last_seen_but_never_lowers_it(store: Store) -> None:
    async with asyncio.timeout(TIMEOUT):
        await store.create_session("s", 100.0)
        await store.touch_session("s", 150.0)
        record = await store.load_session("s")
        assert record is not None
        assert record.last_seen == 150.0
        await store.touch_session("s", 120.0)
        await store.save_session("s", {"a": b"1"}, (), 110.0)
        record = await store.load_session("s")
        assert record is not None
        assert record.last_seen == 150.0


async def test_touching_or_renumbering_a_missing_session_makes_nothing(store: Store) -> None:
    async with asyncio.timeout(TIMEOUT):
        await store.touch_session("ghost", 100.0)
        await store.set_generation("ghost", 3)
        assert await store.load_session("ghost") is None


async def test_the_generation_is_kept(store: Store) -> None:
    async with asyncio.timeout(TIMEOUT):
        await store.create_session("s", 100.0)
        await store.set_generation("s", 7)
        await store.save_session("s", {"a": b"1"}, (), 101.0)
        record = await store.load_session("s")
        assert record is not None
        assert record.generation == 7


async def test_delete_forgets_the_session_and_its_data(store: Store) -> None:
    async with asyncio.timeout(TIMEOUT):
        await store.create_session("s", 100.0)
        await store.save_session("s", {"a": b"1"}, (), 101.0)
        await store.create_session("other", 100.0)
        await store.delete_session("s")
        await store.delete_session("never-made")
        assert await store.load_session("s") is None
        await store.create_session("s", 200.0)
        record = await store.load_session("s")
        assert record is not None
        assert record.data == {}
        assert await store.load_session("other") is not None


async def test_purge_removes_only_the_sessions_idle_before_the_cutoff(store: Store) -> None:
    async with asyncio.timeout(TIMEOUT):
        await store.create_session("old", 100.0)
        await store.save_session("old", {"a": b"1"}, (), 100.0)
        await store.create_session("older", 50.0)
        await store.create_session("at-cutoff", 200.0)
        await store.create_session("touched", 100.0)
        await store.touch_session("touched", 300.0)
        assert await store.purge_sessions(200.0) == 2
        assert await store.load_session("old") is None
        assert await store.load_session("older") is None
        assert await store.load_session("at-cutoff") is not None
        assert await store.load_session("touched") is not None
        assert await store.purge_sessions(200.0) == 0
        await store.create_session("old", 400.0)
        record = await store.load_session("old")
        assert record is not None
        assert record.data == {}


async def test_sqlite_keeps_sessions_and_the_secret_across_a_restart(sqlite_path: Path) -> None:
    async with asyncio.timeout(TIMEOUT):
        first = SqliteStore(sqlite_path)
        await first.open()
        try:
            assert await first.secret(b"s" * 32) == b"s" * 32
            await first.create_session("s", 100.0)
            await first.save_session("s", {"a": b"\x00\xff"}, (), 110.0)
            await first.set_generation("s", 3)
        finally:
            await first.close()

        again = SqliteStore(sqlite_path)
        await again.open()
        try:
            assert await again.secret(b"t" * 32) == b"s" * 32
            record = await again.load_session("s")
            assert record is not None
            assert (record.data, record.generation, record.last_seen) == (
                {"a": b"\x00\xff"},
                3,
                110.0,
            )
        finally:
            await again.close()


async def test_the_sqlite_file_is_readable_by_its_owner_only(sqlite_path: Path) -> None:
    async with asyncio.timeout(TIMEOUT):
        store = SqliteStore(sqlite_path)
        await store.open()
        try:
            await store.create_session("s", 100.0)
        finally:
            await store.close()
        mode = (await asyncio.to_thread(sqlite_path.stat)).st_mode
    assert stat.S_IMODE(mode) == 0o600


async def test_concurrent_sqlite_saves_all_persist(sqlite_path: Path) -> None:
    async with asyncio.timeout(TIMEOUT):
        store = SqliteStore(sqlite_path)
        await store.open()
        try:
            await store.create_session("s", 100.0)
            await asyncio.gather(
                *(
                    store.save_session("s", {f"k{i}": str(i).encode()}, (), 100.0 + i)
                    for i in range(50)
                )
            )
            record = await store.load_session("s")
            assert record is not None
            assert record.data == {f"k{i}": str(i).encode() for i in range(50)}
            assert record.last_seen == 149.0
        finally:
            await store.close()


async def test_opening_and_closing_twice_is_harmless(sqlite_path: Path) -> None:
    async with asyncio.timeout(TIMEOUT):
        store = SqliteStore(sqlite_path)
        await store.open()
        await store.open()
        await store.create_session("s", 100.0)
        await store.close()
        await store.close()


async def test_a_sqlite_store_that_is_not_open_says_so(sqlite_path: Path) -> None:
    async with asyncio.timeout(TIMEOUT):
        store = SqliteStore(sqlite_path)
        with pytest.raises(RuntimeError, match=r"the store sqlite:///.*t\.db is not open"):
            await store.load_session("s")
        await store.open()
        await store.close()
        with pytest.raises(RuntimeError, match="is not open"):
            await store.secret(b"s" * 32)


def test_the_default_store_is_memory_without_a_data_dir() -> None:
    assert isinstance(open_store(None, None), MemoryStore)


def test_the_default_store_is_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    store = open_store(None, str(tmp_path))
    assert isinstance(store, SqliteStore)
    assert store.path == tmp_path / "tether.db"


def test_memory_by_name() -> None:
    store = open_store("memory", "/unused")
    assert isinstance(store, MemoryStore)
    assert store.url == "memory"


@pytest.mark.parametrize(
    ("url", "path"),
    [("sqlite:///rel/x.db", "rel/x.db"), ("sqlite:////abs/x.db", "/abs/x.db")],
)
def test_sqlite_urls(url: str, path: str) -> None:
    store = open_store(url, None)
    assert isinstance(store, SqliteStore)
    assert store.path == Path(path)
    assert store.url == url


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://",
        "sqlite:///",
        "sqlite://host/x.db",
        "sqlite:x.db",
        "sqlite:/x.db",
        "sqlite:///x.db?mode=ro",
    ],
)
def test_malformed_sqlite_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="bad store URL"):
        open_store(url, None)


def test_redis_is_refused_clearly() -> None:
    with pytest.raises(ValueError, match="Redis"):
        open_store("redis://localhost", None)


def test_an_unknown_scheme_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown store"):
        open_store("foo://", None)
