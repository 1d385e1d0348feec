"""Hooks and TaskExecutor: how a framework adapter takes part in every task.

The promises: ``capture()`` runs in the submitting thread and what it returns runs first
in the task's own context, which the task's threads inherit; ``around_task()`` wraps
every async task, ``around_thread_job()`` every job of a tracked thread; a failing hook
never loses a task; ``TaskExecutor`` keeps one tracked thread of the task for all its
calls.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

import loopkeeper

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


class CarryRequestId(loopkeeper.Hooks):
    """Carries REQUEST_ID from the submitter into the task, as a Django adapter carries
    the active language."""

    def __init__(self) -> None:
        self.captured_in: list[threading.Thread] = []

    def capture(self) -> Callable[[], object]:
        self.captured_in.append(threading.current_thread())
        value = REQUEST_ID.get()
        return lambda: REQUEST_ID.set(value)


@pytest.fixture
def carrying() -> Iterator[tuple[loopkeeper.Runner, CarryRequestId]]:
    hooks = CarryRequestId()
    runner = loopkeeper.Runner(name="hooks-runner", hooks=hooks, shutdown_timeout=5)
    yield runner, hooks
    assert runner.shutdown(timeout=5).clean


def _submit_as(runner: loopkeeper.Runner, request_id: str, func: Any) -> Any:
    """Submit from a context where REQUEST_ID is ``request_id`` (a request thread)."""
    context = contextvars.copy_context()
    context.run(REQUEST_ID.set, request_id)
    return context.run(runner.submit, func)


def test_capture_runs_in_the_submitting_thread_and_sets_the_task_context(
    carrying: tuple[loopkeeper.Runner, CarryRequestId],
) -> None:
    """What ``capture()`` returns runs inside the task, in its own context: a coroutine
    task sees the submitter's value, and the submitter's context is not the task's."""
    runner, hooks = carrying

    async def read() -> str:
        return REQUEST_ID.get()

    assert _submit_as(runner, "req-1", read).result(timeout=5) == "req-1"
    assert hooks.captured_in == [threading.current_thread()]
    assert REQUEST_ID.get() == "-"


def test_the_threads_a_task_uses_inherit_what_capture_carried(
    carrying: tuple[loopkeeper.Runner, CarryRequestId],
) -> None:
    """A sync task's worker thread, ``run_in_thread`` and ``asyncio.to_thread`` all see
    the value the task's context carries."""
    runner, _ = carrying

    def read() -> str:
        return REQUEST_ID.get()

    async def read_in_threads() -> tuple[str, str, str]:
        loop = asyncio.get_running_loop()
        return (
            await loopkeeper.run_in_thread(read),
            await asyncio.to_thread(read),
            await loop.run_in_executor(None, read),
        )

    assert _submit_as(runner, "req-sync", read).result(timeout=5) == "req-sync"
    assert _submit_as(runner, "req-async", read_in_threads).result(timeout=5) == (
        "req-async",
        "req-async",
        "req-async",
    )


def test_a_capture_that_raises_refuses_the_submit_and_counts_nothing() -> None:
    """A failing ``capture()`` is the submit's failure: nothing accepted, nothing
    counted, the coroutine closed (no "never awaited" warning: warnings are errors)."""

    class Broken(loopkeeper.Hooks):
        def capture(self) -> Callable[[], object]:
            raise LookupError("no request")

    async def job() -> None:
        pass

    with loopkeeper.Runner(name="broken-capture", hooks=Broken()) as runner:
        with pytest.raises(LookupError, match="no request"):
            runner.submit(job())
        assert runner.stats().submitted == 0


def test_a_carried_function_that_raises_fails_that_task_only() -> None:
    """The captured function raising inside the task fails the task (``task_failed``),
    and the next task runs."""

    class FailsInTask(loopkeeper.Hooks):
        def __init__(self) -> None:
            self.fail = True

        def capture(self) -> Callable[[], object]:
            fail, self.fail = self.fail, False

            def apply() -> None:
                if fail:
                    raise KeyError("gone")

            return apply

    async def job() -> int:
        return 7

    with loopkeeper.Runner(name="carry-fails", hooks=FailsInTask()) as runner:
        first = runner.submit(job)
        second = runner.submit(job)
        assert isinstance(first.exception(timeout=5), KeyError)
        assert second.result(timeout=5) == 7


