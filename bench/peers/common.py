"""Shared pieces of the benchmark: the Item class, the workload plan and the timed loops.

Everything here runs inside a *client worker* process (bench/worker.py) or a peer's
server process (bench/serve.py).  The harness (bench/run.py) uses only the plan, the
constants and the /proc readers from here; it never imports a framework.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

HOST = "127.0.0.1"
W1 = "W1"
W3 = "W3"
WORKLOADS = (W1, W3)


class Item:
    """The plain object copied in W3 (used by every peer that accepts arbitrary classes)."""

    def __init__(self, id: int, name: str, tags: list[str]) -> None:
        self.id = id
        self.name = name
        self.tags = tags

    def __repr__(self) -> str:
        return f"Item({self.id!r}, {self.name!r}, {self.tags!r})"


class ItemLike(Protocol):
    id: int
    name: str
    tags: list[str]


def make_items(factory: Callable[[int, str, list[str]], Any], size: int) -> list[Any]:
    return [factory(i, f"item-{i}", [f"tag-{i % 7}", f"group-{i % 3}"]) for i in range(size)]


def check_server_items(items: Sequence[Any], cls: type[Any]) -> None:
    """Cheap server-side guard (first element only): the server must hold real objects."""
    if not items or type(items[0]) is not cls:
        got = type(items[0]).__name__ if items else "empty list"
        raise TypeError(f"server expected {cls.__name__} instances, got {got}")


def check_items(result: Any, sent: Sequence[ItemLike], cls: type[Any]) -> None:
    """Full client-side check, run on warm-up calls only: real, equal, distinct copies."""
    if type(result) is not list or len(result) != len(sent):
        raise AssertionError(f"roundtrip returned {type(result).__name__} of wrong shape")
    for got, want in zip(result, sent, strict=True):
        if type(got) is not cls:
            raise AssertionError(f"roundtrip returned {type(got)!r}, want real {cls.__name__}")
        if got is want:
            raise AssertionError("roundtrip returned the very same object, not a copy")
        same = (got.id, got.name, got.tags) == (want.id, want.name, want.tags)
        if not same or type(got.tags) is not list:
            raise AssertionError(f"roundtrip changed an item: {got!r} != {want!r}")


def check_echo(result: Any, i: int, s: str) -> None:
    if type(result) not in (list, tuple) or list(result) != [i, s]:
        raise AssertionError(f"echo({i!r}, {s!r}) returned {result!r}")


@dataclass
class Plan:
    """How much work each workload does (one Plan for the whole run)."""

    w1_warmup: int = 200
    w1_calls: int = 2000
    w3_warmup: int = 5
    w3_calls: int = 50
    w3_size: int = 1000
    reps: int = 3
    loop_timeout_s: float = 60.0  # a timed loop stops early (and is flagged) past this
    workloads: list[str] = field(default_factory=lambda: list(WORKLOADS))

    @classmethod
    def quick(cls) -> Plan:
        return cls(w1_warmup=20, w1_calls=200, w3_warmup=1, w3_calls=5, loop_timeout_s=15.0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- CPU clocks -----------------------------------------------------------------------

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _process_cpu_clock(pid: int) -> int:
    """clock_getcpuclockid(pid) as glibc computes it: the process-wide CPU-time clock."""
    return ((~pid) << 3) | 2  # CPUCLOCK_SCHED, not per-thread


def process_cpu_seconds(pid: int) -> float:
    """CPU time (user+system, all threads, living and dead) of another process.

    Uses the kernel's per-process CPU clock (nanosecond resolution).  Falls back to
    utime+stime from /proc/<pid>/stat (clock-tick resolution) if that clock is refused.
    """
    try:
        return time.clock_gettime(_process_cpu_clock(pid))
    except OSError:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def process_tree(pid: int) -> list[int]:
    """pid and all its descendants (read from /proc, no psutil needed)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, ()))
    return out


# --- Recording samples ----------------------------------------------------------------


