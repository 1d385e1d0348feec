"""Runner: accounting, limits, timeouts, shutdown and the report.

Owns: a ``Ledger`` (the lock, the counters, a strong reference to every unfinished
task), a ``LoopThread`` (started lazily by the first submit, or by ``start()``) and a
``WorkerPool`` for sync callables.

Threads: ``submit``, ``cancel``, ``stats``, ``shutdown`` and ``ashutdown`` are safe from
any thread.  A submit from a foreign thread goes through the loop thread's inbox; from
the loop thread itself it creates the task directly.  Tasks run on the loop thread, each
in a fresh ``contextvars.Context`` (never the submitter's); sync callables run in the
pool and report back to the loop.

Guarantees: every accepted task ends SUCCEEDED, FAILED, CANCELLED or ABANDONED, and is
counted once; a task that raises anything fails that task, never the loop (asyncio lets
a task's ``SystemExit`` or ``KeyboardInterrupt`` leave ``run_forever``: the loop thread
runs on, and the task's done callback settles it); a shutdown returns within its timeout
plus ``GRACE`` even when the loop thread is blocked.

Memory: a pending-and-running async task is its handle, its asyncio task, its own
coroutine and a fresh context: no wrapper coroutine (it cost ~280 bytes per task).

After fork: a runner created in the parent refuses every call in the child
(``RuntimeError``); the parent's tasks never run there.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import math
import os
import sys
import threading
import time
import traceback
import types
from collections import deque
from collections.abc import Callable, Coroutine, Iterable
from types import TracebackType
from typing import Any, Final, TypeVar, final, overload

from typing_extensions import Self, TypeVarTuple, Unpack

from . import _logging
from ._carry import carried
from ._errors import LoopkeeperError, OverloadedError, RunnerClosedError, TaskTimeoutError
from ._handles import (
    ABANDONED,
    CANCELLED,
    FAILED,
    PENDING,
    PENDING_SLOT,
    RUNNING,
    SUCCEEDED,
    Callback,
    HandedOff,
    HandOffFailure,
    Ledger,
    RunnerStats,
    ShutdownReport,
    TaskHandle,
    TaskInfo,
    ThreadInfo,
    cancel_handle,
    describe_hand_off,
    run_callbacks,
)
from ._hooks import Hooks, capture, failure_hint, within_task
from ._loop_thread import LoopThread
from ._threads import (
    CARRIED,
    CURRENT_TASK,
    THREADS_REFUSED_AT_EXIT,
    Outcome,
    Token,
    TrackedExecutor,
    WorkerPool,
    call_in,
    prestart_asgiref_thread,
)
from ._validation import (
    COROUTINE,
    SYNC,
    check_callable_option,
    check_limit,
    check_name,
    check_optional_limit,
    check_optional_seconds,
    check_runner_name,
    check_seconds,
    classify,
    close_if_coroutine,
    describe,
    wait_seconds,
)
from ._waiters import Wake, wait_until_woken

__all__ = ("GRACE", "Runner", "live_runners")

T = TypeVar("T")
PosArgsT = TypeVarTuple("PosArgsT")

GRACE: Final = 1.0  # seconds a shutdown gives cancelled tasks to end, after its deadline
# Modules whose frames submitted_from skips, to name the user's call.
_INTERNAL: Final = ("loopkeeper.", "django.tasks.", "django_tasks.")
# By co_filename: is that file loopkeeper's or the Tasks framework's (skipped when taking
# a task's submitted_from)?  One entry per file that ever called submit().
_INTERNAL_FILES: dict[str, bool] = {}
_LINES: dict[int, int] = {}  # the line numbers of submit() calls, one object each
_MANIFEST_CAP: Final = 50  # tasks named one by one in a log line; the rest are counted

HandOff = Callable[[], Iterable[HandedOff | HandOffFailure]]
"""What a hand-off gives a shutdown: called on the shutdown's thread once its drain ends
(everything finished, or the deadline passed), before it cancels anything; it gives the
work it holds away and says what became of each piece.  See ``Runner._add_hand_off``."""

# Runners whose loop thread runs and that were not shut down yet, in start order, for the
# exit drain.  Any thread, under _LIVE_LOCK.  Cleared in a forked child.
_LIVE: dict[Runner, None] = {}
_LIVE_LOCK = threading.Lock()


def live_runners() -> list[Runner]:
    """The started runners of this process not yet shut down, oldest first."""
    with _LIVE_LOCK:
        return [runner for runner in _LIVE if runner._pid == os.getpid()]


def _forget_live_runners_in_child() -> None:
    global _LIVE_LOCK  # noqa: PLW0603  the parent's lock may have been held at fork
    _LIVE_LOCK = threading.Lock()
    _LIVE.clear()


os.register_at_fork(after_in_child=_forget_live_runners_in_child)


def _describe_tasks(handles: list[TaskHandle[Any]]) -> str:
    named = ", ".join(f"{h.id} {h.name!r}" for h in handles[:_MANIFEST_CAP])
    more = len(handles) - _MANIFEST_CAP
    return f"{named}, and {more} more" if more > 0 else named


def _describe_stacks(abandoned: tuple[TaskInfo, ...]) -> str:
    """Where each abandoned task came from and where it was, for shutdown_incomplete."""
    never = "  (it never started)\n"
    return "\n".join(
        f"task {info.id} {info.name!r} submitted from {info.submitted_from or '?'}:\n"
        f"{info.stack or never}"
        for info in abandoned[:_MANIFEST_CAP]
    )


def _wait_event(event: threading.Event, deadline: float) -> bool:
    return event.wait(wait_seconds(max(0.0, deadline - time.monotonic())))


def _carry_into_task(carry: Callable[[], object]) -> None:
    """In the task's context: apply what its hooks captured, and keep it for its threads."""
    CARRIED.set(carry)
    carry()


async def _refuse_default_executor_shutdown(timeout: float | None = None) -> None:
    raise RuntimeError(
        "loopkeeper owns this loop's default executor (its tracked worker threads) and "
        "shuts it down itself; a task must not shut it down for every other task"
    )


async def _await(awaitable: Any) -> Any:
    """A coroutine around an awaitable that is not one (asyncio tasks need coroutines)."""
    return await awaitable


