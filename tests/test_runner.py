"""Runner behaviour: what runs where, outcomes, limits, cancellation and timeouts."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import functools
import gc
import inspect
import logging
import os
import threading
import types
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest

import loopkeeper
from loopkeeper import Runner, TaskState

WaitUntil = Callable[..., None]
WAIT = 10.0  # seconds: a deadline for things that happen in milliseconds


def state_of(handle: loopkeeper.TaskHandle[Any]) -> TaskState:
    """Read the state through a call, so that mypy does not narrow it across actions."""
    return handle.state


def test_no_thread_exists_before_the_first_submit() -> None:
    """A runner is lazy: constructing it starts nothing; the first submit starts one thread."""
    with Runner(name="lazy-runner") as runner:
        assert "lazy-runner" not in {t.name for t in threading.enumerate()}
        runner.submit(asyncio.sleep, 0).result(WAIT)
        loop_threads = [t for t in threading.enumerate() if t.name == "lazy-runner"]
        assert len(loop_threads) == 1
        assert loop_threads[0].daemon


def test_async_function_runs_on_the_loop_thread_with_its_args(runner: Runner) -> None:
    """An async def function is called with the given args on the runner's loop thread."""

    async def where(a: int, b: int) -> tuple[int, str]:
        return a + b, threading.current_thread().name

    assert runner.submit(where, 2, 3).result(WAIT) == (5, "test-runner")


def test_partial_passes_keyword_arguments(runner: Runner) -> None:
    """Keyword arguments for the task travel in functools.partial."""

    async def greet(name: str, *, punctuation: str) -> str:
        return name + punctuation

    handle = runner.submit(functools.partial(greet, punctuation="!"), "ada")
    assert handle.result(WAIT) == "ada!"
    assert handle.name.endswith("greet")


def test_coroutine_object_is_awaited(runner: Runner) -> None:
    """An unstarted coroutine object is scheduled as it is."""

    async def answer() -> int:
        return 42

    assert runner.submit(answer()).result(WAIT) == 42


def test_sync_callable_runs_in_a_named_worker_thread(runner: Runner) -> None:
    """A plain callable runs in a worker thread named '<runner>-worker-N', not on the loop."""
    handle = runner.submit(lambda x: (x * 2, threading.current_thread().name), 21)
    value, thread_name = handle.result(WAIT)
    assert value == 42
    assert thread_name.startswith("test-runner-worker-")


def test_worker_threads_are_reused(runner: Runner) -> None:
    """Sequential sync tasks reuse an idle worker instead of starting a thread each."""
    names = {runner.submit(threading.current_thread).result(WAIT).name for _ in range(20)}
    assert len(names) <= 2  # the kept-alive worker, and at most one more


def test_worker_pool_is_bounded_by_max_threads(wait_until: WaitUntil) -> None:
    """No more than max_threads workers run jobs at once; the rest queue and still run."""
    with Runner(name="bounded", max_threads=2) as runner:
        gate = threading.Event()
        lock = threading.Lock()
        running = 0
        peak = 0

        def job() -> None:
            nonlocal running, peak
            with lock:
                running += 1
                peak = max(peak, running)
            gate.wait(WAIT)
            with lock:
                running -= 1

        handles = [runner.submit(job) for _ in range(6)]
        wait_until(lambda: runner.stats().threads == 2, what="both workers busy")
        gate.set()
        for h in handles:
            h.result(WAIT)
        assert peak == 2


def test_sync_callable_returning_a_coroutine_has_it_awaited(runner: Runner) -> None:
    """A lambda around an async call is common; its coroutine is awaited on the loop."""

    async def double(x: int) -> int:
        return x * 2

    assert runner.submit(lambda: double(4)).result(WAIT) == 8


