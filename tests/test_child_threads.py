"""Child threads: every thread a task uses is known, told when to stop, and accounted for."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import logging
import threading
import time
from collections.abc import Callable

import anyio
import anyio.to_thread
import pytest
from asgiref.sync import sync_to_async

import loopkeeper
from loopkeeper import Runner, TaskState

WaitUntil = Callable[..., None]
WAIT = 10.0
SLACK = 3.0


def _spin_until_cancelled(started: threading.Event, stopped: threading.Event) -> str:
    """Blocking work that cooperates: checks for cancellation between small steps."""
    started.set()
    try:
        while True:
            loopkeeper.check_cancelled()
            time.sleep(0.001)  # one small step of real work
    finally:
        stopped.set()


def test_sync_task_looping_on_check_cancelled_stops_after_cancel(
    runner: Runner, wait_until: WaitUntil
) -> None:
    """cancel() reaches a sync task's thread: check_cancelled() raises there, it ends
    CANCELLED, and the worker is free again."""
    started, stopped = threading.Event(), threading.Event()
    handle = runner.submit(_spin_until_cancelled, started, stopped)
    assert started.wait(WAIT)
    assert handle.cancel()
    assert stopped.wait(WAIT)
    with pytest.raises(concurrent.futures.CancelledError):
        handle.result(WAIT)
    # The worker reports the outcome first, then leaves the job's record: wait for it.
    wait_until(lambda: runner.stats().threads == 0, what="the worker to be released")


def test_check_cancelled_raises_a_base_exception_that_except_exception_does_not_swallow(
    runner: Runner,
) -> None:
    """User code with `except Exception` around check_cancelled() still stops."""
    started, stopped = threading.Event(), threading.Event()

    def careless() -> None:
        started.set()
        try:
            while True:
                try:
                    loopkeeper.check_cancelled()
                except Exception:  # noqa: BLE001  the user's habit under test
                    pytest.fail("CancelledError must not be an Exception")
                time.sleep(0.001)
        finally:
            stopped.set()

    handle = runner.submit(careless)
    assert started.wait(WAIT)
    handle.cancel()
    assert stopped.wait(WAIT)
    with pytest.raises(concurrent.futures.CancelledError):
        handle.result(WAIT)


def test_check_cancelled_outside_a_tracked_thread_is_a_no_op() -> None:
    """In a thread loopkeeper does not know, check_cancelled() does nothing."""
    loopkeeper.check_cancelled()
    errors: list[BaseException] = []

    def plain() -> None:
        try:
            loopkeeper.check_cancelled()
        except BaseException as exc:  # noqa: BLE001  recorded for the assertion
            errors.append(exc)

    thread = threading.Thread(target=plain)
    thread.start()
    thread.join(WAIT)
    assert errors == []


def test_a_timeout_reaches_the_thread_too(runner: Runner) -> None:
    """A sync task's own timeout tells its thread to stop; it ends FAILED, timed out."""
    started, stopped = threading.Event(), threading.Event()
    handle = runner.submit(_spin_until_cancelled, started, stopped, timeout=0.05)
    assert stopped.wait(WAIT)
    assert isinstance(handle.exception(WAIT), loopkeeper.TaskTimeoutError)


def test_to_thread_inside_a_task_is_tracked_and_cancelled_with_it(
    runner: Runner, wait_until: WaitUntil
) -> None:
    """asyncio.to_thread from a task runs on the tracked pool, owned by the task: listed by
    threads(), counted by stats(), and told to stop when the task is cancelled."""
    started, stopped = threading.Event(), threading.Event()

    async def parent() -> None:
        await asyncio.to_thread(_spin_until_cancelled, started, stopped)

    handle = runner.submit(parent, name="to-thread-parent")
    assert started.wait(WAIT)
    (info,) = runner.threads()
    assert info.name.startswith("test-runner-worker-")
    assert (info.task_id, info.task_name, info.state) == (handle.id, "to-thread-parent", "running")
    assert info.age >= 0
    assert runner.stats().threads == 1
    handle.cancel()
    assert stopped.wait(WAIT)
    with pytest.raises(concurrent.futures.CancelledError):
        handle.result(WAIT)
    wait_until(lambda: runner.stats().threads == 0, what="the thread to be released")
    assert runner.threads() == ()


def test_grandchild_thread_started_from_a_copied_context_is_cancelled_too(runner: Runner) -> None:
    """A thread that a task's thread starts with a copied context still knows its task."""
    started, stopped = threading.Event(), threading.Event()

    def grandchild_body() -> None:
        with contextlib.suppress(asyncio.CancelledError):  # the thread's end, not an error
            _spin_until_cancelled(started, stopped)

    def child() -> None:
        context = contextvars.copy_context()
        grandchild = threading.Thread(target=context.run, args=(grandchild_body,))
        grandchild.start()
        grandchild.join(WAIT)

    async def parent() -> None:
        await asyncio.to_thread(child)

    handle = runner.submit(parent)
    assert started.wait(WAIT)
    handle.cancel()
    assert stopped.wait(WAIT), "the grandchild never saw its task's cancellation"
    with pytest.raises(concurrent.futures.CancelledError):
        handle.result(WAIT)


