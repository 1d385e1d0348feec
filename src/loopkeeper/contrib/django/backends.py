"""``LoopkeeperBackend``: Django's Tasks framework on loopkeeper's default runner.

::

    TASKS = {
        "default": {
            "BACKEND": "loopkeeper.contrib.django.backends.LoopkeeperBackend",
            "QUEUES": ["default"],              # optional, as for every backend
            "OPTIONS": {"MAX_RESULTS": 10_000},  # results kept for get_result()
        }
    }

Owns: the module-level state below (Django makes one backend instance per thread and
alias, so nothing lives on the instance but what the settings gave): the results of this
process, and the priority gate in front of the runner.

Threads: ``enqueue``, ``aenqueue``, ``get_result`` and ``aget_result`` run in the
caller's thread and never block (one short lock); ``aenqueue`` and ``aget_result`` are
direct, not ``sync_to_async`` wrappers, so they work from any running event loop (asyncio,
the runner's own, trio).  A sync task runs in a tracked worker thread of the runner, an
async task on the runner's loop thread; their ``task_started`` and ``task_finished``
signals are sent from a worker thread either way (receivers may use the ORM), so an
async task's two signals cost it two short trips to a worker thread.

Life of a task: ``enqueue`` validates it, records its ``TaskResult`` (READY), sends
``task_enqueued`` and only then hands it on, so the signal always comes before the task
can start. A task due later (``run_after``) waits on a timer of the loop, holding no
concurrency slot (setting the timer is a tiny runner task of its own, named
``<module path> (run_after)``). Under the runner's ``MAX_CONCURRENCY`` the gate lets at most that
many of this module's tasks into the runner at once and keeps the rest in a heap, highest
``priority`` first, then first come first served; without the limit nothing waits. The
task then runs: RUNNING (``task_started``), then SUCCESSFUL or FAILED (``task_finished``;
a failure is sent from inside the exception handler, so Django's ERROR line carries the
traceback). Anything the task raises fails it, ``SystemExit`` and ``KeyboardInterrupt``
included (there is no caller to hand them to); so does a return value that is not JSON
(``TypeError``, as in Django's own backends). A task runs in the default language and time
zone, as a worker process of a multi-process backend would run it. A task the runner
cancels (at shutdown) is FAILED with the ``CancelledError``; a task that never started
because the runner closed is FAILED with ``RunnerClosedError``; a deferred task whose time
had not come when the process ended never runs (its result stays READY).

Results: ``get_result`` answers for tasks of this process only, the newest
``MAX_RESULTS`` per alias (oldest dropped first, finished or not); each call returns a
snapshot, so a result object never changes under its reader: ``refresh()`` it.  The
result ``enqueue`` returns (and ``task_enqueued`` carries) is the READY one, never
changed by the backend afterwards.

After fork: the child starts with no results and an empty gate.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import functools
import heapq
import inspect
import itertools
import os
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import datetime
from traceback import format_exception
from typing import TYPE_CHECKING, Any, Final

from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone, translation

import loopkeeper

from ._tasks_compat import (
    BaseTaskBackend,
    TaskContext,
    TaskError,
    TaskResult,
    TaskResultDoesNotExist,
    TaskResultStatus,
    normalize_json,
    task_enqueued,
    task_finished,
    task_started,
)

if TYPE_CHECKING:
    from django.dispatch import Signal
    from typing_extensions import ParamSpec, TypeVar

    from ._tasks_compat import Task

    P = ParamSpec("P")
    R = TypeVar("R")

__all__ = ("DEFAULT_MAX_RESULTS", "LoopkeeperBackend")

DEFAULT_MAX_RESULTS: Final = 10_000
"""Results kept per backend alias for ``get_result()`` when ``OPTIONS`` does not say."""

_OPTIONS: Final = ("MAX_RESULTS",)


class _Job:
    """One enqueued task: the result ``enqueue`` returned (never changed afterwards), and
    what changed since, read and written only under ``_state.lock``.  Snapshots
    (``_snapshot``) put the two together."""

    __slots__ = (
        "errors",
        "finished_at",
        "last_attempted_at",
        "name",
        "result",
        "return_value",
        "sender",
        "started_at",
        "status",
        "worker_ids",
    )

    def __init__(
        self, result: TaskResult[Any, Any], sender: type[LoopkeeperBackend], name: str
    ) -> None:
        self.result: Final = result  # READY, as enqueued
        self.sender: Final = sender  # the signals' sender, as Django's backends send it
        self.name: Final = name  # the loopkeeper task's name: the task's module path
        self.status = TaskResultStatus.READY
        self.started_at: datetime | None = None
        self.last_attempted_at: datetime | None = None
        self.finished_at: datetime | None = None
        self.return_value: object = None
        self.errors: list[TaskError] = []
        self.worker_ids: list[str] = []

    @property
    def run_after(self) -> datetime | None:
        return self.result.task.run_after


class _State:
    """This process's results and gate.  Replaced, never shared, in a forked child."""

    def __init__(self) -> None:
        self.pid: Final = os.getpid()
        self.worker_id: Final = secrets.token_hex(16)  # this process, in TaskResult.worker_ids
        self.lock: Final = threading.Lock()  # guards every field below; bookkeeping only
        # By alias, oldest first.
        self.results: dict[str, OrderedDict[str, _Job]] = {}
        # Jobs waiting for a concurrency slot: (-priority, arrival, job), a min-heap.
        self.waiting: list[tuple[int, int, _Job]] = []
        self.arrivals: Final = itertools.count()
        self.in_flight = 0  # jobs handed to the runner and not done yet