def test_each_task_runs_in_a_fresh_context(runner: Runner) -> None:
    """Tasks never see the submitter's context variables (nor each other's)."""
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    var.set("submitter")

    async def read_async() -> str:
        value = var.get()
        var.set("task-1")
        return value

    def read_sync() -> str:
        return var.get()

    assert runner.submit(read_async).result(WAIT) == "unset"
    assert runner.submit(read_async).result(WAIT) == "unset"
    assert runner.submit(read_sync).result(WAIT) == "unset"


@pytest.mark.parametrize("exc_type", [ValueError, SystemExit, KeyboardInterrupt])
def test_a_raising_task_fails_alone_and_the_loop_survives(
    runner: Runner, exc_type: type[BaseException]
) -> None:
    """Anything a task raises, SystemExit and KeyboardInterrupt included, fails that task."""

    async def boom() -> None:
        raise exc_type("boom")

    handle = runner.submit(boom)
    exc = handle.exception(WAIT)
    assert isinstance(exc, exc_type)
    assert handle.state is TaskState.FAILED
    with pytest.raises(exc_type):
        handle.result(0)
    assert runner.submit(asyncio.sleep, 0, "alive").result(WAIT) == "alive"
    assert runner.stats().failed == 1


def test_an_async_task_runs_as_its_own_coroutine(runner: Runner) -> None:
    """No wrapper: the asyncio task's coroutine is the task's own (one frame per step)."""

    async def whoami() -> str:
        task = asyncio.current_task()
        assert task is not None
        coro = task.get_coro()
        assert isinstance(coro, types.CoroutineType)
        return coro.cr_code.co_name

    assert runner.submit(whoami).result(WAIT) == "whoami"
    assert runner.submit(whoami()).result(WAIT) == "whoami"


@pytest.mark.parametrize("exc_type", [SystemExit, KeyboardInterrupt])
def test_a_task_s_system_exit_is_logged_once_as_that_task_s_failure(
    runner: Runner, caplog: pytest.LogCaptureFixture, exc_type: type[BaseException]
) -> None:
    """asyncio re-raises a task's SystemExit/KeyboardInterrupt out of the loop; the loop
    thread runs on, and the task's ``task_failed`` line is the only ERROR line about it.
    The same exception from a plain loop callback (no task to report it) is logged as
    ``loop_callback_failed``."""

    async def boom() -> None:
        raise exc_type("from a task")

    async def from_a_callback() -> None:
        def raise_it() -> None:
            raise exc_type("from a loop callback")

        asyncio.get_running_loop().call_soon(raise_it)

    with caplog.at_level(logging.DEBUG, logger="loopkeeper"):
        runner.submit(boom).exception(WAIT)
        runner.submit(asyncio.sleep, 0).result(WAIT)  # the loop thread has decided by now
        errors = [getattr(r, "event", None) for r in caplog.records if r.levelno >= logging.ERROR]
        assert errors == ["task_failed"]

        runner.submit(from_a_callback).result(WAIT)
        runner.submit(asyncio.sleep, 0).result(WAIT)
        errors = [getattr(r, "event", None) for r in caplog.records if r.levelno >= logging.ERROR]
        assert errors == ["task_failed", "loop_callback_failed"]
    assert runner.submit(asyncio.sleep, 0, "alive").result(WAIT) == "alive"


@pytest.mark.parametrize("exc_type", [ValueError, SystemExit, KeyboardInterrupt])
def test_a_raising_sync_task_fails_alone(runner: Runner, exc_type: type[BaseException]) -> None:
    """The same holds for a sync task: its worker thread survives to run the next job."""

    def boom() -> None:
        raise exc_type("boom")

    assert isinstance(runner.submit(boom).exception(WAIT), exc_type)
    assert runner.submit(lambda: "alive").result(WAIT) == "alive"


