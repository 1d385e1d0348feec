"""Task handles, their state machine, and the ledger that counts them.

The ``Ledger`` owns one lock.  Under it, and only under it, a handle changes state and
the counters change with it, so ``submitted == pending + running + succeeded + failed +
cancelled + abandoned`` holds at every instant, not only when things are quiet.  The
lock guards bookkeeping only: nobody holds it across user code, a wait or a wake-up.

Who settles a handle: the loop thread when the task ran; the cancelling thread when a
task is cancelled before it started; shutdown's thread when it abandons a task.  That
thread then wakes the waiters (blocked threads, coroutines on any loop) and runs the
done callbacks, in that order, outside the lock.

After ``fork`` a parent's handle in the child changes nothing: ``cancel()`` returns
False, and waiting for one that is not done raises ``RuntimeError``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import enum
import os
import threading
import time
import types
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any, Final, Generic, Protocol, TypeVar, cast, final

from . import _logging
from ._errors import TaskAbandonedError
from ._validation import SYNC, check_optional_seconds, wait_seconds
from ._waiters import Wake, wait_until_woken

if TYPE_CHECKING:
    from ._threads import WorkerPool
    from ._validation import Kind

__all__ = (
    "ABANDONED",
    "CANCELLED",
    "FAILED",
    "PENDING",
    "PENDING_SLOT",
    "RUNNING",
    "SUCCEEDED",
    "Callback",
    "HandOffFailure",
    "HandedOff",
    "Ledger",
    "RunnerStats",
    "ShutdownReport",
    "TaskHandle",
    "TaskInfo",
    "TaskState",
    "ThreadInfo",
    "cancel_handle",
    "describe_hand_off",
    "run_callbacks",
)

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class TaskState(enum.Enum):
    """Where a task is in its life.  The last four are final."""

    PENDING = "pending"  #: accepted, not yet running (queued, waiting for a slot or a worker)
    RUNNING = "running"  #: its code has started
    SUCCEEDED = "succeeded"  #: returned a value
    FAILED = "failed"  #: raised (anything, SystemExit included), or its timeout expired
    CANCELLED = "cancelled"  #: cancelled before or while running
    ABANDONED = "abandoned"  #: shutdown left it behind; its outcome will never be known

    # Derived from _NEXT below, per member, so that the hot path never hashes a member.
    _slot: int  # index in Ledger.counts
    _final: bool  # no transition leaves it
    _allowed: tuple[bool, ...]  # _allowed[new._slot]: may this state move to new?

    def __repr__(self) -> str:
        return f"TaskState.{self.name}"


_NEXT: Final[dict[TaskState, frozenset[TaskState]]] = {
    TaskState.PENDING: frozenset({TaskState.RUNNING, TaskState.CANCELLED, TaskState.ABANDONED}),
    TaskState.RUNNING: frozenset(
        {TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED, TaskState.ABANDONED}
    ),
}  # final states have no entry

for _index, _state in enumerate(TaskState):
    _state._slot = _index
    _state._final = _state not in _NEXT
    _state._allowed = tuple(new in _NEXT.get(_state, ()) for new in TaskState)
del _index, _state
PENDING_SLOT: Final = TaskState.PENDING._slot
RUNNING_SLOT: Final = TaskState.RUNNING._slot
# The members as plain module globals: on Python 3.11 every ``TaskState.X`` lookup goes
# through the enum metaclass (~140 ns); the hot path reads these instead.
PENDING: Final = TaskState.PENDING
RUNNING: Final = TaskState.RUNNING
SUCCEEDED: Final = TaskState.SUCCEEDED
FAILED: Final = TaskState.FAILED
CANCELLED: Final = TaskState.CANCELLED
ABANDONED: Final = TaskState.ABANDONED


@final
@dataclasses.dataclass(frozen=True, slots=True)
class RunnerStats:
    """A consistent snapshot of a runner's counters, taken under its lock.

    ``submitted == pending + running + succeeded + failed + cancelled + abandoned``
    always holds.  ``rejected`` counts submits refused with ``RunnerClosedError`` or
    ``OverloadedError`` (bad input is not counted at all).  ``threads`` is the number of
    worker threads running this runner's jobs now.  ``loop_lag`` is how late, in seconds,
    the loop thread last ran a callback it had scheduled (0.0 before it started).
    """

    submitted: int
    pending: int
    running: int
    succeeded: int
    failed: int
    cancelled: int
    abandoned: int
    rejected: int
    threads: int
    loop_lag: float

    def as_dict(self) -> dict[str, int | float]:
        """The snapshot as a plain dict of its fields, ready for ``json.dumps``: for health
        checks and metrics exporters.  ``{"submitted": 3, "pending": 0, ...}``."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}