_state = _State()


def _reset_in_child() -> None:
    global _state  # noqa: PLW0603  the backend's state is per process by design
    _state = _State()


os.register_at_fork(after_in_child=_reset_in_child)


def _current() -> _State:
    """This process's state (a child forked without at-fork hooks gets a fresh one too)."""
    if _state.pid != os.getpid():
        _reset_in_child()
    return _state


class LoopkeeperBackend(BaseTaskBackend):
    """Runs Django tasks on loopkeeper's default runner, in this process.

    ``OPTIONS``: ``MAX_RESULTS`` (int >= 0, default 10,000): how many results per alias
    ``get_result()`` can still find; the oldest go first.  The runner's own limits
    (``LOOPKEEPER["MAX_CONCURRENCY"]``, ``["MAX_PENDING"]``) apply to tasks as to any
    submit; a task's ``priority`` orders those waiting for a ``MAX_CONCURRENCY`` slot.

    Raises (from ``enqueue``): ``InvalidTask`` (Django's validation: queue name, priority,
    ``run_after``, ...), ``TypeError`` (arguments that are not JSON),
    ``loopkeeper.OverloadedError`` / ``RunnerClosedError`` (the runner refused the task),
    ``ImproperlyConfigured`` (bad ``OPTIONS``; ``manage.py check`` names them too).
    """

    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        self._max_results, self._options_errors = _read_options(self.options)
        # Tasks (frozen, hashable) this instance validated already: validation depends
        # only on the task and the settings, and a settings change makes a new instance.
        # One instance per thread, so no lock.
        self._validated: set[Task[Any, Any]] = set()

    # -- enqueue ----------------------------------------------------------------------

    def enqueue(
        self, task: Task[P, R], args: list[Any], kwargs: dict[str, Any]
    ) -> TaskResult[P, R]:
        """Queue ``task`` to run on the runner; return its result (READY) at once."""
        if task not in self._validated:
            self.validate_task(task)
            if task.run_after is None:  # those with a time would grow the set forever
                self._validated.add(task)
        if self._options_errors:
            raise ImproperlyConfigured("; ".join(self._options_errors))
        now = timezone.now()
        result: TaskResult[P, R] = TaskResult(
            task=task,
            id=secrets.token_hex(16),  # 32 characters, as Django's own ids
            status=TaskResultStatus.READY,
            enqueued_at=now,
            started_at=None,
            last_attempted_at=None,
            finished_at=None,
            args=args,  # normalised to JSON here: TypeError before anything is kept
            kwargs=kwargs,
            backend=self.alias,
            errors=[],
            worker_ids=[],
        )
        job = _Job(result, type(self), task.module_path)
        state = _current()
        with state.lock:
            results = state.results.setdefault(self.alias, OrderedDict())
            results[result.id] = job
            while len(results) > self._max_results:
                results.popitem(last=False)
        task_enqueued.send(job.sender, task_result=result)
        try:
            if job.run_after is not None and job.run_after > now:
                # The default runner itself, never loopkeeper.submit(): loopkeeper.testing's
                # eager mode would run the timer on a throwaway loop, where it never fires.
                loopkeeper.get_runner().submit(_arm_timer, job, name=f"{job.name} (run_after)")
            else:
                _admit(job)
        except BaseException:
            with state.lock:
                state.results[self.alias].pop(result.id, None)
            raise
        return result

    async def aenqueue(
        self, task: Task[P, R], args: list[Any], kwargs: dict[str, Any]
    ) -> TaskResult[P, R]:
        """``enqueue`` from async code: the same work, done directly (it never blocks)."""
        return self.enqueue(task, args, kwargs)

    # -- results ----------------------------------------------------------------------

    def get_result(self, result_id: str) -> TaskResult[Any, Any]:
        """A snapshot of the result ``result_id`` of this process.

        Raises:
            TaskResultDoesNotExist: no such id, or dropped (``MAX_RESULTS``).
        """
        state = _current()
        with state.lock:
            results = state.results.get(self.alias)
            job = None if results is None else results.get(result_id)
            if job is not None:
                return _snapshot(job)
        raise TaskResultDoesNotExist(result_id)

    async def aget_result(self, result_id: str) -> TaskResult[Any, Any]:
        """``get_result`` from async code, directly (it never blocks)."""
        return self.get_result(result_id)

    # -- checks -----------------------------------------------------------------------

    def check(self, **kwargs: Any) -> list[Any]:
        """``loopkeeper.E003`` for each bad ``OPTIONS`` key of this alias."""
        return [
            checks.Error(
                message,
                obj=f"settings.TASKS[{self.alias!r}]",
                hint=f"LoopkeeperBackend's OPTIONS keys are: {', '.join(_OPTIONS)}.",
                id="loopkeeper.E003",
            )
            for message in self._options_errors
        ]