@final
class _Task(asyncio.Task[Any]):
    """The asyncio task that runs one handle's coroutine; its done callback settles it."""

    __slots__ = ("_lk_handle",)

    _lk_handle: TaskHandle[Any]


@final
class Runner:
    """An event loop on a daemon thread that runs work submitted from any thread.

    Most code uses the process's default runner through ``loopkeeper.submit()``; an
    explicit runner suits tests and libraries that want their own limits::

        with loopkeeper.Runner(name="mailer", max_pending=1_000) as runner:
            runner.submit(send_mail, 42).result(timeout=5)

    Args:
        name: names the loop thread and its workers (``<name>-worker-N``) and log lines.
        max_pending: accepted-but-unfinished tasks at most; the next submit raises
            ``OverloadedError``.
        max_concurrency: tasks running at once at most (None: no limit); the rest wait,
            ``PENDING``, in FIFO order.  A task awaiting another task of this runner
            keeps its slot meanwhile: if all slots are held that way, nothing runs.
        max_threads: worker threads for sync callables at most.
        shutdown_timeout: seconds ``shutdown()`` waits by default, and the exit drain.
        loop_factory: makes the event loop (e.g. ``uvloop.new_event_loop``); called on
            the loop thread.
        watchdog_threshold: seconds the loop thread may go without coming back to the
            loop before a ``loop_blocked`` warning names the task holding it, with its
            stack (once per incident); None turns the watchdog off.
        hooks: a ``Hooks`` instance through which a framework adapter takes part in
            every task (the Django app passes its own); None: none.

    Raises:
        TypeError, ValueError: an option has the wrong type or range.
    """

    def __init__(
        self,
        *,
        name: str = "loopkeeper",
        max_pending: int = 10_000,
        max_concurrency: int | None = None,
        max_threads: int = 40,
        shutdown_timeout: float = 10.0,
        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
        watchdog_threshold: float | None = 3.0,
        hooks: Hooks | None = None,
    ) -> None:
        # The options: fixed once the loop thread starts (configure() may replace them on
        # the unstarted default runner, in place, under the loop thread's start lock).
        self.name: str = check_runner_name(name)
        self.max_pending: int = check_limit(max_pending, param="max_pending")
        self.max_concurrency: int | None = check_optional_limit(
            max_concurrency, param="max_concurrency"
        )
        self.max_threads: int = check_limit(max_threads, param="max_threads")
        self.shutdown_timeout: float = check_seconds(shutdown_timeout, param="shutdown_timeout")
        self._loop_factory = check_callable_option(loop_factory, param="loop_factory")
        self.watchdog_threshold: float | None = check_optional_seconds(
            watchdog_threshold, param="watchdog_threshold"
        )
        if self.watchdog_threshold == 0:
            raise ValueError("watchdog_threshold: expected a number of seconds > 0 or None, got 0")
        if hooks is not None and not isinstance(hooks, Hooks):
            raise TypeError(
                f"hooks: expected a loopkeeper.Hooks instance or None, got {describe(hooks)}"
            )
        self.hooks: Hooks | None = hooks
        self._pid = os.getpid()
        self._ledger = Ledger(on_settled_empty=self._maybe_stop)
        self._loop_thread: LoopThread[TaskHandle[Any]] = LoopThread(
            self.name,
            self._loop_factory,
            # Without a limit nothing queues for a slot: batches go straight to the start.
            self._start_on_loop if self.max_concurrency is None else self._dispatch_on_loop,
            self._on_loop_started,
            self.watchdog_threshold,
            self._describe_blocker,
            self._claim_escape,
        )
        self._pool = WorkerPool(self.name, self.max_threads, hooks=hooks)
        self._on_task_done = self._settle_task  # one bound method, not one per task
        # A task's SystemExit/KeyboardInterrupt until the loop thread claims it, found by
        # identity (never by id(): the ids of freed objects are reused).  Loop thread only.
        self._escaped: list[BaseException] = []
        self._active = 0  # loop thread only: tasks holding a concurrency slot
        self._waiting: deque[TaskHandle[Any]] = deque()  # loop thread only: FIFO for a slot
        self._cancelled_waiting = 0  # loop thread only: cancels since _waiting was pruned
        # Guards the two fields below; held only to read or write them, never while a
        # shutdown waits, logs or runs a callback.  Notified when either changes.
        self._shutdown_changed = threading.Condition(threading.Lock())
        self._shutting_down: threading.Thread | None = None  # the thread running _shutdown
        self._report: ShutdownReport | None = None  # set once
        self._stop_when_drained = False  # set once by shutdown; read by _maybe_stop
        # Abandoned by shutdown(cancel_remaining=False) and still running: kept alive here,
        # and the loop stops once the last of them ends.  Loop thread only, once shutdown
        # has handed them over (_hand_over_left_running_on_loop).
        self._left_running: dict[int, TaskHandle[Any]] = {}
        self._hand_offs: list[HandOff] = []  # appended to only; read by shutdown

    def __repr__(self) -> str:
        state = (
            "closed" if self._ledger.closed else "running" if self._loop_thread.started else "idle"
        )
        return f"<Runner name={self.name!r} {state}>"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()

    # -- public API ----------------------------------------------------------------

    @overload
    def submit(
        self,
        func: Callable[[Unpack[PosArgsT]], Coroutine[Any, Any, T]],
        /,
        *args: Unpack[PosArgsT],
        name: str | None = None,
        timeout: float | None = None,
    ) -> TaskHandle[T]: ...

    @overload
    def submit(
        self,
        func: Coroutine[Any, Any, T],
        /,
        *,
        name: str | None = None,
        timeout: float | None = None,
    ) -> TaskHandle[T]: ...

    @overload
    def submit(
        self,
        func: Callable[[Unpack[PosArgsT]], T],
        /,
        *args: Unpack[PosArgsT],
        name: str | None = None,
        timeout: float | None = None,
    ) -> TaskHandle[T]: ...

    def submit(  # type: ignore[misc]  # mypy cannot match overload 2 (a coroutine) to a TypeVarTuple
        self,
        func: Any,
        /,
        *args: Unpack[PosArgsT],
        name: str | None = None,
        timeout: float | None = None,
    ) -> TaskHandle[Any]:
        """Accept ``func`` as a task and return its handle at once.  Any thread.

        ``func`` is an ``async def`` function (or a ``functools.partial`` of one), called
        with ``args`` on the loop; a coroutine object (no ``args``), awaited on the loop;
        or a plain callable, called with ``args`` in a worker thread (if it returns a
        coroutine, that is awaited on the loop).  Keyword arguments for ``func`` go
        through ``functools.partial``.

        Args:
            name: the task's name in reprs, logs and reports (default: ``func``'s
                qualified name; never its arguments).
            timeout: seconds the task may run, counted from when it starts running; when
                it expires the task is cancelled and ends ``FAILED`` with
                ``TaskTimeoutError``.

        Returns:
            The task's ``TaskHandle``.

        Raises:
            TypeError, ValueError: bad input; nothing was accepted or counted.
            RunnerClosedError: shutdown has begun; counted as rejected.
            OverloadedError: ``max_pending`` tasks are unfinished; counted as rejected.
            RuntimeError: called in a forked child of the process that made this runner,
                or the loop thread cannot start.
        """
        seconds: float | None = None
        try:
            kind, task_name = classify(func, args)
            if name is not None:
                check_name(name)
                task_name = name
            if timeout is not None:
                seconds = check_optional_seconds(timeout, param="timeout")
                if seconds == math.inf:
                    seconds = None
        except BaseException:
            close_if_coroutine(func)
            raise
        self._check_process(func)
        carry = None
        hooks, extra = self.hooks, carried()
        if hooks is not None or extra is not None:
            try:
                carry = capture(extra, hooks)
            except BaseException:
                close_if_coroutine(func)
                raise
        ledger = self._ledger
        loop_thread = self._loop_thread
        if not loop_thread.ready and not ledger.closed:
            try:
                self._ensure_started()
            except BaseException:
                close_if_coroutine(func)
                raise
        # Built before the lock, numbered under it: the loop thread takes the same lock for
        # every transition, so the less this thread holds it, the less the loop waits.
        handle: TaskHandle[Any] = TaskHandle(self, 0, task_name, kind, func, args, seconds)
        if carry is not None:
            handle._carry = carry
        # Where it came from, for reports and tasks(): the first frame outside loopkeeper
        # (and Django's Tasks framework, which calls us for its enqueue()).  A code object
        # and a line, not the frame: a frame would keep the caller's locals alive.
        # Whether a file is internal is decided once per file (by its module's name) and
        # remembered: a lookup by the filename, whose hash the str keeps, is the cheap part.
        frame: types.FrameType | None = sys._getframe(1)
        while frame is not None:
            code = frame.f_code
            internal = _INTERNAL_FILES.get(code.co_filename)
            if internal is None:
                module = frame.f_globals.get("__name__", "")
                internal = _INTERNAL_FILES.setdefault(
                    code.co_filename, isinstance(module, str) and module.startswith(_INTERNAL)
                )
            if not internal:
                line = frame.f_lineno  # a new int object above 256: one kept per line
                handle._from_code, handle._from_line = code, _LINES.setdefault(line, line)
                break
            frame = frame.f_back
        error: LoopkeeperError | None = None
        with ledger.lock:
            if ledger.closed:
                ledger.rejected += 1
                error = RunnerClosedError(self.name)
            elif len(ledger.unfinished) >= self.max_pending:
                ledger.rejected += 1
                error = OverloadedError(self.name, self.max_pending)
            else:
                ledger.submitted += 1
                handle.id = task_id = ledger.submitted
                ledger.counts[PENDING_SLOT] += 1
                ledger.unfinished[task_id] = handle
        if error is not None:
            handle._func = handle._args = None
            close_if_coroutine(func)
            raise error
        # Asked once per task: its task_started and task_succeeded lines follow this answer,
        # so the loop thread does not ask again, and a task submitted with DEBUG off logs
        # none of them.  Before the post: log lines stay in order.
        if _logging.debug_enabled():
            handle._debug = True
            self._log_task(_logging.DEBUG, "task_submitted", handle)
        if loop_thread.is_current():
            self._dispatch_on_loop([handle])
            return handle
        try:
            loop_thread.post(handle)
        except RuntimeError:  # asyncio's "Event loop is closed": the loop closed under us
            # A shutdown closes the loop only once nothing it waits for is unfinished, so
            # if one closed it, it took this task in its manifest and settled it (its
            # report counts it): the handle says how it ended.  Anything else that closed
            # the loop left the task PENDING: it is withdrawn, uncounted, and refused.
            if not ledger.withdraw(handle):
                return handle
            close_if_coroutine(func)
            raise RunnerClosedError(self.name) from None
        return handle

    def cancel(self, handle: TaskHandle[Any], msg: str | None = None) -> bool:
        """Same as ``handle.cancel(msg)``.  Any thread.

        Raises:
            TypeError: ``handle`` is not a ``TaskHandle``.
        """
        return cancel_handle(handle, msg)

    def start(self) -> None:
        """Start the loop thread now instead of at the first submit.  Any thread; idempotent.

        Raises:
            RunnerClosedError: the runner was shut down.
            RuntimeError: wrong process, or the loop could not start.
        """
        self._check_process()
        if self._ledger.closed:
            raise RunnerClosedError(self.name)
        self._ensure_started()

    def _adopt_options(self, fresh: Runner) -> bool:
        """Any thread.  Take ``fresh``'s options, in place, if this runner's loop thread
        has not started and it was not shut down; False (nothing changed) otherwise.

        For ``configure()``: one default runner per process, so a caller that already
        holds it (``get_runner()`` before ``configure()``) starts the configured one.
        Atomic with respect to ``start()``: both hold the loop thread's start lock.
        """

        def adopt() -> bool:
            if self._ledger.closed:
                return False
            self.name = fresh.name
            self.max_pending = fresh.max_pending
            self.max_concurrency = fresh.max_concurrency
            self.max_threads = fresh.max_threads
            self.shutdown_timeout = fresh.shutdown_timeout
            self._loop_factory = fresh._loop_factory
            self.watchdog_threshold = fresh.watchdog_threshold
            self.hooks = fresh.hooks
            self._pool = fresh._pool  # no thread yet: it starts with the loop
            return True

        return self._loop_thread.reconfigure(
            fresh.name,
            fresh._loop_factory,
            self._start_on_loop if fresh.max_concurrency is None else self._dispatch_on_loop,
            fresh.watchdog_threshold,
            adopt,
        )

    def _ensure_started(self) -> None:
        """Any thread.  Return once the loop runs (start it if needed), or raise."""
        with _LIVE_LOCK:
            _LIVE[self] = None
        try:
            self._loop_thread.start()
        except BaseException:
            with _LIVE_LOCK:
                _LIVE.pop(self, None)
            raise
        if self._stop_when_drained:  # a shutdown raced with this start: stop what started
            with _LIVE_LOCK:
                _LIVE.pop(self, None)
            self._maybe_stop()

    def stats(self) -> RunnerStats:
        """A consistent snapshot of the counters.  Any thread.

        ``submitted == pending + running + succeeded + failed + cancelled + abandoned``.
        """
        self._check_process()
        return self._ledger.snapshot(self._pool.busy, self._loop_thread.lag)

    def threads(self) -> tuple[ThreadInfo, ...]:
        """The tracked threads running this runner's jobs now, oldest first.  Any thread.

        Each ``ThreadInfo`` gives the thread's name, the owning task's id and name, the
        job's age, and its state: ``running``, ``cancelling`` (told to stop, not yet
        stopped) or ``abandoned`` (``run_in_thread`` stopped waiting for it).  Idle pool
        workers are not listed.
        """
        self._check_process()
        return self._pool.infos()

    def tasks(self) -> tuple[TaskInfo, ...]:
        """The unfinished tasks now, oldest first.  Any thread.

        Each ``TaskInfo`` gives the task's id, name, state (``PENDING`` or ``RUNNING``),
        age, the thread running it (a sync task) and ``submitted_from``: where the
        ``submit()`` call was.  ``stack`` is None here (only a shutdown report takes the
        stacks of what it left behind).  For a status page, or to find what is stuck::

            for info in runner.tasks():
                print(info.id, info.name, info.state.name, f"{info.age:.0f}s", info.submitted_from)
        """
        self._check_process()
        with self._ledger.lock:
            handles = list(self._ledger.unfinished.values())
        now = time.monotonic()
        return tuple(h._info(now, h._state, h._thread_name) for h in handles if not h._state._final)

    def shutdown(
        self, timeout: float | None = None, *, cancel_remaining: bool = True
    ) -> ShutdownReport:
        """Stop accepting, drain, cancel the rest, and report.  Any thread but the loop's.

        Logs the manifest of unfinished tasks first (a warning naming them), waits up to
        ``timeout`` for them, then cancels what is left and gives it ``GRACE`` (1 s) to
        end; what still runs then is ``ABANDONED`` and named in the report.  With
        ``cancel_remaining=False`` nothing is cancelled: what is unfinished at the
        deadline is reported ``ABANDONED`` at once and left running until the process
        ends.  Returns within ``timeout + GRACE`` even if the loop thread is blocked.
        Idempotent: later calls (from any thread, a done callback included) return the
        first call's report; a call made while the first one runs waits for its report,
        except from code that the first call itself runs on its own thread before the
        report exists (a log handler of its ``shutdown_started`` line), which cannot wait
        for itself and raises ``RuntimeError``.  The done callbacks of tasks the shutdown
        cancels or abandons itself run once its report exists.  Called from a sync task
        of this runner (a worker thread), it does not wait for that task itself.

        Args:
            timeout: seconds to wait for unfinished tasks (None: ``shutdown_timeout``).
            cancel_remaining: cancel what is unfinished at the deadline.

        Raises:
            TypeError, ValueError: bad ``timeout``; nothing changed.
            RuntimeError: called on the runner's own loop thread before a report exists
                (it cannot wait for itself: ``await runner.ashutdown()`` there, or call
                from another thread), from the shutdown's own thread as above, or in a
                forked child.
        """
        seconds = self._check_shutdown_call(timeout)
        if self._loop_thread.is_current():
            report = self._report
            if report is not None:
                return report
            raise RuntimeError(
                f"runner {self.name!r}: shutdown() cannot block the runner's own loop thread, "
                "which the drain needs; use 'await runner.ashutdown()' in a task, or call "
                "shutdown() from another thread"
            )
        return self._shutdown(seconds, cancel_remaining, self._exempt())

    async def ashutdown(
        self, timeout: float | None = None, *, cancel_remaining: bool = True
    ) -> ShutdownReport:
        """``shutdown()`` for async code: waits without blocking the awaiting loop.

        Works from any asyncio loop or trio, the runner's own included: called from one
        of the runner's tasks it drains the others and does not wait for itself.
        Cancelling the awaiting coroutine does not stop the shutdown.  Arguments and
        errors as ``shutdown()``.
        """
        seconds = self._check_shutdown_call(timeout)
        if self._report is not None:
            return self._report
        exempt = self._exempt()
        lock = threading.Lock()
        outcome: list[ShutdownReport | BaseException] = []  # under lock
        waiters: list[Wake] = []  # under lock

        def run() -> None:
            try:
                result: ShutdownReport | BaseException = self._shutdown(
                    seconds, cancel_remaining, exempt
                )
            except BaseException as exc:  # noqa: BLE001  handed to the awaiting coroutine
                result = exc
            with lock:
                outcome.append(result)
                wakes = list(waiters)
            for wake in wakes:
                wake()

        def register(wake: Wake) -> bool:
            with lock:
                if outcome:
                    return False
                waiters.append(wake)
                return True

        def unregister(wake: Wake) -> None:
            with lock:
                if wake in waiters:
                    waiters.remove(wake)

        threading.Thread(target=run, name=f"{self.name}-shutdown", daemon=True).start()
        await wait_until_woken(register, unregister)
        result = outcome[0]
        if isinstance(result, BaseException):
            raise result
        return result

    # -- handle support (the _Owner protocol) ---------------------------------------

    def _on_loop_thread(self) -> bool:
        return self._loop_thread.is_current()

    def _cancel(
        self, handle: TaskHandle[Any], msg: str | None, defer: list[Callback] | None = None
    ) -> bool:
        """Any thread.  Cancel a pending task at once; ask a running one to stop.

        ``defer``: see ``Ledger.move``.
        """
        handle._cancelling = True
        if handle._state is PENDING:
            func = handle._func
            if self._ledger.move(handle, CANCELLED, from_state=PENDING, defer=defer):
                close_if_coroutine(func)
                self._log_cancelled(handle)
                if self.max_concurrency is not None:  # it may wait in the queue for a slot
                    self._loop_thread.call_soon(self._forget_cancelled_on_loop)
                if handle._kind is SYNC:  # it may wait for a worker, inside _run_sync
                    self._loop_thread.call_soon(self._cancel_on_loop, handle, msg)
                return True
        if handle._state is RUNNING:
            self._loop_thread.call_soon(self._cancel_on_loop, handle, msg)
            return True
        return not handle.done()

    def _add_hand_off(self, hand_off: HandOff) -> None:
        """For loopkeeper's own adapters (the Django Tasks backend's ``HANDOFF``): when
        this runner's shutdown has drained what it could, ``hand_off()`` gives the work
        that has not started (and work that may safely run twice) to a durable system.
        A loopkeeper task it names as handed off is cancelled here and counted in the
        report's ``handed_off``, not in ``cancelled``; one whose hand-off failed is
        abandoned at once (it cannot start in the grace that follows), and the report
        names it.  Any thread."""
        self._hand_offs.append(hand_off)

    # -- internals -----------------------------------------------------------------

    def _check_process(self, func: object = None) -> None:
        if self._pid != os.getpid():
            close_if_coroutine(func)
            raise RuntimeError(
                f"runner {self.name!r} belongs to process {self._pid}, not to this forked "
                f"child {os.getpid()}; create a new Runner here (the default runner is "
                "replaced automatically)"
            )

    def _check_shutdown_call(self, timeout: object) -> float:
        seconds = check_optional_seconds(timeout, param="timeout")
        self._check_process()
        return self.shutdown_timeout if seconds is None else seconds

    def _exempt(self) -> frozenset[int]:
        """The calling task, if it is one of ours: a drain must not wait for itself."""
        current = CURRENT_TASK.get()
        if current is not None and current._owner is self:
            return frozenset({current.id})
        return frozenset()

    def _log_task(self, level: int, event: str, handle: TaskHandle[Any], **fields: Any) -> None:
        """One lifecycle line for a task: runner, id and name, never arguments or result."""
        _logging.log(
            level, event, runner=self.name, task_id=handle.id, task_name=handle.name, **fields
        )

    def _log_cancelled(self, handle: TaskHandle[Any]) -> None:
        self._log_task(_logging.INFO, "task_cancelled", handle, by_shutdown=handle._by_shutdown)

    def _describe_blocker(self) -> tuple[int, str, str | None] | None:
        """Watchdog thread.  The task the loop thread is running now, if it is one of ours."""
        loop = self._loop_thread.loop
        task = asyncio.current_task(loop) if loop is not None else None
        if task is None:
            return None
        with self._ledger.lock:
            handles = list(self._ledger.unfinished.values())
        for handle in handles:
            if handle._task is task:
                return handle.id, handle.name, handle._submitted_from()
        return None

    def _on_loop_started(self) -> None:
        """Loop thread only, once, before any task.  Make the pool the loop's default
        executor, start the threads that work during exit may need, then log
        ``runner_started`` (last: a handler may submit, and its task needs the rest)."""
        loop = self._loop_thread.loop
        assert loop is not None
        loop.set_default_executor(TrackedExecutor(self._pool))
        # The default executor lives as long as the runner: a task must not shut it down for
        # every other task (the flag it would set refuses all later run_in_executor calls).
        with contextlib.suppress(AttributeError):  # a loop type without instance attributes
            loop.shutdown_default_executor = _refuse_default_executor_shutdown  # type: ignore[method-assign]
        try:
            self._pool.prestart()
        except RuntimeError as exc:  # no thread can start now; sync tasks will say so
            _logging.log(_logging.WARNING, "worker_start_failed", runner=self.name, exc_info=exc)
        if THREADS_REFUSED_AT_EXIT:
            prestart_asgiref_thread()
        uwsgi = sys.modules.get("uwsgi")  # present only inside a uWSGI worker
        if uwsgi is not None and not getattr(uwsgi, "has_threads", True):
            _logging.log(
                _logging.WARNING,
                "uwsgi_threads_disabled",
                runner=self.name,
                advice="run uWSGI with --enable-threads: without it, loopkeeper's threads "
                "run only while this worker is serving a request",
            )
        _logging.log(_logging.INFO, "runner_started", runner=self.name)

    def _dispatch_on_loop(self, batch: list[TaskHandle[Any]]) -> None:
        """Loop thread only.  Start the accepted tasks of one batch, or queue them for a slot."""
        limit = self.max_concurrency
        if limit is not None and self._active + len(batch) > limit:
            batch = [handle for handle in batch if handle._state is PENDING]
            room = max(0, limit - self._active)
            self._waiting.extend(batch[room:])
            batch = batch[:room]
        self._start_on_loop(batch)

    def _start_on_loop(self, batch: list[TaskHandle[Any]]) -> None:
        """Loop thread only.  PENDING -> RUNNING, and start each task in a fresh context.

        One lock for the whole batch (``Ledger.start``), and no debug check: each handle
        carries the answer ``submit()`` got.  The task's own coroutine is the asyncio
        task's coroutine, with no wrapper around it (one frame less per task, and per
        step); the done callback ``_settle_task`` settles the handle.  A sync task runs
        inside ``_run_sync``, and an awaitable that is not a coroutine inside ``_await``.
        Each task holds a slot until it is settled.  A task that a shutdown abandoned
        since ``Ledger.start`` (from another thread) never runs: its coroutine is closed
        and its slot freed, and the rest of the batch starts.
        """
        started = self._ledger.start(batch)
        self._active += len(started)
        loop = self._loop_thread.loop
        assert loop is not None
        on_done = self._on_task_done
        set_current = CURRENT_TASK.set
        hooks = self.hooks
        for handle, func, func_args in started:
            if handle._state._final:  # a shutdown abandoned it since Ledger.start
                close_if_coroutine(func)
                self._finish_on_loop(handle)
                continue
            args, kind = func_args or (), handle._kind
            context = contextvars.Context()
            context.run(set_current, handle)
            if handle._debug and kind is not SYNC:  # a sync task's starts on its worker
                self._log_task(_logging.DEBUG, "task_started", handle)
            carry = handle._carry
            if carry is not None:
                handle._carry = None
                try:
                    context.run(_carry_into_task, carry)
                except BaseException as exc:  # noqa: BLE001  fails this task, not the batch
                    close_if_coroutine(func)
                    self._settle_failed_on_loop(handle, exc)
                    self._finish_on_loop(handle)
                    continue
            coro: Any
            if kind is COROUTINE:
                coro = func
            elif kind is SYNC:
                coro = self._run_sync(handle, func, args)
            else:
                try:
                    coro = context.run(func, *args)
                except BaseException as exc:  # noqa: BLE001  calling it was its first step
                    self._settle_failed_on_loop(handle, exc)
                    self._finish_on_loop(handle)
                    continue
                if type(coro) is not types.CoroutineType:
                    coro = _await(coro)  # e.g. inspect.markcoroutinefunction returning a Future
            if hooks is not None and kind is not SYNC:
                coro = within_task(hooks, coro)
            if sys.version_info >= (3, 11):
                task = _Task(coro, loop=loop, context=context)
            else:
                task = context.run(_Task, coro, loop=loop)
            task._lk_handle = handle
            handle._task = task
            task.add_done_callback(on_done, context=context)
            if handle._timeout is not None and kind is not SYNC:  # sync: once a worker has it
                handle._timer = loop.call_later(handle._timeout, self._expire, handle)
        if len(started) < len(batch):
            self._fill_slots_on_loop()  # some were cancelled or abandoned just now

    def _release_slot_on_loop(self) -> None:
        """Loop thread only.  A task ended: give its slot to the next one waiting."""
        self._active -= 1
        if self._waiting:
            self._fill_slots_on_loop()

    def _fill_slots_on_loop(self) -> None:
        """Loop thread only.  Start waiting tasks, oldest first, while slots are free."""
        waiting = self._waiting
        while waiting and (self.max_concurrency is None or self._active < self.max_concurrency):
            handle = waiting.popleft()
            if handle._state is PENDING:
                self._start_on_loop([handle])

    def _forget_cancelled_on_loop(self) -> None:
        """Loop thread only.  A pending task was cancelled, perhaps while it waited for a
        slot: drop such tasks from the queue once they may be half of it, so cancelled
        handles are not kept until a slot frees (amortised O(1) per cancel)."""
        self._cancelled_waiting += 1
        if self._cancelled_waiting * 2 > len(self._waiting):
            self._waiting = deque(h for h in self._waiting if h._state is PENDING)
            self._cancelled_waiting = 0

    def _cancel_on_loop(self, handle: TaskHandle[Any], msg: str | None) -> None:
        """Loop thread only.  Cancel the task's asyncio task, if it has one: a running
        task, or a sync task cancelled while it waited for a worker (its ``_run_sync``
        stops waiting, and its slot frees); never a task abandoned and left running."""
        task = handle._task
        if task is not None and handle._state is not ABANDONED:
            task.cancel(msg)

    def _arm_timer_on_loop(self, handle: TaskHandle[Any]) -> None:
        """Loop thread only.  A sync task's code has started: its timeout counts now."""
        loop = self._loop_thread.loop
        if handle._task is None or handle.done() or handle._timer is not None:
            return  # it ended already
        assert loop is not None
        assert handle._timeout is not None
        handle._timer = loop.call_later(handle._timeout, self._expire, handle)

    def _settle_task(self, task: asyncio.Task[Any]) -> None:
        """Loop thread only: the done callback of every task.  Settle, log, free the slot.

        A ``SystemExit`` or ``KeyboardInterrupt`` that a task raised has also left
        ``run_forever`` (asyncio re-raises them after storing them); the loop thread runs
        on, and ``claim_escape`` tells it the task's own failure line reports it.
        """
        assert isinstance(task, _Task)
        handle = task._lk_handle
        if task.cancelled():
            self._settle_cancelled_on_loop(handle)
        else:
            exc = task.exception()
            if exc is None:
                self._settle_succeeded_on_loop(handle, task.result())
            else:
                if isinstance(exc, (SystemExit, KeyboardInterrupt)):
                    self._escaped.append(exc)
                self._settle_failed_on_loop(handle, exc)
        self._finish_on_loop(handle)

    def _claim_escape(self, exc: BaseException) -> bool:
        """Loop thread only.  True if ``exc`` left ``run_forever`` from a settled task."""
        for index, escaped in enumerate(self._escaped):
            if escaped is exc:
                del self._escaped[index]
                return True
        return False

    def _finish_on_loop(self, handle: TaskHandle[Any]) -> None:
        """Loop thread only.  The task is settled: drop its timer, free its slot."""
        if handle._timer is not None:
            handle._timer.cancel()
            handle._timer = None
        handle._task = None
        self._release_slot_on_loop()
        if self._left_running.pop(handle.id, None) is not None and not self._left_running:
            self._stop(0.0, join=False)  # the last task shutdown left running has ended

    def _settle_cancelled_on_loop(self, handle: TaskHandle[Any]) -> None:
        """Loop thread only.  Cancelled, or timed out (its own timeout, nobody's cancel)."""
        if handle._expired and not handle._cancelling:
            assert handle._timeout is not None
            error = TaskTimeoutError(handle.id, handle.name, handle._timeout)
            if self._ledger.move(handle, FAILED, exc=error):
                self._log_task(_logging.ERROR, "task_timed_out", handle, timeout=handle._timeout)
        elif self._ledger.move(handle, CANCELLED):
            self._log_cancelled(handle)

    def _settle_failed_on_loop(self, handle: TaskHandle[Any], exc: BaseException) -> None:
        """Loop thread only.  Logged once, with the traceback; never the arguments."""
        if self._ledger.move(handle, FAILED, exc=exc):
            hint = failure_hint(self.hooks, exc)
            if hint is None:
                self._log_task(_logging.ERROR, "task_failed", handle, exc_info=exc)
            else:
                self._log_task(_logging.ERROR, "task_failed", handle, exc_info=exc, hint=hint)

    def _settle_succeeded_on_loop(self, handle: TaskHandle[Any], value: object) -> None:
        """Loop thread only."""
        if self._ledger.move(handle, SUCCEEDED, value=value) and handle._debug:
            self._log_task(_logging.DEBUG, "task_succeeded", handle)

    @staticmethod
    def _expire(handle: TaskHandle[Any]) -> None:
        """Loop thread only.  The task's own timeout fired."""
        handle._timer = None
        handle._expired = True
        task = handle._task
        assert task is not None
        task.cancel("loopkeeper: task timeout expired")

    async def _run_sync(
        self, handle: TaskHandle[Any], func: Callable[..., Any], args: tuple[Any, ...]
    ) -> Any:
        """Loop thread only.  Run ``func(*args)`` on a worker; stay until it returns.

        The task stays PENDING, and its timeout does not count, until a worker takes the
        job (``max_threads`` may keep it waiting); the worker moves it to RUNNING, logs
        ``task_started`` and has the loop start the timeout.  If the task is cancelled
        meanwhile, keep waiting for the thread (a running thread is never reported as
        stopped), unless the task was abandoned, or cancelled before its thread started.
        """
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Outcome] = loop.create_future()
        # A coroutine the function returns must run or be closed, even when this coroutine
        # stopped waiting (the task was abandoned) and the loop may close before a posted
        # callback runs.  Both sides record, then check the other's record: under the GIL
        # at least one of them sees both and closes it (closing twice is harmless).
        returned: list[object] = []  # the worker appends the function's value
        gave_up: list[bool] = []  # the loop thread appends when it stops waiting
        context = contextvars.copy_context()  # the task's: what its hooks carried, its owner

        def settle(outcome: Outcome) -> None:
            if not done.done():
                done.set_result(outcome)

        def job() -> None:
            # Never started if it was cancelled or abandoned while queued for a worker.
            if not self._ledger.begin(handle) or handle._stop_requested():
                outcome: Outcome = (None, asyncio.CancelledError())
            else:
                if handle._debug:
                    self._log_task(_logging.DEBUG, "task_started", handle)
                if handle._timeout is not None:
                    with contextlib.suppress(RuntimeError):  # closed: abandoned long ago
                        loop.call_soon_threadsafe(self._arm_timer_on_loop, handle)
                handle._thread_name = threading.current_thread().name
                outcome = call_in(context, func, args)
                handle._thread_name = None
            returned.append(outcome[0])
            if gave_up:
                close_if_coroutine(outcome[0])
                return
            try:
                loop.call_soon_threadsafe(settle, outcome)
            except RuntimeError:  # the loop has closed: the task was abandoned long ago
                close_if_coroutine(outcome[0])

        self._pool.submit(job, Token(handle))
        cancelled = False
        while True:
            try:
                value, exc = await asyncio.shield(done)
                break
            except asyncio.CancelledError:
                cancelled = True
                if handle.done():  # abandoned: stop waiting for the thread
                    gave_up.append(True)
                    for item in returned:
                        close_if_coroutine(item)
                    raise
        if cancelled:
            close_if_coroutine(value)  # the task is cancelled: what it returned never runs
            raise asyncio.CancelledError
        if exc is not None:
            raise exc
        if inspect.iscoroutine(value):
            return await value  # a sync callable that returns a coroutine: run it here
        return value

    def _maybe_stop(self) -> None:
        """Any thread.  Once shutdown allows it and nothing is unfinished, stop the loop."""
        if self._stop_when_drained and not self._ledger.unfinished:
            self._loop_thread.request_stop()
            self._pool.close()

    def _shutdown(
        self, timeout: float, cancel_remaining: bool, exempt: frozenset[int]
    ) -> ShutdownReport:
        """Any thread but the loop's.  The one shutdown; later calls get its report.

        No lock is held while it waits, logs or runs user code.  A call while another
        runs waits for that one's report (see ``shutdown()`` for the one that cannot).
        The done callbacks of the tasks it settles on this thread are set aside and run
        once the report exists, so a callback's own ``shutdown()`` returns it.

        A ``KeyboardInterrupt`` (a second Ctrl-C) or a ``SystemExit`` (a server's abort
        handler, such as gunicorn's on SIGABRT) at any step skips to the report: what is
        unfinished is abandoned, the report is made and logged, then the interruption is
        raised again.
        """
        me = threading.current_thread()
        with self._shutdown_changed:
            while self._report is None and self._shutting_down is not None:
                if self._shutting_down is me:
                    raise RuntimeError(
                        f"runner {self.name!r}: shutdown() was called from code that this "
                        "runner's shutdown runs on its own thread (a log handler) before its "
                        "report exists; it cannot wait for itself: call it from another "
                        "thread, or use the report the first shutdown() returns"
                    )
                self._shutdown_changed.wait()
            if self._report is not None:
                return self._report
            self._shutting_down = me
        begun = time.monotonic()
        waited: list[TaskHandle[Any]] = []
        callbacks: list[Callback] = []  # of the tasks settled here: run after the report
        handed: list[HandedOff] = []
        kept: list[TaskInfo] = []  # abandoned at once: their hand-off failed
        interrupted: KeyboardInterrupt | SystemExit | None = None
        report: ShutdownReport | None = None
        try:
            try:
                waited = [h for h in self._ledger.close(exempt) if h.id not in exempt]
                self._drain(
                    waited, begun + timeout, cancel_remaining, exempt, callbacks, handed, kept
                )
            except (KeyboardInterrupt, SystemExit) as exc:
                interrupted = exc
            abandoned = tuple(
                sorted((*kept, *self._abandon(waited, callbacks)), key=lambda info: info.id)
            )
            gone = {h.task_id for h in handed}
            report = ShutdownReport(
                completed=sum(
                    1
                    for h in waited
                    if h._state is not ABANDONED and not (h._by_shutdown and h._state is CANCELLED)
                ),
                cancelled=sum(
                    1
                    for h in waited
                    if h._by_shutdown and h._state is CANCELLED and h.id not in gone
                ),
                abandoned=abandoned,
                duration=time.monotonic() - begun,
                threads=self._pool.infos(exempt),
                handed_off=tuple(handed),
            )
        finally:
            with self._shutdown_changed:
                self._report = report  # None if it failed: a later call tries again
                self._shutting_down = None
                self._shutdown_changed.notify_all()
        try:
            self._log_report(report, after_manifest=bool(waited))
            if cancel_remaining or not abandoned:
                self._stop(begun + timeout + GRACE, join=not exempt)
            else:  # left running: keep them referenced; stop once they have ended
                self._loop_thread.call_soon(self._hand_over_left_running_on_loop, waited)
        except (KeyboardInterrupt, SystemExit) as exc:
            interrupted = interrupted or exc
        run_callbacks(callbacks)
        if interrupted is not None:
            raise interrupted
        return report

    def _hand_over_left_running_on_loop(self, waited: list[TaskHandle[Any]]) -> None:
        """Loop thread only.  Track the abandoned tasks still running; stop if none is."""
        self._left_running = {
            h.id: h for h in waited if h._state is ABANDONED and h._task is not None
        }
        if not self._left_running:
            self._stop(0.0, join=False)

    def _drain(
        self,
        waited: list[TaskHandle[Any]],
        deadline: float,
        cancel_remaining: bool,
        exempt: frozenset[int],
        callbacks: list[Callback],
        handed: list[HandedOff],
        kept: list[TaskInfo],
    ) -> None:
        """Log the manifest, wait for tasks and threads, run the hand-offs, then cancel
        and give them grace.

        The done callbacks of tasks cancelled or abandoned here go to ``callbacks``; what
        the hand-offs gave away, to ``handed``; the tasks whose hand-off failed are
        abandoned at once (so that they cannot start in the grace that follows), to
        ``kept``.
        """
        if waited:
            _logging.log(
                _logging.WARNING,
                "shutdown_started",
                runner=self.name,
                unfinished=len(waited),
                tasks=_describe_tasks(waited),
            )
        ledger, pool = self._ledger, self._pool
        quiet = _wait_event(ledger.drained, deadline) and pool.wait_quiet(deadline, exempt)
        failed = self._hand_off(handed)
        if quiet:
            return
        kept.extend(self._abandon([h for h in waited if h.id in failed], callbacks))
        gone = {h.task_id for h in handed}
        # Pending tasks first: a running one cancelled first could free its slot for a
        # pending one, which the loop would start before this thread got to it.
        for handle in sorted(waited, key=lambda h: h._state is not PENDING):
            # Only what the shutdown cancels counts as cancelled by it: not a task that
            # finished meanwhile, nor one its user cancelled first.  What was handed off
            # is cancelled here whatever cancel_remaining says (it runs elsewhere).
            if handle.done() or handle._cancelling:
                continue
            if cancel_remaining or handle.id in gone:
                handle._by_shutdown = True
                self._cancel(handle, "loopkeeper: shutdown", callbacks)
        if not cancel_remaining:
            return
        pool.cancel_all(exempt)
        deadline = time.monotonic() + GRACE
        if _wait_event(ledger.drained, deadline):
            pool.wait_quiet(deadline, exempt)

    def _hand_off(self, handed: list[HandedOff]) -> set[int]:
        """Run the hand-offs (``_add_hand_off``), log what each gave away and what it
        could not; return the ids of the loopkeeper tasks it could not give away.

        A hand-off that raises is a bug of ours: logged with its traceback, its work
        left as if there were no hand-off."""
        failed: list[HandOffFailure] = []
        for hand_off in list(self._hand_offs):
            try:
                for outcome in hand_off():
                    if isinstance(outcome, HandedOff):
                        handed.append(outcome)
                    else:
                        failed.append(outcome)
            except Exception as exc:  # noqa: BLE001  never let it stop the shutdown
                _logging.log(
                    _logging.ERROR,
                    "shutdown_hand_off_error",
                    runner=self.name,
                    hand_off=getattr(hand_off, "__qualname__", repr(hand_off)),
                    exc_info=exc,
                )
        if handed:
            _logging.log(
                _logging.WARNING,
                "shutdown_handed_off",
                runner=self.name,
                handed_off=len(handed),
                tasks=", ".join(describe_hand_off(h) for h in handed),
            )
        if failed:
            _logging.log(
                _logging.WARNING,
                "shutdown_hand_off_failed",
                runner=self.name,
                failed=len(failed),
                tasks=", ".join(describe_hand_off(h) for h in failed),
            )
        return {f.task_id for f in failed if f.task_id is not None}

    def _stop(self, deadline: float, *, join: bool) -> None:
        """Stop the loop once nothing is unfinished; wait for its thread until ``deadline``
        (and GRACE at most) unless a task of ours is the caller."""
        with _LIVE_LOCK:
            _LIVE.pop(self, None)
        self._stop_when_drained = True
        self._maybe_stop()
        if join:
            self._loop_thread.join(min(GRACE, max(0.0, deadline - time.monotonic())))

    def _abandon(
        self, waited: list[TaskHandle[Any]], callbacks: list[Callback]
    ) -> tuple[TaskInfo, ...]:
        """Mark what is still unfinished ABANDONED, and describe it.  The done callbacks
        go to ``callbacks``."""
        now = time.monotonic()
        infos = []
        for handle in waited:
            thread = handle._thread_name
            func = handle._func
            if self._ledger.move(handle, ABANDONED, from_state=PENDING, defer=callbacks):
                close_if_coroutine(func)  # a pending coroutine that will never run
            elif not self._ledger.move(handle, ABANDONED, defer=callbacks):
                continue  # it finished meanwhile
            infos.append(handle._info(now, ABANDONED, thread, stack=self._stack_of(handle)))
        return tuple(infos)

    def _stack_of(self, handle: TaskHandle[Any]) -> str | None:
        """Any thread.  Where ``handle`` is now, innermost frame last: its worker thread's
        frames if a thread runs it, else its coroutine's; None if it never started."""
        stack = self._pool.stack_of(handle)
        if stack is not None:
            return stack
        task = handle._task
        if task is None:
            return None
        try:
            frames = task.get_stack()
        except RuntimeError:  # pragma: no cover  the coroutine changed while we read it
            return None
        summary = traceback.StackSummary.extract((f, f.f_lineno) for f in frames)
        return "".join(summary.format())

    def _log_report(self, report: ShutdownReport, *, after_manifest: bool) -> None:
        """``shutdown_completed`` or ``shutdown_incomplete``.

        After a ``shutdown_started`` warning, a clean outcome is a warning too: where only
        warnings show (Python's default logging), the manifest's "unfinished=N" must not
        be the last word about work that did finish.
        """
        if report.clean:
            _logging.log(
                _logging.WARNING if after_manifest else _logging.INFO,
                "shutdown_completed",
                runner=self.name,
                completed=report.completed,
                duration=round(report.duration, 3),
            )
            return
        _logging.log(
            _logging.WARNING,
            "shutdown_incomplete",
            runner=self.name,
            completed=report.completed,
            cancelled=report.cancelled,
            abandoned=len(report.abandoned),
            threads=len(report.threads),
            report=repr(report),
            stacks=_describe_stacks(report.abandoned),
        )
