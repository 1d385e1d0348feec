"""Helpers shared by the reliability suite: sizes, figures, a gate, a log tap, process probes.

Sizes: every test runs in its quick size by default, which keeps the whole suite within
a minute or two on a 2-core machine under coverage; ``LOOPKEEPER_LONG=1`` selects the long
sizes (a million soak tasks, bigger and more storms), documented in RELIABILITY.md.

Figures: the tests add what they did to one ``Figures`` object per session (the ``figures``
fixture); ``conftest.py`` prints it as one line at the end of the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import dataclasses
import gc
import logging
import os
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import loopkeeper

__all__ = (
    "LONG",
    "TIMEOUT",
    "EventLog",
    "Figures",
    "Gate",
    "capture_events",
    "fd_kinds",
    "new_threads",
    "rss_mib",
    "size",
)

LONG: Final = os.environ.get("LOOPKEEPER_LONG", "") == "1"
# pytest-timeout's limit for a test of this suite: the configured 120 s for the quick sizes,
# half an hour for the long ones (a million tasks under coverage on a slow machine).
TIMEOUT: Final = 1800 if LONG else 120


def size(quick: int, long: int) -> int:
    """The quick size, or the long one under ``LOOPKEEPER_LONG=1``."""
    return long if LONG else quick


@dataclasses.dataclass
class Figures:
    """What the suite did in this session; printed as one line by ``conftest.py``."""

    stormed: int = 0  # tasks the storms got accepted (nested ones included)
    storms: int = 0  # seeded storms, plus one for all the model's examples
    outcomes: Counter[str] = dataclasses.field(default_factory=Counter)  # final state -> count
    rejected: int = 0  # submits refused with RunnerClosedError or OverloadedError
    faults: int = 0  # faults injected on purpose: raises, cancels, timeouts, blocking, ...
    soak_tasks: int = 0
    rss_before: float | None = None  # MiB, soak: after the warm-up wave
    rss_after: float | None = None  # MiB, soak: after the last wave
    lost: int = 0  # accepted tasks found unfinished, or submits with an unexpected outcome

    def add_tasks(
        self, handles: Iterable[loopkeeper.TaskHandle[Any]], rejected: int, faults: int
    ) -> None:
        """Count a storm's tasks by final state; any that is not final counts as lost."""
        self.rejected += rejected
        self.faults += faults
        for handle in handles:
            self.stormed += 1
            if handle.done():
                self.outcomes[handle.state.name.lower()] += 1
            else:
                self.lost += 1

    def line(self, *, size_name: str, bad_inputs: int, failed_tests: int) -> str:
        states = ("succeeded", "failed", "cancelled", "abandoned")
        outcomes = ", ".join(f"{state} {self.outcomes[state]}" for state in states)
        if self.rss_before is not None and self.rss_after is not None:
            rss = (
                f"RSS {self.rss_before:.1f} -> {self.rss_after:.1f} MiB "
                f"({self.rss_after - self.rss_before:+.1f})"
            )
        else:
            rss = "RSS not measured"
        failed = f" ({failed_tests} stress tests FAILED)" if failed_tests else ""
        return (
            f"loopkeeper reliability ({size_name}): stormed {self.stormed} tasks in "
            f"{self.storms} storms ({outcomes}; rejected {self.rejected}); "
            f"faults injected {self.faults}; bad inputs tried {bad_inputs}; "
            f"soak {self.soak_tasks} tasks, {rss}; lost: {self.lost}{failed}"
        )


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Gate:
    """Opened once, from any thread; awaited by coroutines on any loop, or waited for by
    threads.  Lets tests park thousands of tasks without polling, and release them all."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards _waiters and the opening
        self._event = threading.Event()
        self._waiters: list[Callable[[], None]] = []

    def open(self) -> None:
        with self._lock:
            self._event.set()
            waiters, self._waiters = self._waiters, []
        for wake in waiters:
            wake()

    def is_open(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float) -> bool:
        return self._event.wait(timeout)

    async def opened(self) -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            with contextlib.suppress(RuntimeError):  # that loop has closed: nobody waits
                loop.call_soon_threadsafe(_resolve, future)

        with self._lock:
            if self._event.is_set():
                return
            self._waiters.append(wake)
        await future


class EventLog(logging.Handler):
    """Keeps every record of the stdlib logger ``loopkeeper``, without formatting it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self._records_lock = threading.Lock()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        with self._records_lock:
            self.records.append(record)

    def named(self, event: str) -> list[logging.LogRecord]:
        with self._records_lock:
            return [r for r in self.records if getattr(r, "event", None) == event]

    def task_events(self) -> Counter[tuple[str, int]]:
        """(event, task_id) -> how many lines: for lines about one task."""
        with self._records_lock:
            records = list(self.records)
        counts: Counter[tuple[str, int]] = Counter()
        for record in records:
            fields = getattr(record, "loopkeeper", {})
            if "task_id" in fields and fields["task_id"] is not None:
                counts[(str(getattr(record, "event", "")), int(fields["task_id"]))] += 1
        return counts

    def texts(self) -> list[str]:
        """Every record as a handler would write it, traceback included."""
        formatter = logging.Formatter("%(levelname)s %(name)s %(message)s")
        with self._records_lock:
            return [formatter.format(r) for r in self.records]