@final
@dataclasses.dataclass(frozen=True, slots=True)
class TaskInfo:
    """One task as a snapshot sees it: a task that shutdown had to leave behind (in
    ``ShutdownReport.abandoned``), or an unfinished one (``Runner.tasks()``)."""

    id: int
    name: str
    state: TaskState  #: ABANDONED in a report; PENDING or RUNNING in ``Runner.tasks()``
    age: float  #: seconds from submit to the moment of the snapshot
    thread: str | None  #: the thread running it, or None for a coroutine
    #: ``file:line in function`` of the ``submit()`` call (the first frame outside
    #: loopkeeper and Django's Tasks framework)
    submitted_from: str | None = None
    #: in a report: where it was when abandoned, innermost frame last (its coroutine's
    #: frames, or its worker thread's), as text; None if it never started
    stack: str | None = None


@final
@dataclasses.dataclass(frozen=True, slots=True)
class ThreadInfo:
    """A tracked worker thread running a job of a runner's task."""

    name: str  #: the thread's name, e.g. ``loopkeeper-worker-3``
    task_id: int | None  #: the task that owns the job (None: submitted outside any task)
    task_name: str | None
    age: float  #: seconds since the job started
    state: str  #: ``running``, ``cancelling`` (told to stop) or ``abandoned`` (given up on)


@final
@dataclasses.dataclass(frozen=True, slots=True)
class HandedOff:
    """Work that a shutdown gave to a durable system instead of cancelling it (the Django
    Tasks backend's ``HANDOFF``): it runs there, exactly once, and not here."""

    name: str  #: the work's name (for a Django task, its module path)
    id: str  #: its id here (for a Django task, the id of the result ``enqueue`` returned)
    to: str  #: where it went, e.g. ``tasks backend 'durable'``
    new_id: str  #: its id there
    #: the loopkeeper task that was to run it here (cancelled unstarted, or an idempotent
    #: task cancelled while it ran), or None if it was still queued in front of the runner
    task_id: int | None = None


@final
@dataclasses.dataclass(frozen=True, slots=True)
class HandOffFailure:
    """Work that a hand-off could not give away: it is left here, and named in the
    ``shutdown_hand_off_failed`` log line (a loopkeeper task among it is abandoned)."""

    name: str
    id: str
    to: str
    error: str  #: what the destination raised, as ``Type: message``
    task_id: int | None = None


@final
@dataclasses.dataclass(frozen=True, slots=True)
class ShutdownReport:
    """What a shutdown did.  Calling ``shutdown()`` again returns the same report.

    ``completed`` counts unfinished tasks that finished on their own during the drain;
    ``cancelled`` those the shutdown cancelled; ``abandoned`` names every task it had to
    leave behind; ``threads`` every tracked thread still running when it returned (the
    thread of an abandoned sync task, or one that a finished task left behind).
    ``handed_off`` names the work it gave to a durable system instead of cancelling it
    (the Django Tasks backend's ``HANDOFF``; a loopkeeper task among it counts there, not
    in ``cancelled``).  ``clean`` is True when it cancelled and abandoned nothing and left
    no thread running: work handed off is not lost.
    """

    completed: int
    cancelled: int
    abandoned: tuple[TaskInfo, ...]
    duration: float
    threads: tuple[ThreadInfo, ...] = ()
    handed_off: tuple[HandedOff, ...] = ()

    @property
    def clean(self) -> bool:
        return self.cancelled == 0 and not self.abandoned and not self.threads

    def __repr__(self) -> str:
        left = ", ".join(
            f"{info.id} {info.name!r} ({f'thread {info.thread!r}, ' if info.thread else ''}"
            f"age {info.age:.1f}s)"
            for info in self.abandoned
        )
        threads = ", ".join(
            f"{info.name!r} (task {info.task_id} {info.task_name!r}, age {info.age:.1f}s)"
            for info in self.threads
        )
        handed = "".join(
            f" handed_off=[{', '.join(describe_hand_off(h) for h in self.handed_off)}]"
            if self.handed_off
            else ""
        )
        return (
            f"<ShutdownReport clean={self.clean} completed={self.completed} "
            f"cancelled={self.cancelled} abandoned=[{left}] threads=[{threads}]{handed} "
            f"duration={self.duration:.3f}s>"
        )