def _read_options(options: object) -> tuple[int, list[str]]:
    """``(max_results, errors)`` from a backend's ``OPTIONS``.  Never raises."""
    if not isinstance(options, Mapping):
        return DEFAULT_MAX_RESULTS, [f"OPTIONS: expected a dict, got {type(options).__name__}"]
    errors = [
        f"OPTIONS: unknown key {key!r} for LoopkeeperBackend"
        for key in options
        if key not in _OPTIONS
    ]
    max_results = options.get("MAX_RESULTS", DEFAULT_MAX_RESULTS)
    if isinstance(max_results, bool) or not isinstance(max_results, int) or max_results < 0:
        errors.append(
            f"OPTIONS['MAX_RESULTS']: expected an int >= 0, "
            f"got {type(max_results).__name__} {max_results!r}"
        )
        max_results = DEFAULT_MAX_RESULTS
    return max_results, errors


# The fields of a TaskResult that never change after enqueue (the task, id, arguments, ...).
_FIXED_FIELDS: Final = tuple(
    field.name
    for field in dataclasses.fields(TaskResult)
    if field.name
    not in {
        "status",
        "started_at",
        "last_attempted_at",
        "finished_at",
        "_return_value",
        "errors",
        "worker_ids",
    }
)


def _snapshot(job: _Job) -> TaskResult[Any, Any]:
    """The job's result as it is now, a copy the caller may keep (its lists are its own).
    Under ``_state.lock``.  Field by field: ``copy.copy`` costs several times more."""
    result = job.result
    copied = object.__new__(type(result))
    for name in _FIXED_FIELDS:
        object.__setattr__(copied, name, getattr(result, name))
    object.__setattr__(copied, "status", job.status)
    object.__setattr__(copied, "started_at", job.started_at)
    object.__setattr__(copied, "last_attempted_at", job.last_attempted_at)
    object.__setattr__(copied, "finished_at", job.finished_at)
    object.__setattr__(copied, "_return_value", job.return_value)
    object.__setattr__(copied, "errors", list(job.errors))
    object.__setattr__(copied, "worker_ids", list(job.worker_ids))
    return copied