def machine_busy_seconds() -> float:
    """CPU time all cores spent busy since boot (/proc/stat, clock-tick resolution)."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    # user nice system idle iowait irq softirq steal ...: everything but idle and iowait
    ticks = [int(x) for x in fields[:8]]
    return (sum(ticks) - ticks[3] - ticks[4]) / _CLK_TCK


@dataclass
class Sample:
    workload: str
    rep: int
    calls: int
    client_cpu_s: float
    server_cpu_s: float
    wall_s: float
    truncated: bool
    machine_busy_s: float  # all processes on the machine: a noise indicator


Mark = tuple[float, float, float, float]


class Recorder:
    """Brackets one timed loop: client process_time() plus the server tree's CPU clocks."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid
        self.samples: list[Sample] = []
        self._pids: list[int] = [server_pid]

    def _server_cpu(self) -> float:
        total = 0.0
        for pid in self._pids:
            try:
                total += process_cpu_seconds(pid)
            except OSError:
                if pid == self.server_pid:
                    raise  # the server itself vanished: the sample is worthless
        return total

    def start(self) -> Mark:
        self._pids = process_tree(self.server_pid)
        machine = machine_busy_seconds()
        server = self._server_cpu()
        client = time.process_time()
        return machine, server, client, time.perf_counter()

    def stop(self, mark: Mark, workload: str, rep: int, calls: int, truncated: bool) -> None:
        wall = time.perf_counter()
        client = time.process_time()
        server = self._server_cpu()
        machine = machine_busy_seconds()
        m0, s0, c0, w0 = mark
        self.samples.append(
            Sample(
                workload, rep, calls, client - c0, server - s0, wall - w0, truncated, machine - m0
            )
        )


# --- The timed loops ------------------------------------------------------------------
#
# A peer's client adapter supplies echo(i, s) and roundtrip(items) and an item factory;
# these drivers run warm-up calls (checked), then `reps` timed loops (unchecked).

EchoFn = Callable[[int, str], Any]
RoundtripFn = Callable[[list[Any]], Any]
AsyncEchoFn = Callable[[int, str], Awaitable[Any]]
AsyncRoundtripFn = Callable[[list[Any]], Awaitable[Any]]


def _echo_arg(i: int) -> str:
    return f"s{i}"


def run_sync(
    plan: Plan,
    rec: Recorder,
    echo: EchoFn,
    roundtrip: RoundtripFn,
    item_cls: type[Any],
) -> None:
    """Drive a blocking client (one call at a time, in this thread)."""
    if W1 in plan.workloads:
        for i in range(plan.w1_warmup):
            check_echo(echo(i, _echo_arg(i)), i, _echo_arg(i))
        args = [(i, _echo_arg(i)) for i in range(plan.w1_calls)]
        for rep in range(plan.reps):
            deadline = time.perf_counter() + plan.loop_timeout_s
            done, truncated = 0, False
            mark = rec.start()
            for i, s in args:
                echo(i, s)
                done += 1
                if time.perf_counter() > deadline:
                    truncated = True
                    break
            rec.stop(mark, W1, rep, done, truncated)
    if W3 in plan.workloads:
        items = make_items(item_cls, plan.w3_size)
        for _ in range(plan.w3_warmup):
            check_items(roundtrip(items), items, item_cls)
        for rep in range(plan.reps):
            deadline = time.perf_counter() + plan.loop_timeout_s
            done, truncated = 0, False
            mark = rec.start()
            for _ in range(plan.w3_calls):
                roundtrip(items)
                done += 1
                if time.perf_counter() > deadline:
                    truncated = True
                    break
            rec.stop(mark, W3, rep, done, truncated)


async def run_async(
    plan: Plan,
    rec: Recorder,
    echo: AsyncEchoFn,
    roundtrip: AsyncRoundtripFn,
    item_cls: type[Any],
) -> None:
    """Same as run_sync for awaitable calls (asyncio, or Twisted via ensureDeferred)."""
    if W1 in plan.workloads:
        for i in range(plan.w1_warmup):
            check_echo(await echo(i, _echo_arg(i)), i, _echo_arg(i))
        args = [(i, _echo_arg(i)) for i in range(plan.w1_calls)]
        for rep in range(plan.reps):
            deadline = time.perf_counter() + plan.loop_timeout_s
            done, truncated = 0, False
            mark = rec.start()
            for i, s in args:
                await echo(i, s)
                done += 1
                if time.perf_counter() > deadline:
                    truncated = True
                    break
            rec.stop(mark, W1, rep, done, truncated)
    if W3 in plan.workloads:
        items = make_items(item_cls, plan.w3_size)
        for _ in range(plan.w3_warmup):
            check_items(await roundtrip(items), items, item_cls)
        for rep in range(plan.reps):
            deadline = time.perf_counter() + plan.loop_timeout_s
            done, truncated = 0, False
            mark = rec.start()
            for _ in range(plan.w3_calls):
                await roundtrip(items)
                done += 1
                if time.perf_counter() > deadline:
                    truncated = True
                    break
            rec.stop(mark, W3, rep, done, truncated)