@contextlib.contextmanager
def capture_events(level: int = logging.INFO) -> Iterator[EventLog]:
    """Tap the ``loopkeeper`` logger at ``level``.  The records do not propagate meanwhile:
    pytest's own capture would format thousands of tracebacks for nothing."""
    logger = logging.getLogger("loopkeeper")
    tap = EventLog()
    old_level, old_propagate = logger.level, logger.propagate
    logger.addHandler(tap)
    logger.setLevel(level)
    logger.propagate = False
    try:
        yield tap
    finally:
        logger.removeHandler(tap)
        logger.setLevel(old_level)
        logger.propagate = old_propagate


def _malloc_trim() -> None:
    """Give freed heap pages back to the OS (glibc), so RSS shows what is in use."""
    if not sys.platform.startswith("linux"):
        return
    name = ctypes.util.find_library("c")
    if name is None:
        return
    with contextlib.suppress(OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        ctypes.CDLL(name).malloc_trim(0)


def rss_mib() -> float:
    """This process's resident memory in MiB after a full collection (Linux)."""
    gc.collect()
    _malloc_trim()
    with open("/proc/self/statm", encoding="ascii") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


_NUMBERED: Final = re.compile(r"^(socket|pipe|anon_inode):\[?([a-z_]*)\d*\]?$")


def fd_kinds() -> Counter[str]:
    """Open file descriptors of this process by kind (``socket``, ``pipe``,
    ``anon_inode:eventpoll``, or the file's path), from ``/proc/self/fd`` (Linux)."""
    kinds: Counter[str] = Counter()
    for entry in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{entry}")
        except OSError:  # closed meanwhile, e.g. the descriptor listdir itself used
            continue
        match = _NUMBERED.match(target)
        if match is None:
            kinds[target] += 1
        else:
            kinds[f"{match[1]}:{match[2]}" if match[2] else match[1]] += 1
    return kinds


def new_threads(before: set[threading.Thread], timeout: float, runner_name: str) -> list[str]:
    """Wait up to ``timeout`` for every thread of the runner named ``runner_name`` (its
    loop thread, ``<name>-watchdog``, ``<name>-worker-N``) started since ``before`` to
    end; return the names of those still alive at the deadline.  Other threads, such as
    an earlier test's leftovers, are not this runner's business."""

    def mine(thread: threading.Thread) -> bool:
        name = thread.name
        return name == runner_name or name.startswith(f"{runner_name}-")

    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while True:
        alive = [t for t in threading.enumerate() if t not in before and mine(t) and t.is_alive()]
        if not alive or time.monotonic() > deadline:
            return sorted(t.name for t in alive)
        pause.wait(0.01)


def assert_counts_add_up(stats: loopkeeper.RunnerStats, note: object = "") -> None:
    """The stats invariant: every accepted task is counted in exactly one state."""
    settled = stats.succeeded + stats.failed + stats.cancelled + stats.abandoned
    assert stats.submitted == stats.pending + stats.running + settled, f"{note} {stats}"