# -- the gate: at most MAX_CONCURRENCY of our jobs in the runner, the rest by priority ------


def _admit(job: _Job) -> None:
    """Any thread.  Hand ``job`` to the runner now, or queue it for a slot.

    Raises:
        OverloadedError, RunnerClosedError: the runner refused it (nothing kept).
    """
    runner = loopkeeper.get_runner()
    limit = runner.max_concurrency
    state = _current()
    with state.lock:
        if limit is not None and (state.in_flight >= limit or state.waiting):
            if len(state.waiting) + state.in_flight >= runner.max_pending:
                raise loopkeeper.OverloadedError(runner.name, runner.max_pending)
            priority = job.result.task.priority
            heapq.heappush(state.waiting, (-priority, next(state.arrivals), job))
            return
        state.in_flight += 1
    _submit(runner, job)


def _submit(runner: loopkeeper.Runner, job: _Job) -> None:
    """Any thread; the job already counts in ``in_flight``."""
    func: Callable[[_Job], Any] = (
        _run_async if inspect.iscoroutinefunction(job.result.task.func) else _run_sync
    )
    try:
        handle = runner.submit(func, job, name=job.name)
    except BaseException:
        _release_slot()
        raise
    handle.add_done_callback(functools.partial(_on_done, job))


def _on_done(job: _Job, handle: loopkeeper.TaskHandle[Any]) -> None:
    """The runner's done callback (loop thread): free the slot, start the next jobs."""
    if handle.cancelled() or handle.state is loopkeeper.TaskState.ABANDONED:
        _fail_unstarted(job, handle)
    _release_slot()


def _release_slot() -> None:
    runner = loopkeeper.get_runner()
    limit = runner.max_concurrency
    state = _current()
    starting: list[_Job] = []
    with state.lock:
        state.in_flight -= 1
        while state.waiting and (limit is None or state.in_flight < limit):
            starting.append(heapq.heappop(state.waiting)[2])
            state.in_flight += 1
    for job in starting:  # outside the lock: submit may run callbacks
        try:
            _submit(runner, job)
        except loopkeeper.LoopkeeperError as exc:  # closed (shutdown) or overloaded
            _settle_failed(job, exc)


def _fail_unstarted(job: _Job, handle: loopkeeper.TaskHandle[Any]) -> None:
    """A job the runner cancelled or abandoned before it ran: FAILED, if it is READY
    (one that started is settled by its own code, even after the runner gave up on it)."""
    error: BaseException
    if handle.cancelled():
        error = concurrent.futures.CancelledError(f"task {job.name!r} was cancelled before it ran")
    else:
        error = loopkeeper.TaskAbandonedError(handle.id, handle.name)
    _settle_failed(job, error, only_if_ready=True)


async def _arm_timer(job: _Job) -> None:
    """Loop thread: admit ``job`` at its ``run_after``, on a loop timer (no slot held)."""
    run_after = job.run_after
    assert run_after is not None
    delay = max(0.0, (run_after - timezone.now()).total_seconds())
    asyncio.get_running_loop().call_later(delay, _admit_deferred, job)


def _admit_deferred(job: _Job) -> None:
    try:
        _admit(job)
    except loopkeeper.LoopkeeperError as exc:
        _settle_failed(job, exc)


# -- running a job ----------------------------------------------------------------------