class Recording(loopkeeper.Hooks):
    """Records what it wraps, with events to wait on."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.exited = threading.Event()
        self._lock = threading.Lock()

    def _note(self, what: str) -> None:
        with self._lock:
            self.events.append(what)

    def around_task(self) -> contextlib.AbstractAsyncContextManager[object]:
        @contextlib.asynccontextmanager
        async def scope() -> AsyncIterator[None]:
            self._note("task-enter")
            try:
                yield
            finally:
                self._note("task-exit")

        return scope()

    def around_thread_job(self) -> contextlib.AbstractContextManager[object]:
        @contextlib.contextmanager
        def scope() -> Iterator[None]:
            self._note(f"job-enter {threading.current_thread().name}")
            try:
                yield
            finally:
                self._note("job-exit")

        return scope()

    def thread_exiting(self) -> None:
        self._note(f"thread-exit {threading.current_thread().name}")
        self.exited.set()


def test_around_task_wraps_each_async_task_and_around_thread_job_each_thread_job() -> None:
    """An async task runs inside ``around_task()``; a sync task's job inside
    ``around_thread_job()``, on the worker thread; a worker that ends calls
    ``thread_exiting()``."""
    hooks = Recording()
    runner = loopkeeper.Runner(name="wrapped", hooks=hooks)

    async def inside() -> list[str]:
        return list(hooks.events)

    assert runner.submit(inside).result(timeout=5) == ["task-enter"]
    assert hooks.events[-1] == "task-exit"
    hooks.events.clear()

    def sync_inside() -> list[str]:
        return list(hooks.events)

    seen = runner.submit(sync_inside).result(timeout=5)
    assert seen == ["job-enter wrapped-worker-1"]
    assert runner.shutdown(timeout=5).clean
    assert hooks.exited.wait(5), "the worker never said it was exiting"
    assert "job-exit" in hooks.events
    assert "thread-exit wrapped-worker-1" in hooks.events


def test_a_failing_thread_job_hook_is_logged_and_the_job_still_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``around_thread_job()`` raising is logged as ``hook_failed``; the sync task runs
    and succeeds anyway (no accepted task is lost to an adapter's bug)."""

    class Broken(loopkeeper.Hooks):
        def around_thread_job(self) -> contextlib.AbstractContextManager[object]:
            raise RuntimeError("database is down")

    caplog.set_level(logging.ERROR, logger="loopkeeper")
    with loopkeeper.Runner(name="broken-job-hook", hooks=Broken()) as runner:
        assert runner.submit(lambda: 5).result(timeout=5) == 5
    assert any("hook_failed" in r.getMessage() for r in caplog.records)


def test_around_task_failing_on_entry_fails_the_task_and_closes_its_coroutine() -> None:
    """The hook's exception fails the task; the coroutine that never started is closed."""

    class Broken(loopkeeper.Hooks):
        def around_task(self) -> contextlib.AbstractAsyncContextManager[object]:
            raise ValueError("no scope")

    async def job() -> None:
        pass

    with loopkeeper.Runner(name="broken-task-hook", hooks=Broken()) as runner:
        handle = runner.submit(job())
        assert isinstance(handle.exception(timeout=5), ValueError)


def test_failure_hint_is_added_to_the_task_failed_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``failure_hint()`` says what to do: its text is the line's ``hint`` field."""

    class Hinting(loopkeeper.Hooks):
        def failure_hint(self, exc: BaseException) -> str | None:
            return "use a worker thread" if isinstance(exc, PermissionError) else None

    async def fails() -> None:
        raise PermissionError("no")

    caplog.set_level(logging.ERROR, logger="loopkeeper")
    with loopkeeper.Runner(name="hinting", hooks=Hinting()) as runner:
        runner.submit(fails).exception(timeout=5)
    [line] = [r.getMessage() for r in caplog.records if "task_failed" in r.getMessage()]
    assert "hint='use a worker thread'" in line


def test_hooks_must_be_a_hooks_instance() -> None:
    """A wrong ``hooks`` value is refused at construction, naming what was passed."""
    with pytest.raises(TypeError, match=r"hooks: expected a loopkeeper.Hooks instance"):
        loopkeeper.Runner(hooks=object())  # type: ignore[arg-type]


# -- TaskExecutor ------------------------------------------------------------------------------


def test_task_executor_runs_every_call_on_one_thread_owned_by_the_task(
    runner: loopkeeper.Runner,
) -> None:
    """All calls go to one tracked thread, listed by ``threads()`` as the task's, held
    between calls, and given back by ``shutdown()``."""
    listed: list[tuple[loopkeeper.ThreadInfo, ...]] = []

    async def job() -> set[str]:
        loop = asyncio.get_running_loop()
        executor = loopkeeper.TaskExecutor()
        try:
            names = {
                await loop.run_in_executor(executor, lambda: threading.current_thread().name)
                for _ in range(5)
            }
            listed.append(runner.threads())
            return names
        finally:
            executor.shutdown(wait=False)

    handle = runner.submit(job, name="orm-job")
    names = handle.result(timeout=5)
    assert len(names) == 1
    [info] = listed[0]
    assert (info.name, info.task_id, info.task_name) == (names.pop(), handle.id, "orm-job")


def test_cancelling_the_task_reaches_its_task_executor_thread(
    runner: loopkeeper.Runner,
) -> None:
    """``check_cancelled()`` in a TaskExecutor call raises once its task is cancelled."""
    started = threading.Event()
    stopped: list[BaseException] = []

    def blocking() -> None:
        started.set()
        while True:
            try:
                loopkeeper.check_cancelled()
            except asyncio.CancelledError as exc:
                stopped.append(exc)
                raise
            threading.Event().wait(0.01)

    async def job() -> None:
        executor = loopkeeper.TaskExecutor()
        try:
            await asyncio.get_running_loop().run_in_executor(executor, blocking)
        finally:
            executor.shutdown(wait=False)

    handle = runner.submit(job)
    assert started.wait(5), "the call never started"
    handle.cancel()
    with pytest.raises(concurrent.futures.CancelledError):
        handle.result(timeout=5)
    assert runner.shutdown(timeout=5).clean
    assert stopped, "the thread never saw the cancellation"


def test_task_executor_outside_a_task_and_after_shutdown_says_what_to_do(
    runner: loopkeeper.Runner,
) -> None:
    """Outside a task it raises ``RuntimeError`` naming the alternative; after
    ``shutdown()`` a submit raises ``RuntimeError``."""
    with pytest.raises(RuntimeError, match="inside a loopkeeper task"):
        loopkeeper.TaskExecutor()

    async def job() -> str:
        executor = loopkeeper.TaskExecutor()
        executor.shutdown()
        with pytest.raises(RuntimeError, match="after shutdown"):
            executor.submit(print)
        return "ok"

    assert runner.submit(job).result(timeout=5) == "ok"
