"""The tasks the peers run, and the counters and gates that tell the harness they ran.

Every workload comes in two kinds: "async" (an async function, for the loop peers) and "sync"
(a plain callable, for the thread pool and thread-per-task).  Any thread may tick a
``Countdown`` or open a ``Gate``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import threading
import time
from time import perf_counter_ns as now
from typing import Final

from .peers import WAIT_S, Job

NAP_S: Final = 0.01  # what each drained task still has to do once its gate opens


class Countdown:
    """Counts finished tasks and stamps the moment the n-th one finishes.  Any thread."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._counter = itertools.count(1)  # next() is atomic under the GIL
        self.done = threading.Event()
        self.finished_at = 0

    def tick(self) -> None:
        if next(self._counter) == self.n:
            self.finished_at = now()
            self.done.set()

    def completed(self) -> int:
        return int(repr(self._counter)[len("count(") : -1]) - 1

    def wait(self, what: str, timeout: float = WAIT_S) -> None:
        if not self.done.wait(timeout):
            raise TimeoutError(f"{what}: {self.completed()} of {self.n} in {timeout:.0f} s")


def noop_task(kind: str, countdown: Countdown) -> Job:
    tick = countdown.tick
    if kind == "async":

        async def noop() -> None:
            tick()

        return noop

    def noop_sync() -> None:
        tick()

    return noop_sync


def stamping_jobs(
    kind: str, starts: list[int], countdown: Countdown, first: int, n: int
) -> list[Job]:
    """Jobs first..first+n-1; each writes the time of its first line into starts[i]."""
    tick = countdown.tick
    if kind == "async":

        async def stamp(i: int) -> None:
            starts[i] = now()
            tick()

        return [functools.partial(stamp, i) for i in range(first, first + n)]

    def stamp_sync(i: int) -> None:
        starts[i] = now()
        tick()

    return [functools.partial(stamp_sync, i) for i in range(first, first + n)]


class Gate:
    """Parks tasks until opened, on any number of event loops and in plain threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: dict[asyncio.AbstractEventLoop, asyncio.Event] = {}
        self._opened = threading.Event()

    async def wait_async(self) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            event = self._events.get(loop)
            if event is None:
                event = self._events[loop] = asyncio.Event()
                if self._opened.is_set():
                    event.set()
        await event.wait()

    def wait_sync(self) -> None:
        self._opened.wait()

    def open(self) -> None:
        with self._lock:
            if self._opened.is_set():
                return
            self._opened.set()
            events = list(self._events.items())
        for loop, event in events:
            with contextlib.suppress(RuntimeError):  # that loop is closed: nothing waits
                loop.call_soon_threadsafe(event.set)


def parked_task(kind: str, started: Countdown) -> Job:
    """Starts, then waits forever (an event that is never set)."""
    tick = started.tick
    if kind == "async":
        never = Gate()

        async def parked() -> None:
            tick()
            await never.wait_async()

        return parked
    never_t = threading.Event()

    def parked_sync() -> None:
        tick()
        never_t.wait()

    return parked_sync


def gated_nap_task(kind: str, gate: Gate, started: Countdown, finished: Countdown) -> Job:
    """Starts, waits at the gate, then sleeps NAP_S: opening the gate puts all in flight."""
    if kind == "async":

        async def nap() -> None:
            started.tick()
            await gate.wait_async()
            await asyncio.sleep(NAP_S)
            finished.tick()

        return nap

    def nap_sync() -> None:
        started.tick()
        gate.wait_sync()
        time.sleep(NAP_S)
        finished.tick()

    return nap_sync