def _start(job: _Job) -> TaskResult[Any, Any]:
    """Mark the job RUNNING; return the snapshot the task and ``task_started`` see."""
    state = _current()
    now = timezone.now()
    with state.lock:
        job.status = TaskResultStatus.RUNNING
        job.started_at = job.last_attempted_at = now
        job.worker_ids.append(state.worker_id)
        return _snapshot(job)


def _arguments(job: _Job, snapshot: TaskResult[Any, Any]) -> tuple[list[Any], dict[str, Any]]:
    args = list(job.result.args)
    if job.result.task.takes_context:
        args.insert(0, TaskContext(task_result=snapshot))
    return args, dict(job.result.kwargs)


def _settle_succeeded(job: _Job, value: object) -> TaskResult[Any, Any]:
    state = _current()
    now = timezone.now()
    with state.lock:
        job.return_value = value
        job.finished_at = now
        job.status = TaskResultStatus.SUCCESSFUL
        return _snapshot(job)


def _settle_failed(
    job: _Job, exc: BaseException, *, only_if_ready: bool = False
) -> TaskResult[Any, Any]:
    """FAILED with ``exc``; with ``only_if_ready``, only if the job never started."""
    error = TaskError(
        exception_class_path=f"{type(exc).__module__}.{type(exc).__qualname__}",
        traceback="".join(format_exception(exc)),
    )
    state = _current()
    now = timezone.now()
    with state.lock:
        if only_if_ready and job.status != TaskResultStatus.READY:
            return _snapshot(job)
        job.errors.append(error)
        job.finished_at = now
        job.status = TaskResultStatus.FAILED
        return _snapshot(job)


def _as_in_a_worker() -> None:
    """The default language and time zone, as a worker process of any other backend
    runs a task (``loopkeeper.submit()`` carries the submitter's; a Django task does not,
    so that the same task code behaves the same on a multi-process backend)."""
    translation.deactivate()
    timezone.deactivate()


def _run_sync(job: _Job) -> None:
    """Worker thread: the whole life of a sync task."""
    _as_in_a_worker()
    try:
        snapshot = _start(job)
        task_started.send(job.sender, task_result=snapshot)
        args, kwargs = _arguments(job, snapshot)
        value = normalize_json(job.result.task.func(*args, **kwargs))
    except BaseException as exc:  # noqa: BLE001  any failure, SystemExit too, fails the task
        task_finished.send(job.sender, task_result=_settle_failed(job, exc))
    else:
        task_finished.send(job.sender, task_result=_settle_succeeded(job, value))


async def _run_async(job: _Job) -> None:
    """Loop thread: an async task; its signals go out from a worker thread."""
    _as_in_a_worker()
    try:
        snapshot = _start(job)
        await loopkeeper.run_in_thread(_send, task_started, job.sender, snapshot, None)
        args, kwargs = _arguments(job, snapshot)
        value = normalize_json(await job.result.task.func(*args, **kwargs))
    except asyncio.CancelledError as exc:  # the runner cancelled it (shutdown): no thread trip
        task_finished.send(job.sender, task_result=_settle_failed(job, exc))
        raise
    except BaseException as exc:  # noqa: BLE001  any failure, SystemExit too, fails the task
        failed = _settle_failed(job, exc)
        await loopkeeper.run_in_thread(_send, task_finished, job.sender, failed, exc)
    else:
        done = _settle_succeeded(job, value)
        await loopkeeper.run_in_thread(_send, task_finished, job.sender, done, None)


def _send(
    signal: Signal,
    sender: type[LoopkeeperBackend],
    snapshot: TaskResult[Any, Any],
    exc: BaseException | None,
) -> None:
    """Worker thread: send ``signal``; with ``exc``, from inside a handler of it, so that
    ``sys.exc_info()`` (Django's log line) sees the task's exception."""
    if exc is None:
        signal.send(sender, task_result=snapshot)
        return
    try:
        raise exc
    except BaseException:  # noqa: BLE001  re-raised only to be the exception being handled
        signal.send(sender, task_result=snapshot)