def test_run_in_executor_none_is_tracked_with_the_submitting_task(runner: Runner) -> None:
    """run_in_executor copies no context; the pool takes the owner when the job is submitted."""
    started, stopped = threading.Event(), threading.Event()

    async def parent() -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, _spin_until_cancelled, started, stopped)

    handle = runner.submit(parent, name="executor-parent")
    assert started.wait(WAIT)
    assert [t.task_name for t in runner.threads()] == ["executor-parent"]
    handle.cancel()
    assert stopped.wait(WAIT)


def test_sync_to_async_without_thread_sensitivity_is_tracked(runner: Runner) -> None:
    """asgiref's sync_to_async(thread_sensitive=False) inside a task is tracked and stopped."""
    started, stopped = threading.Event(), threading.Event()

    async def parent() -> None:
        await sync_to_async(_spin_until_cancelled, thread_sensitive=False)(started, stopped)

    handle = runner.submit(parent, name="asgiref-parent")
    assert started.wait(WAIT)
    assert [t.task_name for t in runner.threads()] == ["asgiref-parent"]
    handle.cancel()
    assert stopped.wait(WAIT)


def test_anyio_to_thread_inside_a_task_honours_both_cancellations(runner: Runner) -> None:
    """anyio's own worker threads: check_cancelled() sees the task's cancellation, and an
    anyio cancel scope inside the task (move_on_after) too."""
    started, stopped = threading.Event(), threading.Event()

    async def scoped() -> str:
        with anyio.move_on_after(0.05):
            await anyio.to_thread.run_sync(_spin_until_cancelled, started, stopped)
        return "moved on"

    assert runner.submit(scoped).result(WAIT) == "moved on"
    assert stopped.wait(WAIT)

    started2, stopped2 = threading.Event(), threading.Event()

    async def parent() -> None:
        await anyio.to_thread.run_sync(_spin_until_cancelled, started2, stopped2)

    handle = runner.submit(parent)
    assert started2.wait(WAIT)
    handle.cancel()
    assert stopped2.wait(WAIT)


def test_run_in_thread_returns_the_value_from_a_named_tracked_thread(runner: Runner) -> None:
    """run_in_thread runs blocking code in a child thread of the task and returns its value."""

    async def parent() -> tuple[int, str]:
        return await loopkeeper.run_in_thread(
            lambda x: (x * 2, threading.current_thread().name), 21
        )

    value, thread_name = runner.submit(parent).result(WAIT)
    assert value == 42
    assert thread_name.startswith("test-runner-worker-")


def test_run_in_thread_reraises_what_the_thread_raised(runner: Runner) -> None:
    """An exception in the thread surfaces at the await."""

    def boom() -> None:
        raise LookupError("thread failed")

    async def parent() -> None:
        await loopkeeper.run_in_thread(boom)

    assert isinstance(runner.submit(parent).exception(WAIT), LookupError)


def test_run_in_thread_cancelled_by_an_inner_timeout_stops_only_that_thread(
    runner: Runner,
) -> None:
    """Cancelling the await (asyncio.wait_for inside the task) tells that thread to stop,
    waits for it to acknowledge, and leaves the task running."""
    started, stopped = threading.Event(), threading.Event()

    async def parent() -> str:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(
                loopkeeper.run_in_thread(_spin_until_cancelled, started, stopped), 0.05
            )
        assert stopped.is_set(), "the await returned before the thread acknowledged"
        return "task goes on"

    assert runner.submit(parent).result(WAIT) == "task goes on"


