"""Races between threads: the first submit against a shutdown, reused thread idents, a
submit whose loop closes under it, and the counters read while all of that happens."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import logging
import random
import sys
import threading
import weakref
from collections.abc import Callable, Iterator

import pytest

import loopkeeper
from loopkeeper import Runner, RunnerStats, TaskState

WaitUntil = Callable[..., None]
WAIT = 10.0


def _threads_named(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == name and t.is_alive()]


# -- defect 3: the first submit racing shutdown --------------------------------------------


def test_a_first_submit_racing_shutdown_leaves_no_loop_thread_running(
    wait_until: WaitUntil,
) -> None:
    """A runner's first ``submit()`` and its ``shutdown()`` start together, many times over,
    the shutdown after a seeded delay of 0-500 µs that spreads it across the submit's start
    of the loop thread: whichever wins, once both have returned the loop thread ends (a stop
    requested before the loop existed still stops it)."""
    delays = random.Random(3)
    for trial in range(60):
        name = f"first-race-{trial}"
        runner = Runner(name=name, watchdog_threshold=None)
        go = threading.Barrier(2)

        def submit(runner: Runner = runner, go: threading.Barrier = go) -> None:
            go.wait(WAIT)
            with contextlib.suppress(loopkeeper.RunnerClosedError):  # the shutdown came first
                runner.submit(asyncio.sleep, 0)

        submitter = threading.Thread(target=submit)
        submitter.start()
        go.wait(WAIT)
        threading.Event().wait(delays.uniform(0, 0.0005))
        report = runner.shutdown(timeout=WAIT)
        submitter.join(WAIT)
        assert not submitter.is_alive()
        assert report.clean, report
        wait_until(lambda name=name: not _threads_named(name), what=f"{name}'s loop thread to end")


# -- defect 4: thread idents are reused -----------------------------------------------------


def test_a_new_thread_with_the_ended_loop_threads_ident_is_not_the_loop_thread() -> None:
    """Once a runner's loop thread has ended, a new thread often gets its ident (Linux
    reuses them); that thread is not the loop thread: its ``shutdown()`` returns the
    report instead of refusing to "block the runner's own loop thread"."""
    runner = Runner(name="ident-reuse", watchdog_threshold=None)
    runner.submit(asyncio.sleep, 0).result(WAIT)
    (loop_thread,) = _threads_named("ident-reuse")
    report = runner.shutdown(timeout=WAIT)
    loop_thread.join(WAIT)
    assert not loop_thread.is_alive()
    for worker in [t for t in threading.enumerate() if t.name.startswith("ident-reuse-")]:
        worker.join(WAIT)  # the idle worker exits too once the pool is closed

    seen: list[tuple[int | None, object, bool]] = []

    def probe() -> None:
        try:
            outcome: object = runner.shutdown(timeout=WAIT)
        except RuntimeError as exc:
            outcome = exc
        seen.append((threading.get_ident(), outcome, runner._loop_thread.is_current()))

    for _ in range(50):
        thread = threading.Thread(target=probe)
        thread.start()
        thread.join(WAIT)
        if seen[-1][0] == loop_thread.ident:
            break
    else:
        pytest.skip("no new thread reused the loop thread's ident on this platform")
    _, outcome, is_current = seen[-1]
    assert outcome is report
    assert is_current is False
    assert all(o is report for _, o, _ in seen)


# -- defect 7: the report counts only what the shutdown cancelled ---------------------------


class _Seen(logging.Handler):
    """Sets ``seen`` when a record with the given ``event`` field is emitted."""

    def __init__(self, event: str) -> None:
        super().__init__(logging.DEBUG)
        self.wanted = event
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "event", None) == self.wanted:
            self.seen.set()


@pytest.fixture
def manifest_seen() -> Iterator[_Seen]:
    handler = _Seen("shutdown_started")
    logger = logging.getLogger("loopkeeper")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


def test_a_task_its_user_cancels_during_the_drain_is_not_counted_as_cancelled_by_it(
    manifest_seen: _Seen,
) -> None:
    """During a drain, the user cancels one of two unfinished tasks; at the deadline the
    shutdown cancels the other.  ``ShutdownReport.cancelled`` is 1 (the one it cancelled);
    the one the user cancelled ended on its own during the drain: ``completed``."""
    runner = Runner(name="user-cancel-in-drain")

    async def forever() -> None:
        await asyncio.Event().wait()

    by_user = runner.submit(forever, name="by-user")
    by_shutdown = runner.submit(forever, name="by-shutdown")
    outcome: list[loopkeeper.ShutdownReport] = []
    closing = threading.Thread(target=lambda: outcome.append(runner.shutdown(timeout=1.0)))
    closing.start()
    assert manifest_seen.seen.wait(WAIT)
    by_user.cancel()
    with pytest.raises(concurrent.futures.CancelledError):
        by_user.result(WAIT)
    closing.join(WAIT)
    (report,) = outcome
    assert by_shutdown.state is TaskState.CANCELLED
    assert (report.cancelled, report.completed, report.abandoned) == (1, 1, ())


# -- defect 11: a submit whose loop closes under it -----------------------------------------


class _ShutDownOnSubmitted(logging.Handler):
    """On the first ``task_submitted`` line (logged in the submitting thread after the task
    was counted, before it is posted to the loop), shuts the runner down from another
    thread and waits until that shutdown has returned (and closed the loop)."""

    def __init__(self, runner: Runner) -> None:
        super().__init__(logging.DEBUG)
        self.runner = runner
        self.reports: list[loopkeeper.ShutdownReport] = []

    def handle(self, record: logging.LogRecord) -> bool:  # no handler lock: none is needed
        if getattr(record, "event", None) == "task_submitted" and not self.reports:
            closing = threading.Thread(
                target=lambda: self.reports.append(self.runner.shutdown(timeout=0))
            )
            closing.start()
            closing.join(WAIT)
        return True


@pytest.fixture
def debug_logging() -> Iterator[logging.Logger]:
    logger = logging.getLogger("loopkeeper")
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    yield logger
    logger.setLevel(old_level)


def test_a_submit_whose_loop_a_shutdown_closes_before_the_post_returns_its_settled_handle(
    debug_logging: logging.Logger,
) -> None:
    """A shutdown takes a just-counted task in its manifest, cancels it and closes the loop
    before the submitting thread posts it: ``submit()`` raises no bare ``RuntimeError``
    ('Event loop is closed') but returns the handle, ``CANCELLED``, which the report counts
    as cancelled; the counters add up."""
    runner = Runner(name="post-after-close")
    runner.start()
    handler = _ShutDownOnSubmitted(runner)
    debug_logging.addHandler(handler)
    try:
        handle = runner.submit(asyncio.sleep, 0, name="late")
    finally:
        debug_logging.removeHandler(handler)
    (report,) = handler.reports
    assert handle.state is TaskState.CANCELLED
    assert report.cancelled == 1
    stats = runner.stats()
    assert (stats.submitted, stats.cancelled, stats.rejected) == (1, 1, 0)


def test_a_submit_whose_loop_closed_without_a_shutdown_is_refused_and_not_counted() -> None:
    """If the loop closed while the runner still accepts (its loop stopped by anything but
    a shutdown), the task that cannot reach it is refused with ``RunnerClosedError`` and
    counted as rejected, not submitted; its coroutine is closed."""
    runner = Runner(name="loop-gone", watchdog_threshold=None)
    runner.submit(asyncio.sleep, 0).result(WAIT)
    (loop_thread,) = _threads_named("loop-gone")
    runner._loop_thread.request_stop()  # what no public call does: the loop ends, open
    loop_thread.join(WAIT)
    coro = asyncio.sleep(0)
    with pytest.raises(loopkeeper.RunnerClosedError):
        runner.submit(coro)
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED  # never "never awaited"
    stats = runner.stats()
    assert (stats.submitted, stats.succeeded, stats.pending, stats.rejected) == (1, 1, 0, 1)
    assert runner.shutdown(timeout=WAIT).clean


# -- defect 10: cancelled while waiting for a slot --------------------------------------


def test_tasks_cancelled_while_waiting_for_a_slot_are_not_kept() -> None:
    """Under ``max_concurrency=1``, the task holding the slot submits and cancels 5,000
    tasks (from the loop thread, so each is queued for the slot before it is cancelled;
    ``max_pending=100`` never trips: each is final at once).  Once the loop has run the
    callbacks scheduled meanwhile, no more than a bounded number of those handles are alive:
    the queue for a slot drops cancelled ones instead of keeping them until a slot frees."""
    runner = Runner(name="cancel-while-waiting", max_concurrency=1, max_pending=100)

    async def submit_and_cancel() -> int:
        alive: weakref.WeakSet[loopkeeper.TaskHandle[None]] = weakref.WeakSet()
        for _ in range(5_000):
            handle = runner.submit(asyncio.sleep, 0)
            assert handle.cancel()
            alive.add(handle)
        del handle
        await asyncio.sleep(0)  # the callbacks scheduled meanwhile run
        return len(alive)

    assert runner.submit(submit_and_cancel).result(WAIT) <= 100
    assert runner.stats().cancelled == 5_000
    assert runner.shutdown(timeout=WAIT).clean


# -- defect 8: a sync task waiting for a worker -----------------------------------------


def test_a_sync_task_waiting_for_a_worker_is_pending_and_its_timeout_waits_too() -> None:
    """With ``max_threads=1`` and the one worker busy, a second sync task is ``PENDING``
    (its code has not started) and its ``timeout=0`` does not count yet: the loop runs
    other tasks meanwhile and it stays pending; once the worker is free its code runs, and
    only then does the timeout fail it."""
    runner = Runner(name="wait-for-worker", max_threads=1)
    gate = threading.Event()
    holding = threading.Event()
    ran = threading.Event()

    def hold_the_worker() -> None:
        holding.set()
        gate.wait(WAIT)

    try:
        holder = runner.submit(hold_the_worker, name="holder")
        assert holding.wait(WAIT)
        queued = runner.submit(ran.set, name="queued", timeout=0)
        # Later tasks on the loop: a zero timeout that counted would have fired by now.
        for _ in range(3):
            assert runner.submit(asyncio.sleep, 0, "probe").result(WAIT) == "probe"
        assert queued.state is TaskState.PENDING
        stats = runner.stats()
        assert (stats.pending, stats.running) == (1, 1)
        assert not ran.is_set()
    finally:
        gate.set()
    assert holder.result(WAIT) is None
    assert ran.wait(WAIT), "the queued task never ran: it failed before its code started"
    with contextlib.suppress(loopkeeper.TaskTimeoutError):  # its timeout counts from here
        queued.result(WAIT)
    assert runner.shutdown(timeout=WAIT).clean


def test_a_sync_task_cancelled_while_waiting_for_a_worker_frees_its_slot_at_once() -> None:
    """Cancelled while it waits for a worker, a sync task is ``CANCELLED`` at once, never
    runs, and gives its ``max_concurrency`` slot to the next task without waiting for the
    busy worker."""
    runner = Runner(name="cancel-waiting-for-worker", max_threads=1, max_concurrency=3)
    gate = threading.Event()
    holding = threading.Event()
    ran = threading.Event()

    def hold_the_worker() -> None:
        holding.set()
        gate.wait(WAIT)

    try:
        runner.submit(hold_the_worker, name="holder")  # slot 1, the one worker
        assert holding.wait(WAIT)
        queued = runner.submit(ran.set, name="queued")  # slot 2, waits for the worker
        # Slot 3: once this ran, the batch before it reached the loop, so `queued` waits
        # for the worker, not in the inbox.
        assert runner.submit(asyncio.sleep, 0, "probe").result(WAIT) == "probe"
        assert queued.cancel()
        assert queued.state is TaskState.CANCELLED
        sleeper = runner.submit(asyncio.sleep, WAIT, name="sleeper")  # slot 3 again
        assert runner.submit(asyncio.sleep, 0, "next").result(WAIT) == "next"  # slot 2
        sleeper.cancel()
    finally:
        gate.set()
    assert runner.shutdown(timeout=WAIT).clean
    assert not ran.is_set()


# -- stats() is exact at every instant, not only when quiet -------------------------------


def _broken_sum(stats: RunnerStats) -> int | None:
    """The invariant's two sides differ: their difference; None when it holds."""
    total = (
        stats.pending
        + stats.running
        + stats.succeeded
        + stats.failed
        + stats.cancelled
        + stats.abandoned
    )
    return None if total == stats.submitted else stats.submitted - total


