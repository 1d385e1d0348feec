"""stats() is exact: after a storm of mixed outcomes from many threads, every count adds up."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import random
import threading
from collections import Counter

import pytest

import loopkeeper
from loopkeeper import Runner, TaskState
from stress._support import assert_counts_add_up

WAIT = 30.0
SUBMITTERS = 8
PER_THREAD = 150


async def _succeed() -> str:
    await asyncio.sleep(0)
    return "ok"


async def _fail() -> None:
    await asyncio.sleep(0)
    raise ValueError("planned failure")


async def _exit() -> None:
    raise SystemExit(3)


async def _hang() -> None:
    await asyncio.sleep(60)


def _sync_ok() -> str:
    return "ok"


def _sync_fail() -> None:
    raise KeyboardInterrupt


@pytest.mark.parametrize("seed", [int(os.environ.get("LOOPKEEPER_SEED", "0")) or 1, 2, 3])
def test_stats_add_up_after_a_storm_of_mixed_outcomes(seed: int) -> None:
    """Many threads submit successes, failures, timeouts, cancellations and nested submits;
    at the quiet point every handle is final and the counters match the outcomes exactly."""
    rng = random.Random(seed)
    plans = [[rng.randrange(8) for _ in range(PER_THREAD)] for _ in range(SUBMITTERS)]
    # No max_concurrency here: a task awaiting its own subtask while every slot is held by
    # such tasks waits forever, as in any bounded pool (documented in Runner).
    runner = Runner(name=f"storm-{seed}", max_pending=1_000_000)
    handles: list[loopkeeper.TaskHandle[object]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(SUBMITTERS)

    async def nested() -> str:
        inner = runner.submit(_succeed, name="inner")
        with lock:
            handles.append(inner)
        return await inner

    def submitter(plan: list[int]) -> None:
        barrier.wait(WAIT)
        mine: list[loopkeeper.TaskHandle[object]] = []
        for step in plan:
            if step == 0:
                mine.append(runner.submit(_succeed))
            elif step == 1:
                mine.append(runner.submit(_fail))
            elif step == 2:
                mine.append(runner.submit(_exit))
            elif step == 3:
                mine.append(runner.submit(_hang, timeout=0.001))
            elif step == 4:
                h = runner.submit(_hang)
                h.cancel()
                mine.append(h)
            elif step == 5:
                mine.append(runner.submit(_sync_ok))
            elif step == 6:
                mine.append(runner.submit(_sync_fail))
            else:
                mine.append(runner.submit(nested))
        with lock:
            handles.extend(mine)

    threads = [threading.Thread(target=submitter, args=(p,)) for p in plans]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    with lock:
        snapshot = list(handles)
    for h in snapshot:
        with contextlib.suppress(concurrent.futures.CancelledError):
            h.exception(WAIT)
    with lock:
        snapshot = list(handles)  # nested submits have landed by now
    for h in snapshot:
        with contextlib.suppress(concurrent.futures.CancelledError):
            h.exception(WAIT)

    states = Counter(h.state for h in snapshot)
    stats = runner.stats()
    nested_count = sum(p.count(7) for p in plans)
    assert stats.submitted == SUBMITTERS * PER_THREAD + nested_count == len(snapshot)
    assert_counts_add_up(stats, f"seed {seed}:")
    assert (stats.pending, stats.running, stats.abandoned, stats.rejected) == (0, 0, 0, 0)
    assert stats.succeeded == states[TaskState.SUCCEEDED]
    assert stats.failed == states[TaskState.FAILED]
    assert stats.cancelled == states[TaskState.CANCELLED]
    expected_failed = sum(p.count(1) + p.count(2) + p.count(3) + p.count(6) for p in plans)
    assert stats.failed == expected_failed, f"seed {seed}"
    assert stats.cancelled == sum(p.count(4) for p in plans), f"seed {seed}"
    assert runner.shutdown(timeout=WAIT).clean


def test_stats_invariant_holds_while_a_shutdown_races_with_submitters() -> None:
    """Submits racing a shutdown either return a handle or raise RunnerClosedError; nothing
    accepted is lost and the counts, refusals included, add up."""
    runner = Runner(name="race", max_pending=1_000_000)
    accepted: list[loopkeeper.TaskHandle[object]] = []
    refused = 0
    lock = threading.Lock()
    go = threading.Barrier(5)

    def submitter() -> None:
        nonlocal refused
        go.wait(WAIT)
        for _ in range(2_000):
            try:
                h = runner.submit(_succeed)
            except loopkeeper.RunnerClosedError:
                with lock:
                    refused += 1
            else:
                with lock:
                    accepted.append(h)

    threads = [threading.Thread(target=submitter) for _ in range(4)]
    for t in threads:
        t.start()
    go.wait(WAIT)
    report = runner.shutdown(timeout=WAIT)
    for t in threads:
        t.join(WAIT)
    stats = runner.stats()
    assert all(h.done() for h in accepted)
    assert stats.submitted == len(accepted)
    assert stats.rejected == refused
    assert len(accepted) + refused == 4 * 2_000
    assert stats.succeeded == len(accepted)
    assert report.clean