def test_run_in_thread_abandons_a_thread_that_ignores_cancellation_visibly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A thread that never checks: after ACK_TIMEOUT the await gives up, logs
    thread_abandoned, and the thread stays listed as abandoned and is named by shutdown."""
    runner = Runner(name="ignorer")
    release = threading.Event()
    started = threading.Event()

    def ignorer() -> None:
        started.set()
        release.wait(WAIT * 3)

    async def parent() -> None:
        await loopkeeper.run_in_thread(ignorer)

    with caplog.at_level(logging.WARNING, logger="loopkeeper"):
        handle = runner.submit(parent, name="impatient")
        assert started.wait(WAIT)
        begun = time.monotonic()
        handle.cancel()
        with pytest.raises(concurrent.futures.CancelledError):
            handle.result(WAIT)
        assert time.monotonic() - begun < loopkeeper._threads.ACK_TIMEOUT + SLACK
    abandoned = [r for r in caplog.records if getattr(r, "event", "") == "thread_abandoned"]
    assert len(abandoned) == 1
    assert "task_name='impatient'" in abandoned[0].getMessage()
    (info,) = runner.threads()
    assert (info.task_name, info.state) == ("impatient", "abandoned")
    report = runner.shutdown(timeout=0.05)
    assert [t.name for t in report.threads] == [info.name]
    assert not report.clean
    assert info.name in repr(report)
    release.set()


def test_run_in_thread_outside_a_task_raises_runtime_error() -> None:
    """run_in_thread needs a loopkeeper task to own the thread."""

    async def main() -> None:
        with pytest.raises(RuntimeError, match="inside a loopkeeper task"):
            await loopkeeper.run_in_thread(time.sleep, 0)

    asyncio.run(main())


def test_shutdown_reports_a_thread_that_never_checks_and_returns_on_time() -> None:
    """A to_thread job that ignores its token: the task is cancelled, the thread is named in
    the report (thread name, task name, age), and shutdown returns within timeout + grace."""
    runner = Runner(name="deaf")
    release = threading.Event()
    started = threading.Event()

    def deaf() -> None:
        started.set()
        release.wait(WAIT * 3)

    async def parent() -> None:
        await asyncio.to_thread(deaf)

    handle = runner.submit(parent, name="deaf-parent")
    assert started.wait(WAIT)
    begun = time.monotonic()
    report = runner.shutdown(timeout=0.1)
    assert time.monotonic() - begun < 0.1 + loopkeeper._runner.GRACE + SLACK
    (thread,) = report.threads
    assert thread.name.startswith("deaf-worker-")
    assert (thread.task_id, thread.task_name, thread.state) == (
        handle.id,
        "deaf-parent",
        "cancelling",
    )
    assert thread.age > 0
    assert f"{thread.name!r} (task {handle.id} 'deaf-parent'" in repr(report)
    assert handle.state is TaskState.CANCELLED
    release.set()


def test_shutdown_waits_for_threads_that_outlive_their_task() -> None:
    """A finished task's to_thread job still running is waited for within the deadline."""
    runner = Runner(name="outliver")
    started = threading.Event()
    release = threading.Event()
    finished = threading.Event()

    def slow() -> None:
        started.set()
        release.wait(WAIT)
        finished.set()

    async def parent() -> None:
        loop = asyncio.get_running_loop()
        loop.run_in_executor(None, slow)  # not awaited: the task ends first

    runner.submit(parent).result(WAIT)
    assert started.wait(WAIT)
    threading.Timer(0.05, release.set).start()
    report = runner.shutdown(timeout=WAIT)
    assert finished.is_set(), "shutdown returned while a tracked thread was still running"
    assert report.clean


def test_watchdog_names_the_task_blocking_the_loop_while_it_is_blocked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A task that blocks the loop thread is named, with its stack, once per incident,
    while the loop is still blocked; loop_unblocked follows when it comes back."""
    runner = Runner(name="watched", watchdog_threshold=0.1)
    release = threading.Event()
    warned = threading.Event()

    class Spy(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if getattr(record, "event", "") == "loop_blocked":
                warned.set()

    async def hog() -> None:
        release.wait(WAIT)  # blocks the loop thread: the bug the watchdog reports

    spy = Spy()
    logger = logging.getLogger("loopkeeper")
    logger.addHandler(spy)
    try:
        with caplog.at_level(logging.INFO, logger="loopkeeper"):
            handle = runner.submit(hog, name="loop-hog")
            assert warned.wait(WAIT), "no warning while the loop was blocked"
            assert not handle.done()  # still blocked when the warning came
            release.set()
            handle.result(WAIT)
            unblocked = threading.Event()
            runner.submit(asyncio.sleep, 0.3).result(WAIT)  # a few heartbeats pass
            unblocked.set()
    finally:
        logger.removeHandler(spy)
        runner.shutdown(timeout=WAIT)
    blocked = [r for r in caplog.records if getattr(r, "event", "") == "loop_blocked"]
    assert len(blocked) == 1
    message = blocked[0].getMessage()
    assert f"task_id={handle.id}" in message
    assert "task_name='loop-hog'" in message
    assert "in hog" in message  # the stack shows where it blocks
    assert any(getattr(r, "event", "") == "loop_unblocked" for r in caplog.records)


def test_watchdog_can_be_switched_off() -> None:
    """watchdog_threshold=None starts no watchdog thread."""
    with Runner(name="unwatched", watchdog_threshold=None) as runner:
        runner.submit(asyncio.sleep, 0).result(WAIT)
        assert "unwatched-watchdog" not in {t.name for t in threading.enumerate()}
