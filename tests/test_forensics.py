"""Why a task is stuck: ``submitted_from``, ``stack`` and ``Runner.tasks()``.

A report names each task shutdown left behind with where it was submitted and where it
was when abandoned (its worker thread's frames, or its coroutine's); ``tasks()`` lists
the unfinished ones while the runner runs; ``shutdown_incomplete`` and ``loop_blocked``
log the same facts.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import loopkeeper
from loopkeeper import TaskState

if TYPE_CHECKING:
    import pytest

HERE = __file__


def stubborn_sync_job(started: threading.Event, release: threading.Event) -> None:
    started.set()
    release.wait(30)


async def stubborn_coroutine(started: threading.Event, release: asyncio.Event) -> None:
    started.set()
    await release.wait()


def test_an_abandoned_sync_task_names_its_submit_call_and_its_threads_stack() -> None:
    """The report's ``TaskInfo`` says ``file:line in function`` of the submit call, and
    the stack of the worker thread still running it, innermost frame last."""
    runner = loopkeeper.Runner(name="forensics-sync")
    started, release = threading.Event(), threading.Event()
    try:
        runner.submit(stubborn_sync_job, started, release, name="stuck-export")
        assert started.wait(5), "the job never started"
        report = runner.shutdown(timeout=0, cancel_remaining=False)
    finally:
        release.set()
    [info] = report.abandoned
    assert info.submitted_from is not None
    assert info.submitted_from.startswith(f"{HERE}:")
    assert info.submitted_from.endswith(
        "in test_an_abandoned_sync_task_names_its_submit_call_and_its_threads_stack"
    )
    assert info.stack is not None
    # Innermost last: the job's own frame comes after the pool's.
    assert info.stack.index("in _work") < info.stack.index("in stubborn_sync_job")


def test_an_abandoned_coroutine_gives_its_coroutine_stack_and_a_pending_one_none() -> None:
    """A running coroutine's stack names the coroutine; a task that never started has
    no stack (None), and both say where they were submitted."""
    runner = loopkeeper.Runner(name="forensics-async", max_concurrency=1)
    started = threading.Event()
    gate: list[asyncio.Event] = []

    async def holder() -> None:
        gate.append(asyncio.Event())
        await stubborn_coroutine(started, gate[0])

    runner.submit(holder, name="holder")
    assert started.wait(5), "the coroutine never started"
    runner.submit(holder, name="never-ran")
    report = runner.shutdown(timeout=0, cancel_remaining=False)
    running, pending = report.abandoned
    assert (running.name, pending.name) == ("holder", "never-ran")
    assert running.stack is not None
    assert "stubborn_coroutine" in running.stack
    assert pending.stack is None
    assert pending.submitted_from is not None
    assert pending.submitted_from.startswith(f"{HERE}:")


def test_tasks_lists_the_unfinished_tasks_with_state_age_thread_and_origin(
    runner: loopkeeper.Runner, wait_until: Callable[..., None]
) -> None:
    """``tasks()`` is a snapshot of what is unfinished, oldest first, for a status page."""
    started, release = threading.Event(), threading.Event()
    try:
        sync = runner.submit(stubborn_sync_job, started, release, name="export")
        assert started.wait(5)
        wait_until(lambda: sync.state is TaskState.RUNNING, what="the task to run")
        [info] = runner.tasks()
    finally:
        release.set()
    assert (info.id, info.name, info.state) == (sync.id, "export", TaskState.RUNNING)
    assert info.thread is not None
    assert info.thread.startswith("test-runner-worker-")
    assert info.age >= 0
    assert info.stack is None
    assert info.submitted_from is not None
    assert info.submitted_from.startswith(f"{HERE}:")
    sync.result(timeout=5)
    assert runner.tasks() == ()


def test_submitted_from_skips_loopkeepers_own_frames(runner: loopkeeper.Runner) -> None:
    """A wrapper living in a ``loopkeeper.*`` module (as ``loopkeeper.submit`` and the
    Django backend do) is skipped: the origin is the wrapper's caller."""
    namespace: dict[str, Any] = {"__name__": "loopkeeper.fake_wrapper", "runner": runner}
    exec(
        "def wrapper(func, *args, **options):\n    return runner.submit(func, *args, **options)\n",
        namespace,
    )
    release = threading.Event()
    started = threading.Event()
    try:
        namespace["wrapper"](stubborn_sync_job, started, release)
        assert started.wait(5)
        [info] = runner.tasks()
    finally:
        release.set()
    assert info.submitted_from is not None
    assert info.submitted_from.startswith(f"{HERE}:")
    assert info.submitted_from.endswith("in test_submitted_from_skips_loopkeepers_own_frames")


def test_shutdown_incomplete_logs_where_each_abandoned_task_came_from_and_was(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The ``shutdown_incomplete`` line carries ``stacks``: each abandoned task with its
    submit location and its stack, so a log alone explains what was stuck."""
    runner = loopkeeper.Runner(name="forensics-log")
    started, release = threading.Event(), threading.Event()
    caplog.set_level(logging.WARNING, logger="loopkeeper")
    try:
        runner.submit(stubborn_sync_job, started, release, name="stuck-export")
        assert started.wait(5)
        runner.shutdown(timeout=0, cancel_remaining=False)
    finally:
        release.set()
    [record] = [r for r in caplog.records if getattr(r, "event", "") == "shutdown_incomplete"]
    stacks = record.__dict__["loopkeeper"]["stacks"]
    assert stacks.startswith(f"task 1 'stuck-export' submitted from {HERE}:")
    assert "in stubborn_sync_job" in stacks
    assert "stacks=" in record.getMessage()


def test_loop_blocked_names_where_the_blocking_task_was_submitted(
    caplog: pytest.LogCaptureFixture, wait_until: Callable[..., None]
) -> None:
    """``loop_blocked`` names the blocking task's ``submitted_from`` beside its stack."""
    runner = loopkeeper.Runner(name="forensics-blocked", watchdog_threshold=0.05)
    release = threading.Event()

    async def blocks_the_loop() -> None:
        release.wait(30)  # a sync wait inside async def: the mistake the watchdog catches

    caplog.set_level(logging.WARNING, logger="loopkeeper")
    try:
        runner.submit(blocks_the_loop, name="blocker")
        wait_until(
            lambda: any("loop_blocked" in r.getMessage() for r in caplog.records),
            what="a loop_blocked line",
        )
    finally:
        release.set()
    assert runner.shutdown(timeout=5).completed == 1
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("loop_blocked")]
    assert "task_name='blocker'" in line
    assert f"submitted_from='{HERE}:" in line
