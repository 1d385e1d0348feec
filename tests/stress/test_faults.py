"""Faults, one at a time, in this process: a blocked loop, a thread that will not stop,
finalizers and done-callbacks that raise or call back in, shutdowns from awkward places.

Each test injects its fault into a runner of its own, checks that the fault stays with the
task that caused it (or is reported, by name), and that the runner keeps its promises:
every accepted task ends and is counted once, the runner keeps serving until shut down,
and then its threads end.  Faults that need a whole process (exit, fork) are in
``test_process_faults.py``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import inspect
import logging
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, Final

import pytest

import loopkeeper
from loopkeeper import Runner, RunnerClosedError, ShutdownReport, TaskHandle, TaskState

from ._support import Figures, Gate, assert_counts_add_up, capture_events, new_threads

WAIT: Final = 10.0
GRACE: Final = 1.0  # the documented grace a shutdown gives cancelled work
SLACK: Final = 3.0  # allowance on top of a promised deadline on a shared, noisy machine


@contextlib.contextmanager
def _unraisable() -> Iterator[list[Any]]:
    """Collect what Python reports through ``sys.unraisablehook`` (a ``__del__`` that
    raises), instead of letting pytest turn it into a failure of its own."""
    seen: list[Any] = []
    old = sys.unraisablehook
    sys.unraisablehook = seen.append
    try:
        yield seen
    finally:
        sys.unraisablehook = old


def _assert_serving(runner: Runner) -> None:
    """The runner still runs async and sync tasks, and threads of tasks."""

    async def through_a_thread() -> str:
        return await asyncio.to_thread(lambda: "thread")

    assert runner.submit(asyncio.sleep, 0, "async").result(WAIT) == "async"
    assert runner.submit(lambda: "sync").result(WAIT) == "sync"
    assert runner.submit(through_a_thread).result(WAIT) == "thread"


def _assert_counts_add_up(runner: Runner, handles: list[TaskHandle[Any]]) -> None:
    stats = runner.stats()
    assert all(h.done() for h in handles), [h for h in handles if not h.done()]
    assert_counts_add_up(stats)


# -- a task that blocks the loop thread -------------------------------------------------


def test_loop_blocker_is_named_by_the_watchdog_and_the_report_and_shutdown_is_on_time(
    figures: Figures,
) -> None:
    """``time.sleep`` in an ``async def`` holds the loop thread: the watchdog logs
    ``loop_blocked`` naming that task while it still blocks, a ``shutdown(timeout=0.2)``
    issued meanwhile returns within its timeout plus the grace, and its report names the
    blocker as abandoned (and the task queued behind it as cancelled).  Once the blocker
    lets go, the loop thread and the runner's other threads end."""
    threads_before = set(threading.enumerate())
    runner = Runner(name="stress-loop-hog", watchdog_threshold=0.1)
    release = threading.Event()
    started = threading.Event()

    async def hog() -> None:
        started.set()
        release.wait(WAIT * 3)  # the fault: a blocking call on the loop thread

    with capture_events() as tap:
        blocker = runner.submit(hog, name="loop-hog")
        assert started.wait(WAIT)
        behind = runner.submit(asyncio.sleep, 0, name="queued-behind")
        begun = time.monotonic()
        report = runner.shutdown(timeout=0.2)
        took = time.monotonic() - begun
        blocked = tap.named("loop_blocked")
        release.set()
    figures.faults += 1
    assert took < 0.2 + GRACE + SLACK, f"shutdown took {took:.2f}s: {report!r}"
    assert [(i.id, i.name, i.state) for i in report.abandoned] == [
        (blocker.id, "loop-hog", TaskState.ABANDONED)
    ]
    assert f"{blocker.id} 'loop-hog'" in repr(report)
    assert behind.state in {TaskState.CANCELLED, TaskState.ABANDONED}
    assert blocked, "the watchdog never said the loop was blocked"
    assert blocked[0].loopkeeper["task_id"] == blocker.id  # type: ignore[attr-defined]
    assert "task_name='loop-hog'" in blocked[0].getMessage()
    assert "in hog" in blocked[0].getMessage()  # the loop thread's stack shows where
    incomplete = tap.named("shutdown_incomplete")
    assert len(incomplete) == 1
    assert f"{blocker.id} 'loop-hog'" in incomplete[0].getMessage()
    assert new_threads(threads_before, WAIT, runner.name) == [], "threads outlived the hog"