def test_a_failed_task_is_logged_once_with_id_name_and_traceback_but_no_arguments(
    runner: Runner, caplog: pytest.LogCaptureFixture
) -> None:
    """One ERROR line per failure, with id, name and traceback; never the task's arguments."""
    secret = "s3cr3t-token-value"

    async def charge(card: str) -> None:
        raise RuntimeError("card declined")

    with caplog.at_level(logging.DEBUG, logger="loopkeeper"):
        handle = runner.submit(charge, secret, name="charge-card")
        handle.exception(WAIT)
        runner.submit(asyncio.sleep, 0).result(WAIT)  # later lines, if any, are in by now
    failed = [r for r in caplog.records if getattr(r, "event", None) == "task_failed"]
    assert len(failed) == 1
    record = failed[0]
    assert record.levelno == logging.ERROR
    assert f"task_id={handle.id}" in record.getMessage()
    assert "task_name='charge-card'" in record.getMessage()
    assert record.exc_info is not None
    assert record.exc_info[1] is handle.exception(0)
    assert all(secret not in r.getMessage() for r in caplog.records)
    assert secret not in caplog.text


def test_asyncio_never_reports_an_unretrieved_task_exception(
    runner: Runner, caplog: pytest.LogCaptureFixture
) -> None:
    """Nobody retrieving a failed task's result must not make asyncio complain."""

    async def boom() -> None:
        raise ValueError("nobody asks")

    with caplog.at_level(logging.DEBUG):
        runner.submit(boom).exception(WAIT)
        gc.collect()
        runner.submit(asyncio.sleep, 0).result(WAIT)
    assert "never retrieved" not in caplog.text


def test_submit_from_a_task_on_the_loop_thread(runner: Runner) -> None:
    """A task may submit more tasks (from the loop thread itself) and await them."""

    async def child(x: int) -> int:
        return x + 1

    async def parent() -> int:
        handle = runner.submit(child, 1)
        return await handle

    assert runner.submit(parent).result(WAIT) == 2


def test_result_on_the_loop_thread_raises_instead_of_deadlocking(runner: Runner) -> None:
    """result() of an unfinished task, called on the loop thread, says to await instead."""

    async def parent() -> str:
        handle = runner.submit(asyncio.sleep, 0.01)
        with pytest.raises(RuntimeError, match="await handle"):
            handle.result()
        await handle
        return "ok"

    assert runner.submit(parent).result(WAIT) == "ok"


@pytest.mark.anyio
async def test_await_handle_from_another_asyncio_loop_does_not_block_it(runner: Runner) -> None:
    """Awaiting a handle from a foreign loop yields to that loop while the task runs."""
    release = threading.Event()
    ticks = 0

    def blocking() -> str:
        assert release.wait(WAIT)
        return "done"

    handle = runner.submit(blocking)

    async def ticker() -> None:
        nonlocal ticks
        while not handle.done():
            ticks += 1
            if ticks == 5:
                release.set()
            await asyncio.sleep(0)

    ticking = asyncio.ensure_future(ticker())
    assert await handle == "done"
    await ticking
    assert ticks >= 5


@pytest.mark.parametrize("anyio_backend", ["trio"])
@pytest.mark.anyio
async def test_await_handle_from_trio(runner: Runner) -> None:
    """A handle is awaitable from trio as well."""

    async def answer() -> int:
        await asyncio.sleep(0.01)
        return 7

    assert await runner.submit(answer) == 7


@pytest.mark.anyio
async def test_await_a_cancelled_handle_raises_asyncio_cancelled_error(runner: Runner) -> None:
    """await of a cancelled task raises asyncio.CancelledError, as a cancelled future does."""
    handle = runner.submit(asyncio.sleep, 30)
    handle.cancel()
    with pytest.raises(asyncio.CancelledError):
        await handle
    with pytest.raises(concurrent.futures.CancelledError):
        handle.result(WAIT)


@pytest.mark.anyio
async def test_cancelling_the_waiter_does_not_cancel_the_task(runner: Runner) -> None:
    """Awaiting is not owning: a cancelled await leaves the task running."""
    release = asyncio.Event()  # lives on this loop; the task is released via a thread event
    gate = threading.Event()

    async def job() -> str:
        while not gate.is_set():
            await asyncio.sleep(0.001)
        return "finished"

    handle = runner.submit(job)
    waiter = asyncio.ensure_future(_await(handle))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert not handle.done()
    gate.set()
    release.set()
    assert handle.result(WAIT) == "finished"


