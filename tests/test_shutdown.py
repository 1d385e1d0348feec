"""Shutdown: stop accepting, log the manifest, drain, cancel, abandon, report."""

from __future__ import annotations

import asyncio
import gc
import inspect
import logging
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import pytest

import loopkeeper
from loopkeeper import Runner, TaskState

WaitUntil = Callable[..., None]
WAIT = 10.0
SLACK = 3.0  # seconds allowed beyond a promised deadline on a shared, noisy machine


class _EventHandler(logging.Handler):
    """Sets an event when a record with the given ``event`` field is emitted."""

    def __init__(self, event: str) -> None:
        super().__init__()
        self.wanted = event
        self.seen = threading.Event()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "event", None) == self.wanted:
            self.records.append(record)
            self.seen.set()


@pytest.fixture
def manifest_log() -> Any:
    handler = _EventHandler("shutdown_started")
    logger = logging.getLogger("loopkeeper")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(old_level)


def test_shutdown_logs_the_manifest_before_it_waits(manifest_log: _EventHandler) -> None:
    """The unfinished tasks are named in a warning first: it is the trace left by a SIGKILL."""
    runner = Runner(name="manifest")
    gate = threading.Event()
    handles = [runner.submit(gate.wait, WAIT, name=f"job-{i}") for i in range(3)]
    shutting = threading.Thread(target=runner.shutdown, kwargs={"timeout": WAIT})
    shutting.start()
    assert manifest_log.seen.wait(WAIT)
    assert shutting.is_alive()  # still draining: the line came first
    record = manifest_log.records[0]
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    for h in handles:
        assert f"{h.id} '{h.name}'" in message
    gate.set()
    shutting.join(WAIT)
    assert not shutting.is_alive()


def test_a_long_manifest_is_capped_with_its_count(manifest_log: _EventHandler) -> None:
    """Past 50 tasks the line names the first ones and counts the rest."""
    runner = Runner(name="long-manifest")
    gate = threading.Event()

    async def parked() -> None:
        while not gate.is_set():
            await asyncio.sleep(0.001)

    for _ in range(60):
        runner.submit(parked)
    shutting = threading.Thread(target=runner.shutdown, kwargs={"timeout": WAIT})
    shutting.start()
    assert manifest_log.seen.wait(WAIT)
    assert "and 10 more" in manifest_log.records[0].getMessage()
    gate.set()
    shutting.join(WAIT)


def test_shutdown_waits_for_unfinished_tasks_and_reports_clean() -> None:
    """Tasks that finish within the timeout are waited for; the report is clean."""
    runner = Runner(name="drain")
    gate = threading.Event()

    async def job() -> str:
        while not gate.is_set():
            await asyncio.sleep(0.001)
        return "done"

    handles = [runner.submit(job) for _ in range(5)]
    threading.Timer(0.05, gate.set).start()
    report = runner.shutdown(timeout=WAIT)
    assert report.clean
    assert report.completed == 5
    assert [h.result(0) for h in handles] == ["done"] * 5


def test_after_the_deadline_the_rest_is_cancelled_and_counted() -> None:
    """Unfinished at the deadline: cancelled, counted in report.cancelled, state CANCELLED."""
    runner = Runner(name="deadline")
    handle = runner.submit(asyncio.sleep, 60, name="sleeper")
    begun = time.monotonic()
    report = runner.shutdown(timeout=0.1)
    assert time.monotonic() - begun < 0.1 + loopkeeper._runner.GRACE + SLACK
    assert report.cancelled == 1
    assert not report.clean
    assert report.abandoned == ()
    assert handle.state is TaskState.CANCELLED


@pytest.mark.parametrize("trial", range(5))
def test_at_the_deadline_a_task_waiting_for_a_slot_is_cancelled_before_it_can_start(
    trial: int,
) -> None:
    """The deadline cancels the tasks waiting for a slot before the running ones: a slot
    that a cancelled running task frees never starts a task the shutdown is about to
    cancel.  (It did in about half the runs when the running ones went first.)"""
    runner = Runner(name="deadline-order", max_concurrency=1)
    started: list[str] = []

    async def hold(name: str) -> None:
        started.append(name)
        await asyncio.sleep(60)

    first = runner.submit(hold, "first")
    second = runner.submit(hold, "second")
    assert _wait_until(lambda: started == ["first"])
    report = runner.shutdown(timeout=0.05)
    assert started == ["first"]
    assert (first.state, second.state) == (TaskState.CANCELLED, TaskState.CANCELLED)
    assert (report.completed, report.cancelled) == (0, 2)


def _wait_until(predicate: Callable[[], bool], deadline: float = 5.0) -> bool:
    end = time.monotonic() + deadline
    while not predicate():
        if time.monotonic() > end:
            return False
        time.sleep(0.001)  # a poll bounded by the deadline above
    return True