def describe_hand_off(hand_off: HandedOff | HandOffFailure) -> str:
    """``'name' id -> to new_id`` (or ``-> to failed: error``), for reprs and log lines."""
    if isinstance(hand_off, HandedOff):
        return f"{hand_off.name!r} {hand_off.id} -> {hand_off.to} {hand_off.new_id}"
    return f"{hand_off.name!r} {hand_off.id} -> {hand_off.to} failed: {hand_off.error}"


class _Owner(Protocol):
    """What a handle needs from its runner (the runner implements it)."""

    _pool: WorkerPool
    _ledger: Ledger
    _pid: int  # the process that made the runner (and accepted its tasks)

    def _cancel(self, handle: TaskHandle[Any], msg: str | None) -> bool: ...
    def _on_loop_thread(self) -> bool: ...


_NO_VALUE: Final[Any] = object()


@final
class TaskHandle(Generic[T_co]):
    """The caller's view of one accepted task: its state, outcome and cancellation.

    Created only by ``submit()``.  Every method is safe from any thread; ``await handle``
    works from any asyncio loop (the runner's own included) and from trio.  Methods mean
    what ``concurrent.futures.Future``'s mean.  The repr shows id, name and state, never
    arguments or results::

        h = loopkeeper.submit(send_mail, 42, name="welcome-mail")
        h.result(timeout=5)
    """

    __slots__ = (
        "__weakref__",
        "_args",
        "_by_shutdown",
        "_callbacks",
        "_cancelling",
        "_carry",
        "_debug",
        "_event",
        "_exc",
        "_expired",
        "_from_code",
        "_from_line",
        "_func",
        "_kind",
        "_owner",
        "_state",
        "_submitted_at",
        "_task",
        "_thread_name",
        "_timeout",
        "_timer",
        "_value",
        "_waiters",
        "id",
        "name",
    )

    id: int
    name: str

    def __init__(
        self,
        owner: _Owner,
        task_id: int,
        name: str,
        kind: Kind,
        func: Any,
        args: tuple[Any, ...],
        timeout: float | None,
    ) -> None:
        self.id = task_id
        self.name = name
        self._owner = owner
        self._kind = kind
        self._func: Any = func  # dropped once the task starts or settles
        self._args: tuple[Any, ...] | None = args
        self._timeout = timeout
        self._state = PENDING  # changed only by Ledger.move, under the ledger lock
        self._value: Any = _NO_VALUE
        self._exc: BaseException | None = None
        self._event: threading.Event | None = None  # created under the lock by a waiter
        self._waiters: list[Wake] | None = None  # async waiters, under the lock
        self._callbacks: list[Callable[[TaskHandle[Any]], object]] | None = None  # under the lock
        self._submitted_at = time.monotonic()
        self._thread_name: str | None = None  # the worker running a sync task
        self._by_shutdown = False  # cancelled by shutdown (counted in its report)
        self._cancelling = False  # somebody called cancel() (not the task's own timeout)
        self._expired = False  # loop thread: the task's own timeout fired
        self._debug = False  # DEBUG was on at submit: the task logs its routine lines
        self._carry: Callable[[], object] | None = None  # Hooks.capture()'s, run as it starts
        # Where submit() was called: two slots, not a tuple (one object less per task).
        self._from_code: types.CodeType | None = None
        self._from_line = 0
        self._task: asyncio.Task[Any] | None = None  # loop thread: set while it runs
        self._timer: asyncio.TimerHandle | None = None  # loop thread: its own timeout

    def __repr__(self) -> str:
        return f"<TaskHandle id={self.id} name={self.name!r} state={self._state.name}>"

    def _info(
        self, now: float, state: TaskState, thread: str | None, stack: str | None = None
    ) -> TaskInfo:
        """This task as ``Runner.tasks()`` and a shutdown report describe it."""
        return TaskInfo(
            id=self.id,
            name=self.name,
            state=state,
            age=now - self._submitted_at,
            thread=thread,
            submitted_from=self._submitted_from(),
            stack=stack,
        )

    def _submitted_from(self) -> str | None:
        """``file:line in function`` of the ``submit()`` call that made this task."""
        code = self._from_code
        if code is None:
            return None
        name = getattr(code, "co_qualname", code.co_name)
        return f"{code.co_filename}:{self._from_line} in {name}"

    @property
    def state(self) -> TaskState:
        """The current state (a snapshot: it may change right after you read it)."""
        return self._state

    def done(self) -> bool:
        """True once the task is in a final state."""
        return self._state._final

    def cancelled(self) -> bool:
        """True if the task ended ``CANCELLED``."""
        return self._state is CANCELLED

    def cancel(self, msg: str | None = None) -> bool:
        """Ask the task to stop.  Any thread.

        A pending task is cancelled at once.  A running coroutine gets
        ``asyncio.CancelledError`` (with ``msg``) at its next ``await``; a running sync
        task stays ``RUNNING`` until its thread returns, then becomes ``CANCELLED``.

        Returns:
            False if the task had already finished, True otherwise.  A coroutine that
            catches the cancellation and returns ends by its own outcome.
        """
        if self._owner._pid != os.getpid() or self.done():
            return False
        return self._owner._cancel(self, msg)

    def result(self, timeout: float | None = None) -> T_co:
        """Block until the task finishes and return its value.  Any thread but the loop's.

        Args:
            timeout: seconds to wait at most; None waits as long as it takes.

        Raises:
            TimeoutError: still unfinished after ``timeout`` (the task goes on).
            concurrent.futures.CancelledError: the task was cancelled.
            TaskAbandonedError: shutdown left it behind.
            RuntimeError: called on the runner's loop thread while the task is not done
                (it would deadlock: ``await handle`` there instead).
            BaseException: whatever the task raised (``TaskTimeoutError`` if its own
                timeout expired).
        """
        self._wait(timeout)
        return cast("T_co", self._outcome(concurrent.futures.CancelledError))

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """Block like ``result()``; return what the task raised, or None if it succeeded.

        Raises ``TimeoutError``, ``concurrent.futures.CancelledError``,
        ``TaskAbandonedError`` and ``RuntimeError`` as ``result()`` does.
        """
        self._wait(timeout)
        if self._state is FAILED:
            return self._exc
        self._outcome(concurrent.futures.CancelledError)
        return None

    def add_done_callback(self, fn: Callable[[TaskHandle[T_co]], object]) -> None:
        """Call ``fn(handle)`` once the task is done.

        It runs in the thread that settles the task (the loop thread for tasks that
        ran), or at once in the caller's thread if the task is already done.  What it
        raises is logged (``callback_failed``), never propagated.

        Raises:
            RuntimeError: in a forked child, for a parent's task that is not done (its
                outcome cannot be known there).
        """
        if self._owner._pid != os.getpid():  # never the parent's lock: held at the fork?
            if not self.done():
                self._check_process()  # raises
            _run_callback(self, fn)
            return
        with self._owner._ledger.lock:
            if not self.done():
                if self._callbacks is None:
                    self._callbacks = []
                self._callbacks.append(cast("Callable[[TaskHandle[Any]], object]", fn))
                return
        _run_callback(self, fn)

    def __await__(self) -> Generator[Any, None, T_co]:
        """``await handle``: wait without blocking the awaiting loop; any asyncio loop or trio.

        Cancelling the awaiting coroutine stops the wait, not the task.  A cancelled task
        raises ``asyncio.CancelledError``.
        """
        if not self.done():
            self._check_process()
            yield from wait_until_woken(self._add_waiter, self._remove_waiter).__await__()
        return cast("T_co", self._outcome(asyncio.CancelledError))

    # -- internals -------------------------------------------------------------------

    def _stop_requested(self) -> bool:
        """Any thread.  Cancelled by someone, or its own timeout fired: its threads stop."""
        return self._cancelling or self._expired

    def _check_process(self) -> None:
        if self._owner._pid != os.getpid():
            raise RuntimeError(
                f"{self!r} belongs to process {self._owner._pid}, not to this forked child "
                f"{os.getpid()}; its outcome cannot be known here"
            )

    def _wait(self, timeout: float | None) -> None:
        seconds = check_optional_seconds(timeout, param="timeout")
        if self.done():
            return
        self._check_process()
        if self._owner._on_loop_thread():
            raise RuntimeError(
                f"{self!r}: result() and exception() would block the runner's own loop "
                "thread, which this task needs to finish; use 'await handle' there instead"
            )
        with self._owner._ledger.lock:
            if self.done():
                return
            if self._event is None:
                self._event = threading.Event()
            event = self._event
        if not event.wait(wait_seconds(seconds)):
            raise TimeoutError(
                f"{self!r} did not finish within timeout={timeout}s of waiting; it goes on"
            )

    def _add_waiter(self, wake: Wake) -> bool:
        with self._owner._ledger.lock:
            if self.done():
                return False
            if self._waiters is None:
                self._waiters = []
            self._waiters.append(wake)
            return True

    def _remove_waiter(self, wake: Wake) -> None:
        with self._owner._ledger.lock:
            if self._waiters is not None and wake in self._waiters:
                self._waiters.remove(wake)

    def _outcome(self, cancelled_error: type[BaseException]) -> object:
        state = self._state
        if state is SUCCEEDED:
            return self._value
        if state is FAILED:
            assert self._exc is not None
            raise self._exc
        if state is CANCELLED:
            raise cancelled_error(f"{self!r} was cancelled")
        if state is ABANDONED:
            raise TaskAbandonedError(self.id, self.name)
        raise AssertionError(f"{self!r} is not done")  # pragma: no cover