async def _await(handle: loopkeeper.TaskHandle[Any]) -> Any:
    return await handle


def test_cancel_a_pending_task_closes_its_coroutine(runner: Runner) -> None:
    """A task cancelled before it ran never runs, and its coroutine is closed."""
    with Runner(name="one-slot", max_concurrency=1) as limited:
        gate = threading.Event()
        blocker = limited.submit(gate.wait, WAIT)
        started = threading.Event()

        async def never() -> None:
            started.set()

        coro = never()
        queued = limited.submit(coro)
        assert state_of(queued) is TaskState.PENDING
        assert loopkeeper.cancel(queued) is True
        assert queued.state is TaskState.CANCELLED
        assert (
            inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED
        )  # closed: no "never awaited" warning
        gate.set()
        blocker.result(WAIT)
        assert not started.is_set()
        assert limited.stats().cancelled == 1
    assert runner.stats().submitted == 0


def test_cancel_a_running_coroutine(runner: Runner) -> None:
    """cancel() reaches a running coroutine at its next await; it ends CANCELLED."""
    started = threading.Event()
    seen: list[str] = []

    async def job() -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError as exc:
            seen.append(str(exc.args[0]) if exc.args else "")
            raise

    handle = runner.submit(job)
    assert started.wait(WAIT)
    assert handle.cancel("user asked") is True
    with pytest.raises(concurrent.futures.CancelledError):
        handle.result(WAIT)
    assert handle.cancelled()
    assert seen == ["user asked"]
    assert handle.cancel() is False  # already finished


def test_cancelled_sync_task_stays_running_until_its_thread_returns(runner: Runner) -> None:
    """A thread cannot be killed: the task is RUNNING until it returns, then CANCELLED."""
    started = threading.Event()
    release = threading.Event()

    def job() -> str:
        started.set()
        assert release.wait(WAIT)
        return "ignored"

    handle = runner.submit(job)
    assert started.wait(WAIT)
    assert handle.cancel() is True
    with pytest.raises(TimeoutError):
        handle.result(0.05)
    assert state_of(handle) is TaskState.RUNNING
    release.set()
    with pytest.raises(concurrent.futures.CancelledError):
        handle.result(WAIT)
    assert handle.state is TaskState.CANCELLED


def test_a_coroutine_that_swallows_cancellation_ends_by_its_own_outcome(runner: Runner) -> None:
    """cancel() returned True, but a task that catches it and returns has SUCCEEDED."""
    started = threading.Event()

    async def stubborn() -> str:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            return "kept going"
        return "slept"

    handle = runner.submit(stubborn)
    assert started.wait(WAIT)
    assert handle.cancel()
    assert handle.result(WAIT) == "kept going"
    assert handle.state is TaskState.SUCCEEDED


def test_timeout_fails_the_task_with_task_timeout_error(runner: Runner) -> None:
    """timeout= cancels the task when it expires: FAILED, TaskTimeoutError (a TimeoutError)."""
    handle = runner.submit(asyncio.sleep, 60, name="slow", timeout=0.05)
    exc = handle.exception(WAIT)
    assert isinstance(exc, loopkeeper.TaskTimeoutError)
    assert isinstance(exc, TimeoutError)
    assert "slow" in str(exc)
    assert handle.state is TaskState.FAILED
    assert runner.stats().failed == 1


def test_timeout_counts_from_start_not_from_submit() -> None:
    """Time spent waiting for a max_concurrency slot does not count against timeout=."""
    with Runner(name="slots", max_concurrency=1) as runner:
        gate = threading.Event()
        blocker = runner.submit(gate.wait, WAIT)

        async def quick() -> str:
            return "in time"

        queued = runner.submit(quick, timeout=0.01)
        # The blocker holds the only slot for longer than queued's timeout.
        assert not gate.wait(0.1)
        gate.set()
        blocker.result(WAIT)
        assert queued.result(WAIT) == "in time"