# -- a thread that ignores cancellation ---------------------------------------------------


def test_thread_swallowing_its_cancellation_is_abandoned_and_its_late_end_changes_nothing(
    figures: Figures,
) -> None:
    """A sync task that catches the ``CancelledError`` from ``check_cancelled()`` and goes
    on is abandoned by shutdown, named with its thread; when it finally returns, nothing
    changes (still ABANDONED, counted once, no outcome logged, no worker error), and then
    its worker thread ends like the runner's others."""
    threads_before = set(threading.enumerate())
    runner = Runner(name="stress-swallower")
    release = threading.Event()
    told = threading.Event()
    returned = threading.Event()

    def swallows() -> str:
        while not release.wait(0.005):
            try:
                loopkeeper.check_cancelled()
            except asyncio.CancelledError:
                told.set()  # the fault: it was told, and carries on
        returned.set()
        return "too late"

    with capture_events(logging.DEBUG) as tap:
        handle = runner.submit(swallows, name="swallower")
        report = runner.shutdown(timeout=0.05)
        assert told.is_set()
        stats = runner.stats()
        release.set()
        assert returned.wait(WAIT)
        leftover = new_threads(threads_before, WAIT, runner.name)
    figures.faults += 1
    ((info,), (thread,)) = report.abandoned, report.threads
    assert (info.id, info.name, info.thread) == (handle.id, "swallower", thread.name)
    assert thread.task_id == handle.id
    assert handle.state is TaskState.ABANDONED
    after = runner.stats()
    assert (after.submitted, after.abandoned, after.succeeded, after.failed) == (1, 1, 0, 0)
    assert (stats.submitted, stats.abandoned) == (1, 1)
    events = {(getattr(r, "event", ""), r.loopkeeper.get("task_id")) for r in tap.records}  # type: ignore[attr-defined]
    assert ("task_succeeded", handle.id) not in events
    assert ("task_failed", handle.id) not in events
    assert not tap.named("worker_job_failed")
    assert leftover == [], f"threads alive after the late return: {leftover}"


# -- finalizers ------------------------------------------------------------------------