def cancel_handle(handle: object, msg: str | None) -> bool:
    """``cancel(handle)``: check the argument, then ``handle.cancel(msg)``."""
    if not isinstance(handle, TaskHandle):
        raise TypeError(
            f"cancel(handle=...): expected a loopkeeper TaskHandle, got an object of type "
            f"{type(handle).__qualname__}"
        )
    return handle.cancel(msg)


Callback = tuple["TaskHandle[Any]", Callable[["TaskHandle[Any]"], object]]  # (handle, fn)


def run_callbacks(callbacks: list[Callback]) -> None:
    """Run callbacks that ``Ledger.move(defer=...)`` set aside, in order.  Never raises."""
    for handle, fn in callbacks:
        _run_callback(handle, fn)


def _run_callback(handle: TaskHandle[Any], fn: Callable[[TaskHandle[Any]], object]) -> None:
    try:
        fn(handle)
    except BaseException as exc:  # noqa: BLE001  a callback must not break whoever settled
        _logging.log(
            _logging.ERROR,
            "callback_failed",
            task_id=handle.id,
            task_name=handle.name,
            exc_info=exc,
        )


class Ledger:
    """The runner's accounting: one lock, the counters, and every unfinished task.

    Holds a strong reference to each accepted task until it is final (asyncio keeps only
    weak ones).  ``closed`` flips once, under the lock, so that no submit can slip in
    after a shutdown took its manifest.
    """

    def __init__(self, on_settled_empty: Callable[[], None]) -> None:
        self.lock = threading.Lock()  # guards every field below, and handle state
        self.counts = [0] * len(TaskState)  # indexed by each state's _slot
        self.submitted = 0  # accepted ever, withdrawn ones included: the last task id
        self.withdrawn = 0  # accepted, then refused after all (withdraw())
        self.rejected = 0
        self.unfinished: dict[int, TaskHandle[Any]] = {}
        self.closed = False
        self.exempt: frozenset[int] = frozenset()  # tasks a drain does not wait for
        self.drained = threading.Event()  # set once closed and nothing but exempt is left
        self._on_settled_empty = on_settled_empty  # called outside the lock, once

    def close(self, exempt: frozenset[int]) -> list[TaskHandle[Any]]:
        """Stop accepting; return the manifest of unfinished tasks.  Caller holds no lock."""
        with self.lock:
            self.closed = True
            self.exempt = exempt
            manifest = list(self.unfinished.values())
            drained = self.unfinished.keys() <= exempt
            empty = not self.unfinished
        if drained:
            self.drained.set()
        if empty:
            self._on_settled_empty()
        return manifest

    def start(
        self, handles: list[TaskHandle[Any]]
    ) -> list[tuple[TaskHandle[Any], Any, tuple[Any, ...] | None]]:
        """Start each handle still pending, under one lock.  Any thread.

        PENDING -> RUNNING, except for a sync task: it stays PENDING until a worker thread
        takes its job (``begin``), because RUNNING means its code has started.

        Returns ``(handle, func, args)`` for each handle it started, in order: a batch
        from the inbox costs one lock, not one per task.  The function and arguments
        leave the handle in the same step, so the caller owns them even if a shutdown
        abandons the task the next instant (``move`` then finds nothing to release).
        """
        started = []
        running = 0
        with self.lock:
            for handle in handles:
                if handle._state is PENDING:
                    if handle._kind is not SYNC:
                        handle._state = RUNNING
                        running += 1
                    started.append((handle, handle._func, handle._args))
                    handle._func = handle._args = None
            counts = self.counts
            counts[PENDING_SLOT] -= running
            counts[RUNNING_SLOT] += running
        return started

    def begin(self, handle: TaskHandle[Any]) -> bool:
        """PENDING -> RUNNING for a sync task whose worker thread is about to call it.  The
        worker thread.  False if it was cancelled or abandoned while it waited."""
        with self.lock:
            if handle._state is not PENDING:
                return False
            handle._state = RUNNING
            self.counts[PENDING_SLOT] -= 1
            self.counts[RUNNING_SLOT] += 1
        return True

    def move(
        self,
        handle: TaskHandle[Any],
        new: TaskState,
        value: object = None,
        exc: BaseException | None = None,
        from_state: TaskState | None = None,
        defer: list[Callback] | None = None,
    ) -> bool:
        """Apply one transition.  Any thread.  False if it is not allowed (already final),
        or if ``from_state`` is given and the handle is no longer in it.

        For a final state, wake the waiters and run the callbacks in this thread, after
        the lock; with ``defer``, the callbacks are appended to it instead, for the
        caller to run with ``run_callbacks`` once it holds nothing a callback could want
        (a shutdown runs them once its report is made).
        """
        with self.lock:
            old = handle._state
            if not old._allowed[new._slot] or (from_state is not None and old is not from_state):
                return False
            counts = self.counts
            counts[old._slot] -= 1
            counts[new._slot] += 1
            # The outcome first, the state last: done() and result() read them without the
            # lock, so a reader that sees a final state must see its value and exception.
            handle._value = value
            handle._exc = exc
            handle._state = new
            # Released after the lock: dropping the last reference to an argument may run a
            # finalizer, and a finalizer may submit (weakref.finalize(conn, submit, close)).
            released = handle._func, handle._args
            handle._func = handle._args = None
            del self.unfinished[handle.id]
            event, waiters, callbacks = handle._event, handle._waiters, handle._callbacks
            handle._waiters = handle._callbacks = None
            drained = self.closed and self.unfinished.keys() <= self.exempt
            empty = self.closed and not self.unfinished
        del released
        if event is not None:
            event.set()
        for wake in waiters or ():
            wake()
        if defer is not None:
            defer.extend((handle, fn) for fn in callbacks or ())
        else:
            for fn in callbacks or ():
                _run_callback(handle, fn)
        if drained:
            self.drained.set()
        if empty:
            self._on_settled_empty()
        return True

    def withdraw(self, handle: TaskHandle[Any]) -> bool:
        """Undo the acceptance of a task that is still PENDING and never reached the loop:
        it counts as rejected, not submitted.  Any thread.  False if it was settled."""
        with self.lock:
            if handle._state is not PENDING:
                return False
            self.counts[PENDING_SLOT] -= 1
            self.withdrawn += 1  # its id is not reused: submitted stays the id counter
            self.rejected += 1
            del self.unfinished[handle.id]
            drained = self.closed and self.unfinished.keys() <= self.exempt
            empty = self.closed and not self.unfinished
        handle._func = handle._args = None  # after the lock, as in move()
        if drained:
            self.drained.set()
        if empty:
            self._on_settled_empty()
        return True

    def snapshot(self, threads: int, loop_lag: float) -> RunnerStats:
        with self.lock:
            c = dict(zip(TaskState, self.counts, strict=True))
            return RunnerStats(
                submitted=self.submitted - self.withdrawn,
                pending=c[PENDING],
                running=c[RUNNING],
                succeeded=c[SUCCEEDED],
                failed=c[FAILED],
                cancelled=c[CANCELLED],
                abandoned=c[ABANDONED],
                rejected=self.rejected,
                threads=threads,
                loop_lag=loop_lag,
            )