def test_max_pending_refuses_with_overloaded_error_and_counts_it() -> None:
    """The submit after max_pending unfinished tasks raises OverloadedError at once."""
    with Runner(name="small", max_pending=2) as runner:
        gate = threading.Event()
        first = runner.submit(gate.wait, WAIT)
        second = runner.submit(gate.wait, WAIT)

        async def extra() -> None:
            pass

        coro = extra()
        with pytest.raises(loopkeeper.OverloadedError, match="max_pending=2"):
            runner.submit(coro)
        assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED
        stats = runner.stats()
        assert (stats.submitted, stats.rejected) == (2, 1)
        gate.set()
        first.result(WAIT)
        second.result(WAIT)
        runner.submit(asyncio.sleep, 0).result(WAIT)  # room again


def test_max_concurrency_runs_waiting_tasks_in_fifo_order(wait_until: WaitUntil) -> None:
    """With max_concurrency=1, tasks beyond the limit wait PENDING and start in FIFO order."""
    with Runner(name="fifo", max_concurrency=1) as runner:
        gate = threading.Event()
        order: list[int] = []
        blocker = runner.submit(gate.wait, WAIT)
        wait_until(lambda: blocker.state is TaskState.RUNNING, what="blocker holds the slot")

        async def record(i: int) -> None:
            order.append(i)

        handles = [runner.submit(record, i) for i in range(10)]
        assert all(h.state is TaskState.PENDING for h in handles)
        assert runner.stats().pending == 10
        gate.set()
        blocker.result(WAIT)
        for h in handles:
            h.result(WAIT)
        assert order == list(range(10))


@contextlib.contextmanager
def _loop_held(runner: Runner) -> Iterator[None]:
    """Block ``runner``'s loop thread for the ``with`` block: every submit made in it
    queues in the inbox and reaches the loop as one batch once the block ends."""
    busy, release = threading.Event(), threading.Event()

    async def hold_the_loop() -> None:
        busy.set()
        release.wait(WAIT)  # blocks the loop thread itself

    blocker = runner.submit(hold_the_loop)
    assert busy.wait(WAIT)
    try:
        yield
    finally:
        release.set()
    blocker.result(WAIT)


@pytest.mark.parametrize("max_concurrency", [None, 3])
def test_a_batch_from_the_inbox_starts_in_order_without_the_tasks_cancelled_in_it(
    max_concurrency: int | None,
) -> None:
    """Tasks posted while the loop is busy reach it as one batch.  The ones cancelled in
    the meantime never run; the others start in submit order, within the limit."""
    with Runner(name="batch", max_concurrency=max_concurrency) as runner:
        order: list[int] = []
        running, most = 0, 0

        async def record(i: int) -> None:
            nonlocal running, most
            order.append(i)
            running += 1
            most = max(most, running)
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            running -= 1

        cancelled = {2, 3, 7, 11}
        with _loop_held(runner):
            handles = [runner.submit(record, i) for i in range(12)]
            for i in sorted(cancelled):
                assert handles[i].cancel() is True
        for i, handle in enumerate(handles):
            if i in cancelled:
                assert handle.cancelled()
            else:
                assert handle.result(WAIT) is None
        assert order == [i for i in range(12) if i not in cancelled]
        assert most == (3 if max_concurrency else 12 - len(cancelled))
        stats = runner.stats()
        assert (stats.succeeded, stats.cancelled, stats.pending, stats.running) == (9, 4, 0, 0)