def test_stats_invariant_holds_in_every_sample_taken_during_a_storm_and_a_shutdown(
    wait_until: WaitUntil,
) -> None:
    """A sampler thread reads ``stats()`` as fast as it can while four threads submit async
    and sync tasks, cancel some at once, let others time out, and a shutdown starts in the
    middle of it: in every sample, ``submitted == pending + running + succeeded + failed +
    cancelled + abandoned``.  A tiny switch interval makes the threads interleave at
    almost every bytecode, so a count updated outside the ledger lock shows up."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        _sample_a_storm_and_a_shutdown(wait_until)
    finally:
        sys.setswitchinterval(interval)


def _sample_a_storm_and_a_shutdown(wait_until: WaitUntil) -> None:
    runner = Runner(name="sampled", max_pending=1_000_000, max_concurrency=8, max_threads=4)
    stop = threading.Event()
    broken: list[tuple[int, RunnerStats]] = []
    samples = 0

    def sample() -> None:
        nonlocal samples
        while not stop.is_set():
            stats = runner.stats()
            samples += 1
            difference = _broken_sum(stats)
            if difference is not None:
                broken.append((difference, stats))

    async def hang() -> None:
        await asyncio.sleep(WAIT)

    def work(seed: int, go: threading.Barrier) -> None:
        rng = random.Random(seed)
        go.wait(WAIT)
        for _ in range(1_500):
            step = rng.randrange(5)
            try:
                if step == 0:
                    runner.submit(asyncio.sleep, 0)
                elif step == 1:
                    runner.submit(hang).cancel()
                elif step == 2:
                    runner.submit(hang, timeout=0)
                elif step == 3:
                    runner.submit(int)
                else:
                    runner.submit(threading.Event().wait, 0.001).cancel()
            except loopkeeper.RunnerClosedError:
                return

    go = threading.Barrier(5)
    sampler = threading.Thread(target=sample)
    workers = [threading.Thread(target=work, args=(seed, go)) for seed in range(4)]
    sampler.start()
    for worker in workers:
        worker.start()
    go.wait(WAIT)
    wait_until(lambda: runner.stats().submitted >= 2_000, what="the storm")  # then: shutdown
    runner.shutdown(timeout=0.5)
    for worker in workers:
        worker.join(WAIT)
    stop.set()
    sampler.join(WAIT)
    assert samples >= 100, f"only {samples} samples: the race was barely watched"
    assert broken == [], f"{len(broken)} of {samples} samples broke the invariant: {broken[:3]}"
    assert _broken_sum(runner.stats()) is None