class _RaisesWhenCollected:
    """An object whose ``__del__`` raises: Python reports it, nobody can catch it."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def __del__(self) -> None:
        raise self.exc


@pytest.mark.parametrize("exc", [ValueError("del"), SystemExit(5), KeyboardInterrupt()])
def test_finalizer_raising_on_the_loop_or_a_worker_stays_with_python(
    exc: BaseException, figures: Figures
) -> None:
    """Objects whose ``__del__`` raises, collected on the loop thread (a coroutine's local),
    in a worker (a sync task's local) and when a result is dropped: each error goes to
    ``sys.unraisablehook``, where Python sends it; each task ends by its own outcome, and
    the runner keeps serving."""
    with Runner(name="finalizers") as runner, _unraisable() as seen:

        async def async_local() -> str:
            doomed = _RaisesWhenCollected(exc)
            del doomed
            await asyncio.sleep(0)
            return "async ok"

        def sync_local() -> str:
            doomed = _RaisesWhenCollected(exc)
            del doomed
            return "sync ok"

        async def returns_doomed() -> _RaisesWhenCollected:
            return _RaisesWhenCollected(exc)

        assert runner.submit(async_local).result(WAIT) == "async ok"
        assert runner.submit(sync_local).result(WAIT) == "sync ok"
        handle = runner.submit(returns_doomed)
        handle.result(WAIT)
        del handle
        gc.collect()
        _assert_serving(runner)
        figures.faults += 3
    assert [type(s.exc_value) for s in seen] == [type(exc)] * 3


# -- done-callbacks ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "exc_type", [RuntimeError, SystemExit, KeyboardInterrupt, asyncio.CancelledError]
)
def test_done_callback_raising_anything_breaks_nothing_where_it_runs(
    exc_type: type[BaseException], figures: Figures
) -> None:
    """A done-callback that raises (``SystemExit``, ``KeyboardInterrupt`` and
    ``CancelledError`` included) wherever it runs: on the loop thread when the task ends,
    in the thread that cancels a pending task, and at once in the caller's thread when the
    task is already done.  Each raise is logged once (``callback_failed``) and goes no
    further: the next callback still runs, waiters wake, ``cancel()`` and
    ``add_done_callback()`` return normally, and the runner keeps serving."""

    def bad(handle: TaskHandle[Any]) -> None:
        raise exc_type("callback fault")

    with Runner(name="callbacks", max_concurrency=1) as runner, capture_events() as tap:
        gate = Gate()
        ran: list[tuple[int, str]] = []

        def good(handle: TaskHandle[Any]) -> None:
            ran.append((handle.id, threading.current_thread().name))

        async def parked() -> str:
            await gate.opened()
            return "done"

        running = runner.submit(parked)  # ends on the loop thread
        waiting = runner.submit(parked)  # still pending: cancelled here, in this thread
        for handle in (running, waiting):
            handle.add_done_callback(bad)
            handle.add_done_callback(good)
        assert waiting.cancel() is True
        gate.open()
        assert running.result(WAIT) == "done"
        running.add_done_callback(bad)  # already done: runs now, in this thread
        running.add_done_callback(good)
        _assert_serving(runner)
        failures = tap.named("callback_failed")
    figures.faults += 3
    me = threading.current_thread().name
    assert sorted(ran) == sorted([(running.id, "callbacks"), (waiting.id, me), (running.id, me)])
    assert sorted(r.loopkeeper["task_id"] for r in failures) == sorted(  # type: ignore[attr-defined]
        [running.id, waiting.id, running.id]
    )


def test_done_callback_submitting_more_work_chains_and_counts_exactly(figures: Figures) -> None:
    """A done-callback that submits the next task (from the loop thread, and from a thread
    that cancelled a pending task) builds a chain of 50 tasks that all run and are counted
    once; during shutdown the same callback is refused with ``RunnerClosedError``, which is
    logged as ``callback_failed`` and counted as rejected, and nothing is lost."""
    length = 50
    finished = threading.Event()
    chain: list[TaskHandle[Any]] = []
    runner = Runner(name="chain")

    async def link(n: int) -> int:
        await asyncio.sleep(0)
        return n

    def next_link(handle: TaskHandle[Any]) -> None:
        n = len(chain)
        if n == length:
            finished.set()
            return
        following = runner.submit(link, n)
        chain.append(following)
        following.add_done_callback(next_link)

    with capture_events() as tap:
        first = runner.submit(link, -1)
        first.add_done_callback(next_link)
        assert finished.wait(WAIT), f"the chain stopped at {len(chain)}"
        assert [h.result(WAIT) for h in chain] == list(range(length))

        gate = Gate()

        async def parked() -> None:
            await gate.opened()

        pending_cancelled = runner.submit(parked)
        pending_cancelled.add_done_callback(lambda h: chain.append(runner.submit(link, -2)))
        pending_cancelled.cancel()  # its callback runs in this thread and submits
        assert chain[-1].result(WAIT) == -2

        during_drain = runner.submit(parked, name="ends-during-drain")
        refusals: list[BaseException] = []

        def submit_late(handle: TaskHandle[Any]) -> None:
            try:
                runner.submit(link, -3)
            except RunnerClosedError as exc:
                refusals.append(exc)
                raise

        during_drain.add_done_callback(submit_late)
        threading.Timer(0.05, gate.open).start()
        report = runner.shutdown(WAIT)
        failures = tap.named("callback_failed")
    figures.faults += 2
    assert report.clean, report
    assert len(refusals) == 1
    assert [r.loopkeeper["task_id"] for r in failures] == [during_drain.id]  # type: ignore[attr-defined]
    stats = runner.stats()
    assert stats.submitted == 1 + length + 1 + 1 + 1
    assert (stats.succeeded, stats.cancelled, stats.rejected) == (length + 3, 1, 1), stats
    _assert_counts_add_up(runner, [first, *chain, pending_cancelled, during_drain])


# -- shutdown from inside a task ---------------------------------------------------------


@pytest.mark.parametrize("caller", ["async-ashutdown", "sync-shutdown"])
def test_task_shutting_down_its_own_runner_drains_the_rest_and_then_everything_stops(
    caller: str, figures: Figures
) -> None:
    """A task (a coroutine awaiting ``ashutdown()``, or a sync task calling ``shutdown()``)
    shuts its own runner down while other work is in flight: a task that finishes in time,
    one parked until cancelled, a sync one checking for cancellation, and one that
    swallows every cancellation.  The report counts each of them once and not the caller;
    the caller is neither waited for nor cancelled and ends SUCCEEDED with the report; then
    the loop thread and every worker end."""
    threads_before = set(threading.enumerate())
    runner = Runner(name=f"stress-self-stop-{caller}")
    gate = Gate()
    swallowing = threading.Event()

    async def quick() -> str:
        await asyncio.sleep(0.01)
        return "quick"

    async def parked() -> None:
        await gate.opened()

    def sync_parked() -> None:
        while not gate.wait(0.005):
            loopkeeper.check_cancelled()

    async def stubborn() -> None:
        swallowing.set()
        while not gate.is_open():
            with contextlib.suppress(asyncio.CancelledError):
                await gate.opened()

    async def stop_async() -> ShutdownReport:
        return await runner.ashutdown(timeout=0.1)

    def stop_sync() -> ShutdownReport:
        return runner.shutdown(timeout=0.1)

    others = [
        runner.submit(quick, name="quick"),
        runner.submit(parked, name="parked"),
        runner.submit(sync_parked, name="sync-parked"),
        runner.submit(stubborn, name="stubborn"),
    ]
    assert swallowing.wait(WAIT)
    stopper: TaskHandle[ShutdownReport] = (
        runner.submit(stop_async) if caller == "async-ashutdown" else runner.submit(stop_sync)
    )
    report = stopper.result(WAIT * 2)
    figures.faults += 1
    try:
        assert stopper.state is TaskState.SUCCEEDED
        assert report.completed == 1
        assert report.cancelled == 2
        assert [i.name for i in report.abandoned] == ["stubborn"]
        assert stopper.id not in {i.id for i in report.abandoned}
        assert [h.state for h in others] == [
            TaskState.SUCCEEDED,
            TaskState.CANCELLED,
            TaskState.CANCELLED,
            TaskState.ABANDONED,
        ]
        assert runner.shutdown(0) is report
        with pytest.raises(RunnerClosedError):
            runner.submit(quick)
        _assert_counts_add_up(runner, [*others, stopper])
    finally:
        gate.open()
    leftover = new_threads(threads_before, WAIT, runner.name)
    assert leftover == [], f"threads alive after a task shut its runner down: {leftover}"


# -- shutdown from many places at once ---------------------------------------------------


def test_shutdown_from_many_threads_and_loops_at_once_gives_one_report(figures: Figures) -> None:
    """Eight threads call ``shutdown()`` (with different timeouts and ``cancel_remaining``)
    and two coroutines on a second loop ``await ashutdown()``, all at once, while tasks are
    in flight: one shutdown happens, every caller gets that very report, each task is
    counted once, and every caller returns within the longest timeout plus the grace."""
    runner = Runner(name="crowd")
    gate = Gate()

    async def parked() -> None:
        await gate.opened()

    handles = [runner.submit(parked, name=f"parked-{i}") for i in range(20)]
    handles += [runner.submit(asyncio.sleep, 0.01, name=f"quick-{i}") for i in range(20)]
    reports: list[ShutdownReport] = []
    lock = threading.Lock()
    start = threading.Barrier(9)

    def call(i: int) -> None:
        start.wait(WAIT)
        report = runner.shutdown(timeout=0.05 * (i % 3), cancel_remaining=i % 4 != 0)
        with lock:
            reports.append(report)

    async def acall() -> ShutdownReport:
        return await runner.ashutdown(timeout=0.1)

    second = asyncio.new_event_loop()
    loop_thread = threading.Thread(target=second.run_forever)
    loop_thread.start()
    threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
    try:
        for thread in threads:
            thread.start()
        start.wait(WAIT)
        begun = time.monotonic()
        futures = [asyncio.run_coroutine_threadsafe(acall(), second) for _ in range(2)]
        for thread in threads:
            thread.join(WAIT)
        reports += [f.result(WAIT) for f in futures]
        took = time.monotonic() - begun
    finally:
        gate.open()
        second.call_soon_threadsafe(second.stop)
        loop_thread.join(WAIT)
        second.close()
    figures.faults += 10
    assert len(reports) == 10
    assert all(r is reports[0] for r in reports)
    report = reports[0]
    assert took < 0.1 + GRACE + SLACK
    assert report.completed + report.cancelled + len(report.abandoned) <= len(handles)
    assert all(h.done() for h in handles)
    stats = runner.stats()
    assert stats.submitted == len(handles)
    _assert_counts_add_up(runner, handles)


# -- a runner left running by cancel_remaining=False --------------------------------------


def test_runner_left_running_by_cancel_remaining_false_stops_once_its_tasks_end() -> None:
    """``shutdown(cancel_remaining=False)`` reports the unfinished task ABANDONED and leaves
    it running; once that task ends there is nothing left for the runner to do, so its loop
    thread, watchdog and workers end too, and its loop's file descriptors are closed.
    (A runner that outlives its last task holds three threads and a selector per
    shutdown for the life of the process.)"""
    threads_before = set(threading.enumerate())
    runner = Runner(name="stress-left-running")
    gate = Gate()
    finished = threading.Event()

    async def job() -> None:
        await gate.opened()
        finished.set()

    handle = runner.submit(job, name="left")
    runner.submit(lambda: None).result(WAIT)  # a worker thread exists too
    report = runner.shutdown(timeout=0.01, cancel_remaining=False)
    assert [i.name for i in report.abandoned] == ["left"]
    gate.open()
    assert finished.wait(WAIT), "an abandoned task is left running, not cancelled"
    assert handle.state is TaskState.ABANDONED
    leftover = new_threads(threads_before, WAIT, runner.name)
    assert leftover == [], f"the runner's threads outlived its last task: {leftover}"


# -- a sync task returning a coroutine, stopped while its thread runs --------------------------


@pytest.mark.parametrize("ending", ["cancelled", "timed-out", "abandoned"])
def test_coroutine_returned_by_a_stopped_sync_task_is_closed_not_dropped(
    ending: str, figures: Figures, wait_until: Callable[..., None]
) -> None:
    """``submit(lambda: send_mail(...))`` is a documented form: a sync callable whose
    coroutine is then awaited on the loop.  If the task is cancelled, times out or is
    abandoned while its thread still runs, that coroutine will never run: the runner must
    close it, as it closes every coroutine it refuses, or Python warns "coroutine ... was
    never awaited" when it is collected (an error under ``-W error``)."""
    runner = Runner(name=f"returns-coroutine-{ending}")
    started = threading.Event()
    release = threading.Event()
    returned: list[Coroutine[Any, Any, str]] = []

    async def send_mail() -> str:
        return "sent"

    def prepares_then_returns_a_coroutine() -> Coroutine[Any, Any, str]:
        started.set()
        if ending == "abandoned":
            release.wait(WAIT)  # deaf to cancellation: shutdown must leave it behind
        else:
            while not release.wait(0.002):
                try:
                    loopkeeper.check_cancelled()
                except asyncio.CancelledError:
                    break  # told to stop; returns what it has, as real code does
        coro = send_mail()
        returned.append(coro)
        return coro

    handle = runner.submit(
        prepares_then_returns_a_coroutine, timeout=0.05 if ending == "timed-out" else None
    )
    try:
        assert started.wait(WAIT)
        if ending == "cancelled":
            assert handle.cancel()
        elif ending == "abandoned":
            runner.shutdown(timeout=0.01)
            assert handle.state is TaskState.ABANDONED
            release.set()
        wait_until(lambda: bool(returned), what="the thread to return its coroutine")
        wait_until(handle.done, what="the task to end")
        assert (
            handle.state
            is {
                "cancelled": TaskState.CANCELLED,
                "timed-out": TaskState.FAILED,
                "abandoned": TaskState.ABANDONED,
            }[ending]
        )
        wait_until(
            lambda: inspect.getcoroutinestate(returned[0]) == inspect.CORO_CLOSED,
            timeout=2.0,
            what="the runner to close the coroutine that will never run",
        )
    finally:
        release.set()
        for coro in returned:
            coro.close()  # so that a failure here does not also warn at collection
        runner.shutdown(WAIT)
    figures.faults += 1


# -- a sync task cancelled while its job waits for a worker -----------------------------------


@pytest.mark.parametrize("stopped_by", ["cancel", "shutdown"])
def test_sync_task_cancelled_before_a_worker_takes_it_never_runs(
    stopped_by: str, figures: Figures, wait_until: Callable[..., None]
) -> None:
    """With every worker busy, a sync task's job waits in the queue.  If the task is
    cancelled meanwhile (by ``cancel()``, or by a shutdown that then has to abandon it),
    its function must never start when a worker frees up, as a cancelled
    ``concurrent.futures`` job never starts: otherwise code runs after its task was
    reported cancelled or abandoned, after ``shutdown()`` returned, with nobody waiting."""
    threads_before = set(threading.enumerate())
    runner = Runner(name=f"stress-queued-{stopped_by}", max_threads=1)
    release = threading.Event()
    busy = threading.Event()
    ran = threading.Event()

    def holds_the_only_worker() -> None:
        busy.set()
        release.wait(WAIT)  # ignores cancellation until released

    blocker = runner.submit(holds_the_only_worker, name="blocker")
    assert busy.wait(WAIT)
    queued = runner.submit(ran.set, name="queued")  # its job waits for the only worker
    # Once a later task ran, the loop has handed `queued` to the pool: it waits for the
    # worker there, PENDING (RUNNING only once its code starts).
    assert runner.submit(asyncio.sleep, 0, "probe").result(WAIT) == "probe"
    waiting = queued.state  # (a local: mypy would narrow the property for good)
    assert waiting is TaskState.PENDING
    try:
        if stopped_by == "cancel":
            assert queued.cancel() is True
            release.set()
            with pytest.raises(concurrent.futures.CancelledError):
                queued.result(WAIT)
            blocker.result(WAIT)
            assert runner.submit(lambda: "after").result(WAIT) == "after"  # FIFO: queued is past
        else:
            report = runner.shutdown(timeout=0.05)
            assert "blocker" in {i.name for i in report.abandoned}
            assert queued.state in {TaskState.CANCELLED, TaskState.ABANDONED}
            release.set()
            assert new_threads(threads_before, WAIT, runner.name) == []  # the queue is empty
    finally:
        release.set()
        runner.shutdown(WAIT)
    figures.faults += 1
    assert not ran.is_set(), f"the cancelled task's function ran anyway ({queued!r})"