@pytest.mark.parametrize("max_concurrency", [None, 1])
def test_a_task_abandoned_as_its_batch_starts_is_closed_and_the_batch_goes_on(
    max_concurrency: int | None,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A shutdown on another thread may abandon a task in the instant after the loop
    thread moved it to RUNNING and before it made the asyncio task.  Its coroutine is
    then closed, never run and never left unawaited; its slot is freed; the rest of the
    batch starts and nothing escapes into the loop.  The test calls the shutdown's
    ``_abandon`` from inside ``Ledger.start`` to pin that interleaving (the storm test
    met it by chance)."""
    ran: list[str] = []

    async def record(name: str) -> str:
        ran.append(name)
        return name

    with Runner(name="abandon-race", max_concurrency=max_concurrency) as runner:
        victim_coro = record("victim")
        start = type(runner._ledger).start

        def start_then_abandon(ledger: Any, handles: list[loopkeeper.TaskHandle[Any]]) -> list[Any]:
            started = start(ledger, handles)
            runner._abandon([h for h, _, _ in started if h.name == "victim"], [])
            return started

        with caplog.at_level(logging.ERROR, logger="asyncio"):
            with _loop_held(runner):
                victim = runner.submit(victim_coro, name="victim")
                others = [runner.submit(record, f"t{i}") for i in range(3)]
                monkeypatch.setattr(type(runner._ledger), "start", start_then_abandon)
            assert [h.result(WAIT) for h in others] == ["t0", "t1", "t2"]
            monkeypatch.undo()
        assert victim.state is TaskState.ABANDONED
        assert inspect.getcoroutinestate(victim_coro) == inspect.CORO_CLOSED
        assert ran == ["t0", "t1", "t2"]
        assert runner.submit(record, "after").result(WAIT) == "after"  # no slot leaked
        assert runner.stats().running == 0
    assert [r.getMessage() for r in caplog.records if r.name == "asyncio"] == []


def _eventfd_count(fd: int) -> int:
    """The counter of eventfd ``fd``, read from /proc without consuming it (Linux)."""
    with open(f"/proc/self/fdinfo/{fd}", encoding="ascii") as info:
        for line in info:
            key, _, value = line.partition(":")
            if key == "eventfd-count":
                return int(value, 16)
    raise AssertionError(f"descriptor {fd} is not an eventfd")


@pytest.mark.skipif(not hasattr(os, "eventfd"), reason="eventfd is Linux-only")
def test_a_burst_of_submits_wakes_the_loop_once_through_its_eventfd() -> None:
    """While the loop is busy, a burst of 20 submits writes the loop's eventfd once; the
    drain takes the batch and resets it; shutdown closes it."""
    with Runner(name="wake") as runner:
        with _loop_held(runner):
            fd = runner._loop_thread._wake_fd
            assert fd is not None
            assert _eventfd_count(fd) == 0  # reset by the drain that started the holder
            handles = [runner.submit(asyncio.sleep, 0, i) for i in range(20)]
            assert _eventfd_count(fd) == 1
        assert [h.result(WAIT) for h in handles] == list(range(20))
        assert _eventfd_count(fd) == 0
    assert runner._loop_thread._wake_fd is None


class _SubmitOnTaskStarted(logging.Handler):
    """A log handler that, on the first ``task_started`` line (emitted on the loop thread
    in the middle of a drain), submits one more task from another thread and waits for
    that submit to return."""

    def __init__(self, runner: Runner) -> None:
        super().__init__(logging.DEBUG)
        self.runner = runner
        self.late: list[loopkeeper.TaskHandle[str]] = []

    def handle(self, record: logging.LogRecord) -> bool:  # no handler lock: no deadlock
        if getattr(record, "event", None) == "task_started" and not self.late:
            submitter = threading.Thread(
                target=lambda: self.late.append(self.runner.submit(asyncio.sleep, 0, "late"))
            )
            submitter.start()
            submitter.join(WAIT)
        return True


@pytest.mark.skipif(not hasattr(os, "eventfd"), reason="eventfd is Linux-only")
def test_a_submit_while_the_loop_thread_drains_is_not_stranded() -> None:
    """A submit that lands while the loop thread is starting a batch writes the eventfd
    before the drain resets it; the drain sees it and starts that task too."""
    runner = Runner(name="drain-race")
    handler = _SubmitOnTaskStarted(runner)
    logger = logging.getLogger("loopkeeper")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        with runner:
            assert runner.submit(asyncio.sleep, 0, "first").result(WAIT) == "first"
            assert len(handler.late) == 1
            assert handler.late[0].result(WAIT) == "late"
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.mark.usefixtures("unconfigured_structlog")  # the stdlib route: caplog sees the lines
def test_a_task_logs_its_routine_lines_by_the_level_at_its_submit(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """DEBUG is asked once per task, in ``submit()``: a task submitted while DEBUG was off
    logs no ``task_started`` or ``task_succeeded`` even if DEBUG is on by the time it
    starts; one submitted with DEBUG on logs all three.  Both start in the same batch."""
    logger = logging.getLogger("loopkeeper")
    with caplog.at_level(logging.DEBUG, logger="loopkeeper"):  # the handler's level
        logger.setLevel(logging.INFO)
        with Runner(name="levels") as runner, _loop_held(runner):
            quiet = runner.submit(asyncio.sleep, 0, name="quiet")
            logger.setLevel(logging.DEBUG)
            loud = runner.submit(asyncio.sleep, 0, name="loud")
        assert quiet.done()  # the shutdown joined the loop thread
        assert loud.done()
    routine = {"task_submitted", "task_started", "task_succeeded"}
    lines = [
        (record.event, record.getMessage())  # type: ignore[attr-defined]  # from `extra`
        for record in caplog.records
        if getattr(record, "event", None) in routine
    ]
    assert {event for event, text in lines if "task_name='loud'" in text} == routine
    assert [text for _, text in lines if "task_name='quiet'" in text] == []


class _LoopWithoutReaders(asyncio.SelectorEventLoop):
    """A loop that watches no file descriptors, as the proactor loop on Windows; it
    records the callbacks other threads schedule."""

    def __init__(self) -> None:
        super().__init__()
        self.threadsafe_callbacks: list[str] = []

    def add_reader(self, fd: Any, callback: Any, *args: Any) -> None:  # type: ignore[override]
        raise NotImplementedError

    def call_soon_threadsafe(  # type: ignore[override]
        self, callback: Callable[..., object], *args: Any, context: Any = None
    ) -> asyncio.Handle:
        self.threadsafe_callbacks.append(getattr(callback, "__name__", "?"))
        return super().call_soon_threadsafe(callback, *args, context=context)


def test_a_loop_without_add_reader_is_woken_through_call_soon_threadsafe() -> None:
    """Where the loop cannot watch an eventfd, a burst still costs one wake-up: one
    ``call_soon_threadsafe(drain)``, and every task runs."""
    loops: list[_LoopWithoutReaders] = []

    def factory() -> asyncio.AbstractEventLoop:
        loops.append(_LoopWithoutReaders())
        return loops[-1]

    with Runner(name="no-readers", loop_factory=factory) as runner:
        with _loop_held(runner):
            assert runner._loop_thread._wake_fd is None
            drains_before = loops[0].threadsafe_callbacks.count("_drain")
            handles = [runner.submit(asyncio.sleep, 0, i) for i in range(20)]
            assert loops[0].threadsafe_callbacks.count("_drain") == drains_before + 1
        assert [h.result(WAIT) for h in handles] == list(range(20))


def test_add_done_callback_runs_once_and_errors_are_logged(
    runner: Runner, caplog: pytest.LogCaptureFixture
) -> None:
    """Callbacks run once when done (or at once if already done); what they raise is logged."""
    calls: list[tuple[str, str]] = []
    done = threading.Event()

    def bad(handle: loopkeeper.TaskHandle[Any]) -> None:
        raise RuntimeError("callback bug")

    def good(handle: loopkeeper.TaskHandle[Any]) -> None:
        calls.append((handle.state.name, threading.current_thread().name))
        done.set()

    gate = threading.Event()
    handle = runner.submit(gate.wait, WAIT)
    with caplog.at_level(logging.ERROR, logger="loopkeeper"):
        handle.add_done_callback(bad)
        handle.add_done_callback(good)
        gate.set()
        assert done.wait(WAIT)
    assert calls == [("SUCCEEDED", "test-runner")]
    assert [r.event for r in caplog.records if hasattr(r, "event")] == ["callback_failed"]
    handle.add_done_callback(good)  # already done: runs now, in this thread
    assert calls[-1] == ("SUCCEEDED", threading.current_thread().name)


def test_result_timeout_raises_builtin_timeout_error(runner: Runner) -> None:
    """Waiting past result(timeout=) raises TimeoutError; the task goes on."""
    gate = threading.Event()
    handle = runner.submit(gate.wait, WAIT)
    with pytest.raises(TimeoutError) as info:
        handle.result(timeout=0.01)
    assert not isinstance(info.value, loopkeeper.LoopkeeperError)
    gate.set()
    assert handle.result(WAIT) is True


def test_handle_repr_names_id_name_and_state(runner: Runner) -> None:
    """The repr answers 'which one, in what state?'."""
    handle = runner.submit(asyncio.sleep, 0, name="welcome-mail")
    handle.result(WAIT)
    assert repr(handle) == f"<TaskHandle id={handle.id} name='welcome-mail' state=SUCCEEDED>"


def test_loop_factory_is_used() -> None:
    """loop_factory makes the loop, on the loop thread."""
    made: list[str] = []

    def factory() -> asyncio.AbstractEventLoop:
        made.append(threading.current_thread().name)
        return asyncio.new_event_loop()

    with Runner(name="factory", loop_factory=factory) as runner:
        runner.submit(asyncio.sleep, 0).result(WAIT)
    assert made == ["factory"]


def test_a_failing_loop_factory_is_reported_by_submit() -> None:
    """If the loop cannot be made, submit raises RuntimeError chained to the cause."""

    def factory() -> asyncio.AbstractEventLoop:
        raise OSError("no loop for you")

    runner = Runner(name="broken", loop_factory=factory)
    with pytest.raises(RuntimeError, match="could not start") as info:
        runner.submit(asyncio.sleep, 0)
    assert isinstance(info.value.__cause__, OSError)
    assert runner.stats().submitted == 0
    runner.shutdown(timeout=0)


def test_uvloop_loop_factory() -> None:
    """uvloop works as a loop_factory."""
    uvloop = pytest.importorskip("uvloop")
    with Runner(name="uv", loop_factory=uvloop.new_event_loop) as runner:

        async def loop_type() -> str:
            return type(asyncio.get_running_loop()).__module__

        assert runner.submit(loop_type).result(WAIT).startswith("uvloop")


def test_start_is_eager_and_idempotent() -> None:
    """start() starts the loop thread now; calling it again changes nothing."""
    runner = Runner(name="eager")
    runner.start()
    runner.start()
    assert [t.name for t in threading.enumerate()].count("eager") == 1
    assert runner.shutdown(timeout=1).clean
    with pytest.raises(loopkeeper.RunnerClosedError):
        runner.start()


def test_a_task_cancelled_by_user_code_before_its_first_step_is_not_lost(runner: Runner) -> None:
    """User code that cancels every task on the loop may hit a task before it started:
    it ends CANCELLED (not PENDING forever), its coroutine closed, its slot given back."""

    victims: list[Coroutine[Any, Any, None]] = []

    async def cancel_everything_then_submit() -> loopkeeper.TaskHandle[None]:
        async def victim() -> None:
            pass

        victims.append(victim())
        handle = runner.submit(victims[0])  # created on the loop, not started yet
        for task in asyncio.all_tasks():
            if task is not asyncio.current_task():
                task.cancel()
        return handle

    victim = runner.submit(cancel_everything_then_submit).result(WAIT)
    with pytest.raises(concurrent.futures.CancelledError):
        victim.result(WAIT)
    assert inspect.getcoroutinestate(victims[0]) == inspect.CORO_CLOSED
    assert runner.submit(asyncio.sleep, 0, "alive").result(WAIT) == "alive"