def test_a_task_ignoring_cancellation_is_abandoned_and_named() -> None:
    """A coroutine that keeps running after cancel is ABANDONED after the grace, by name."""
    runner = Runner(name="stubborn")
    release = threading.Event()
    started = threading.Event()

    async def stubborn() -> None:
        started.set()
        while not release.is_set():
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                continue

    handle = runner.submit(stubborn, name="stubborn-task")
    assert started.wait(WAIT)
    begun = time.monotonic()
    report = runner.shutdown(timeout=0.05)
    assert time.monotonic() - begun < 0.05 + loopkeeper._runner.GRACE + SLACK
    assert [(i.id, i.name, i.state, i.thread) for i in report.abandoned] == [
        (handle.id, "stubborn-task", TaskState.ABANDONED, None)
    ]
    assert "stubborn-task" in repr(report)
    with pytest.raises(loopkeeper.TaskAbandonedError):
        handle.result(0)
    release.set()
    stats = runner.stats()
    assert stats.abandoned == 1
    assert stats.submitted == stats.abandoned


def test_a_sync_task_that_never_returns_is_abandoned_with_its_thread_name() -> None:
    """A worker thread still running at the end is named in the report; shutdown returns."""
    runner = Runner(name="blocking")
    release = threading.Event()
    started = threading.Event()

    def job() -> None:
        started.set()
        release.wait(WAIT * 3)

    handle = runner.submit(job, name="never-returns")
    assert started.wait(WAIT)
    begun = time.monotonic()
    report = runner.shutdown(timeout=0.05)
    assert time.monotonic() - begun < 0.05 + loopkeeper._runner.GRACE + SLACK
    (info,) = report.abandoned
    assert (info.id, info.name) == (handle.id, "never-returns")
    assert info.thread is not None
    assert info.thread.startswith("blocking-worker-")
    assert info.age > 0
    assert f"thread '{info.thread}'" in repr(report)
    release.set()
    # Its later end changes nothing: abandoned is final and counted once.
    assert handle.state is TaskState.ABANDONED
    assert runner.stats().abandoned == 1


def test_shutdown_returns_on_time_when_the_loop_thread_is_blocked() -> None:
    """A task that never yields blocks the loop; shutdown still returns within its bound."""
    runner = Runner(name="blocked-loop")
    release = threading.Event()
    started = threading.Event()

    async def hog() -> None:
        started.set()
        release.wait(WAIT * 3)  # blocks the loop thread: the bug this protects against

    handle = runner.submit(hog, name="hog")
    assert started.wait(WAIT)
    queued = runner.submit(asyncio.sleep, 0, name="stuck-behind")
    begun = time.monotonic()
    report = runner.shutdown(timeout=0.1)
    assert time.monotonic() - begun < 0.1 + loopkeeper._runner.GRACE + SLACK
    names = {i.name for i in report.abandoned}
    assert "hog" in names
    assert handle.state is TaskState.ABANDONED
    assert queued.done()
    release.set()


def test_cancel_remaining_false_abandons_at_the_deadline_and_lets_it_run() -> None:
    """Nothing is cancelled: the unfinished task is reported ABANDONED and keeps running."""
    runner = Runner(name="no-cancel")
    release = threading.Event()
    finished = threading.Event()

    async def job() -> None:
        while not release.is_set():
            await asyncio.sleep(0.001)
        finished.set()

    handle = runner.submit(job, name="left-running")
    report = runner.shutdown(timeout=0.05, cancel_remaining=False)
    assert report.cancelled == 0
    assert [i.name for i in report.abandoned] == ["left-running"]
    release.set()
    assert finished.wait(WAIT), "an abandoned task is left running, not cancelled"
    assert handle.state is TaskState.ABANDONED


def test_shutdown_is_idempotent_and_safe_from_two_threads() -> None:
    """Concurrent and repeated calls all return the one report."""
    runner = Runner(name="twice")
    gate = threading.Event()
    runner.submit(gate.wait, WAIT)
    reports: list[loopkeeper.ShutdownReport] = []
    barrier = threading.Barrier(3)

    def call() -> None:
        barrier.wait(WAIT)
        reports.append(runner.shutdown(timeout=WAIT))

    threads = [threading.Thread(target=call) for _ in range(2)]
    for t in threads:
        t.start()
    barrier.wait(WAIT)
    gate.set()
    for t in threads:
        t.join(WAIT)
    assert len(reports) == 2
    assert reports[0] is reports[1]
    assert runner.shutdown(timeout=0) is reports[0]
    assert reports[0].clean


def test_submit_after_shutdown_raises_runner_closed_error() -> None:
    """Once shutdown began, submit refuses, counts the refusal, and closes a coroutine."""
    runner = Runner(name="closed")
    runner.submit(asyncio.sleep, 0).result(WAIT)
    runner.shutdown(timeout=1)

    async def late() -> None:
        pass

    coro = late()
    with pytest.raises(loopkeeper.RunnerClosedError, match="'closed'"):
        runner.submit(coro)
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED
    assert runner.stats().rejected == 1
    assert runner.stats().submitted == 1


