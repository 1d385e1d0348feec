"""Soak: trivial tasks in waves from several threads; nothing is lost, kept or leaked.

Quick size: 50 000 tasks; long size (``LOOPKEEPER_LONG=1``): 1 000 000.  Memory is
measured after a warm-up wave (workers started, the allocator's arenas grown to a wave's
peak) and after the last wave, each time after a full collection and ``malloc_trim``, so
that RSS shows what is in use rather than what glibc keeps cached.  A leak of one object
per task shows in ``sys.getallocatedblocks()`` long before it shows in RSS, so both are
bounded.  Threads and file descriptors are compared before the runner exists and after it
was shut down and its threads have ended.
"""

from __future__ import annotations

import gc
import sys
import threading
import weakref
from collections.abc import Callable
from typing import Any, Final

import pytest

from loopkeeper import Runner, TaskHandle

from ._support import TIMEOUT, Figures, fd_kinds, new_threads, rss_mib, size

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads /proc/self (Linux)"
)

WAIT: Final = 60.0
TOTAL: Final = size(50_000, 1_000_000)
WAVE: Final = 5_000  # tasks in flight at most: one wave
SUBMITTERS: Final = 4
SYNC_EVERY: Final = 10  # every tenth task is a sync callable, run in a worker thread
RSS_BOUND_MIB: Final = 12.0  # measured over 60 quick and 8 long runs: +1.3 to +5.9 MiB
BLOCKS_BOUND: Final = 10_000  # allocated blocks; measured: +600 after a million tasks


async def _echo(value: int) -> int:
    return value


def _sync_echo(value: int) -> int:
    return value


def _wave(runner: Runner, first: int, count: int) -> list[TaskHandle[int]]:
    """Submit ``count`` tasks from SUBMITTERS threads at once; wait for every result."""
    handles: list[list[tuple[int, TaskHandle[int]]]] = [[] for _ in range(SUBMITTERS)]
    errors: list[BaseException] = []
    start = threading.Barrier(SUBMITTERS)

    def submitter(index: int) -> None:
        try:
            start.wait(WAIT)
            mine = handles[index]
            for value in range(first + index, first + count, SUBMITTERS):
                func: Callable[[int], Any] = _sync_echo if value % SYNC_EVERY == 0 else _echo
                mine.append((value, runner.submit(func, value)))
        except BaseException as exc:  # noqa: BLE001  reported below
            errors.append(exc)

    threads = [threading.Thread(target=submitter, args=(i,)) for i in range(SUBMITTERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert errors == []
    every = [pair for mine in handles for pair in mine]
    assert len(every) == count
    wrong = [(h, value, h.result(WAIT)) for value, h in every if h.result(WAIT) != value]
    assert wrong == [], (
        f"{len(wrong)} tasks returned another value: (handle, sent, got) {wrong[:3]}"
    )
    return [h for _, h in every]


@pytest.mark.timeout(TIMEOUT)
def test_soak_loses_nothing_and_leaks_no_memory_thread_or_descriptor(figures: Figures) -> None:
    """Waves of trivial tasks (nine async for one sync) from four threads: every one
    succeeds with its own value and is counted once; after the last wave RSS is within
    12 MiB and allocated blocks within 10 000 of the warm-up's,
    and no handle of the last wave is kept alive; once the runner is shut down every
    thread it started has ended, ``threading.active_count()`` is back where it was, and
    every file descriptor it opened (its loop's selector and self-pipe, its wake-up eventfd)
    is closed."""
    threads_before = set(threading.enumerate())
    active_before = threading.active_count()
    fds_before = fd_kinds()
    runner = Runner(name="stress-soak", max_pending=WAVE)
    try:
        _wave(runner, 0, WAVE)  # warm-up
        rss_before = rss_mib()
        blocks_before = sys.getallocatedblocks()
        done = 0
        probes: list[weakref.ref[TaskHandle[int]]] = []
        while done < TOTAL:
            count = min(WAVE, TOTAL - done)
            wave = _wave(runner, WAVE + done, count)
            done += count
            if done == TOTAL:  # the last wave: none of its handles may stay alive
                probes = [weakref.ref(h) for h in wave]
            del wave
        rss_after = rss_mib()
        blocks_after = sys.getallocatedblocks()
        figures.soak_tasks += TOTAL
        figures.rss_before, figures.rss_after = rss_before, rss_after
        gc.collect()
        kept = [h for p in probes if (h := p()) is not None]
        assert kept == [], f"{len(kept)} finished handles kept alive, e.g. {kept[:3]}"
        del kept
        stats = runner.stats()
        assert (stats.submitted, stats.succeeded) == (TOTAL + WAVE, TOTAL + WAVE), stats
        assert (stats.pending, stats.running, stats.rejected) == (0, 0, 0), stats
        assert rss_after - rss_before < RSS_BOUND_MIB, (rss_before, rss_after)
        assert blocks_after - blocks_before < BLOCKS_BOUND, (blocks_before, blocks_after)
    finally:
        report = runner.shutdown(WAIT)
    assert report.clean, report
    leftover = new_threads(threads_before, WAIT, runner.name)
    assert leftover == [], f"threads still alive after shutdown: {leftover}"
    assert threading.active_count() <= active_before
    assert fd_kinds() - fds_before == {}, f"descriptors left open: {fd_kinds() - fds_before}"
    figures.lost += TOTAL + WAVE - stats.succeeded