def test_shutdown_of_a_runner_that_never_started_is_clean_and_final() -> None:
    """Shutting down an idle runner starts nothing and closes it."""
    runner = Runner(name="never-started")
    report = runner.shutdown(timeout=0)
    assert report.clean
    assert "never-started" not in {t.name for t in threading.enumerate()}
    with pytest.raises(loopkeeper.RunnerClosedError):
        runner.submit(asyncio.sleep, 0)


def test_shutdown_stops_the_loop_thread_and_idle_workers() -> None:
    """A clean shutdown leaves no thread of the runner behind."""
    runner = Runner(name="tidy")
    runner.submit(asyncio.sleep, 0).result(WAIT)
    runner.submit(lambda: None).result(WAIT)
    assert runner.shutdown(timeout=WAIT).clean
    deadline = time.monotonic() + WAIT
    while any(t.name.startswith("tidy") for t in threading.enumerate()):
        assert time.monotonic() < deadline, [t.name for t in threading.enumerate()]
        threading.Event().wait(0.01)


def test_shutdown_on_the_loop_thread_raises_and_changes_nothing(runner: Runner) -> None:
    """A task cannot block its own loop waiting for itself: RuntimeError, runner stays open."""

    async def suicidal() -> str:
        with pytest.raises(RuntimeError, match="ashutdown"):
            runner.shutdown()
        return "still open"

    assert runner.submit(suicidal).result(WAIT) == "still open"
    assert runner.submit(asyncio.sleep, 0, "ok").result(WAIT) == "ok"


def test_ashutdown_from_a_task_drains_the_others_but_not_itself() -> None:
    """await runner.ashutdown() inside a task does not wait for (or cancel) that task."""
    runner = Runner(name="self-stop")
    gate = threading.Event()

    async def other() -> str:
        while not gate.is_set():
            await asyncio.sleep(0.001)
        return "other done"

    async def stopper() -> loopkeeper.ShutdownReport:
        threading.Timer(0.05, gate.set).start()
        return await runner.ashutdown(timeout=WAIT)

    others = [runner.submit(other) for _ in range(3)]
    stop = runner.submit(stopper, name="stopper")
    report = stop.result(WAIT)
    assert report.clean
    assert report.completed == 3
    assert [h.result(0) for h in others] == ["other done"] * 3
    assert stop.state is TaskState.SUCCEEDED
    assert runner.shutdown(timeout=0) is report


def test_shutdown_from_a_sync_task_does_not_wait_for_itself() -> None:
    """A sync task may call shutdown(): it drains the rest and returns the report."""
    runner = Runner(name="sync-stop")
    handle = runner.submit(lambda: runner.shutdown(timeout=WAIT))
    report = handle.result(WAIT)
    assert report.clean
    assert handle.state is TaskState.SUCCEEDED


@pytest.mark.anyio
async def test_ashutdown_does_not_block_the_awaiting_loop() -> None:
    """From another loop, ashutdown waits without blocking it: a ticker keeps ticking."""
    runner = Runner(name="async-stop")
    gate = threading.Event()
    ticks = 0
    runner.submit(gate.wait, WAIT)

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            if ticks == 20:
                gate.set()  # only a ticking loop lets the drain finish
            await asyncio.sleep(0)

    ticking = asyncio.ensure_future(ticker())
    report = await runner.ashutdown(timeout=WAIT)
    ticking.cancel()
    assert report.clean
    assert ticks >= 20


def test_context_manager_shuts_down_on_exit() -> None:
    """with Runner() as r: drains on exit."""
    with Runner(name="ctx") as runner:
        handle = runner.submit(asyncio.sleep, 0.01, "v")
    assert handle.result(0) == "v"
    with pytest.raises(loopkeeper.RunnerClosedError):
        runner.submit(asyncio.sleep, 0)


def test_an_accepted_task_without_a_reference_still_runs(runner: Runner) -> None:
    """The runner holds every task strongly: dropping the handle loses nothing.  The task
    waits on a future that only it references (no timer or callback of the loop keeps it),
    so if the runner kept no reference, the collector would free the task and the future:
    the weak reference to the future would die and the task would never finish."""
    futures: list[weakref.ref[asyncio.Future[None]]] = []
    parked = threading.Event()
    finished = threading.Event()

    async def orphan() -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        futures.append(weakref.ref(future))
        loop.call_soon(parked.set)  # runs once this task is suspended on the future
        await future
        finished.set()

    runner.submit(orphan)
    assert parked.wait(WAIT)
    gc.collect()
    future = futures[0]()
    assert future is not None, "the task was freed: the runner kept no reference to it"
    future.get_loop().call_soon_threadsafe(future.set_result, None)
    del future
    assert finished.wait(WAIT)
