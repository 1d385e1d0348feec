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
had not come when the process ended never runs (its result stays READY).  With
``OPTIONS["HANDOFF"]``, those that had not started go to that durable backend instead, once
the drain has done what it could (``_hand_off``, at the end of this module).

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
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from traceback import format_exception
from typing import TYPE_CHECKING, Any, Final

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone, translation

import loopkeeper
from loopkeeper._handles import HandedOff, HandOffFailure

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

__all__ = ("DEFAULT_MAX_RESULTS", "LoopkeeperBackend", "idempotent")

DEFAULT_MAX_RESULTS: Final = 10_000
"""Results kept per backend alias for ``get_result()`` when ``OPTIONS`` does not say."""

_OPTIONS: Final = ("MAX_RESULTS", "HANDOFF")


def idempotent(func: Callable[P, R]) -> Callable[P, R]:
    """Mark a task function safe to run twice, so that a ``HANDOFF`` hands it off even if
    it had started here when the drain's deadline passed (it is then cancelled here, and
    may have done part or all of its work here too)::

        @task
        @idempotent
        def refresh_search_index(doc_id: int) -> None: ...

    Put it under ``@task``: it marks the function, which Django's task keeps.
    """
    func.__loopkeeper_idempotent__ = True  # type: ignore[attr-defined]
    return func


class _Job:
    """One enqueued task: the result ``enqueue`` returned (never changed afterwards), and
    what changed since, read and written only under ``_state.lock``.  Snapshots
    (``_snapshot``) put the two together."""

    __slots__ = (
        "errors",
        "finished_at",
        "gone",
        "handle",
        "handoff",
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
        self,
        result: TaskResult[Any, Any],
        sender: type[LoopkeeperBackend],
        name: str,
        handoff: str | None,
    ) -> None:
        self.result: Final = result  # READY, as enqueued
        self.sender: Final = sender  # the signals' sender, as Django's backends send it
        self.name: Final = name  # the loopkeeper task's name: the task's module path
        self.handoff: Final = handoff  # the alias its HANDOFF names, if any
        self.handle: loopkeeper.TaskHandle[Any] | None = None  # once handed to the runner
        self.gone = False  # claimed by a hand-off: it never starts here
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
        # Jobs with a HANDOFF, wherever they wait, for the hand-off at shutdown: in the
        # runner (not done yet), on a run_after timer, or refused by the closed runner.
        self.in_runner: set[_Job] = set()
        self.deferred: set[_Job] = set()
        self.refused: list[_Job] = []
        # The runners this process's hand-off is registered with (one, but a runner of a
        # test may come and go); weak, so a runner shut down and dropped is not kept.
        self.hand_off_runners: weakref.WeakSet[loopkeeper.Runner] = weakref.WeakSet()


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
    ``get_result()`` can still find; the oldest go first.  ``HANDOFF`` (an alias of
    ``TASKS`` whose backend is durable, such as django-tasks-db's ``DatabaseBackend``;
    default None): when the runner's shutdown has drained what it could, every task of
    this alias that has not started (waiting for a slot, for its ``run_after``, or in the
    runner) is enqueued there instead of being cancelled, with the same arguments,
    priority, queue and ``run_after``; a started task too if it is ``@idempotent``.  The
    runner's own limits (``LOOPKEEPER["MAX_CONCURRENCY"]``, ``["MAX_PENDING"]``) apply to
    tasks as to any submit; a task's ``priority`` orders those waiting for a
    ``MAX_CONCURRENCY`` slot.

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
        self._max_results, self._handoff, self._options_errors = _read_options(alias, self.options)
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
        job = _Job(result, type(self), task.module_path, self._handoff)
        state = _current()
        with state.lock:
            results = state.results.setdefault(self.alias, OrderedDict())
            results[result.id] = job
            while len(results) > self._max_results:
                results.popitem(last=False)
        task_enqueued.send(job.sender, task_result=result)
        try:
            # The default runner itself, never loopkeeper.submit(): loopkeeper.testing's
            # eager mode would run the timer on a throwaway loop, where it never fires.
            runner = loopkeeper.get_runner()
            if job.handoff is not None and runner not in state.hand_off_runners:
                state.hand_off_runners.add(runner)
                runner._add_hand_off(_hand_off)  # loopkeeper's own adapter
            if job.run_after is not None and job.run_after > now:
                if job.handoff is not None:
                    with state.lock:
                        state.deferred.add(job)
                runner.submit(_arm_timer, job, name=f"{job.name} (run_after)")
            else:
                _admit(job)
        except BaseException:
            with state.lock:
                state.results[self.alias].pop(result.id, None)
                state.deferred.discard(job)
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


def _read_options(alias: str, options: object) -> tuple[int, str | None, list[str]]:
    """``(max_results, handoff, errors)`` from a backend's ``OPTIONS``.  Never raises."""
    if not isinstance(options, Mapping):
        return (
            DEFAULT_MAX_RESULTS,
            None,
            [f"OPTIONS: expected a dict, got {type(options).__name__}"],
        )
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
    handoff = options.get("HANDOFF")
    if handoff is not None:
        problem = _handoff_problem(alias, handoff)
        if problem is not None:
            errors.append(f"OPTIONS['HANDOFF']: {problem}")
            handoff = None
    return max_results, handoff, errors


def _handoff_problem(alias: str, handoff: object) -> str | None:
    """Why ``handoff`` cannot be this alias's ``HANDOFF``, or None if it can."""
    configured = getattr(settings, "TASKS", {})
    others = sorted(name for name in configured if name != alias)
    allowed = f"another alias of TASKS ({', '.join(map(repr, others)) or 'there is none'})"
    if not isinstance(handoff, str):
        return f"expected {allowed}, got {type(handoff).__name__} {handoff!r}"
    if handoff == alias:
        return f"expected {allowed}, got {handoff!r}, this backend's own alias"
    if handoff not in configured:
        return f"expected {allowed}, got {handoff!r}, which TASKS does not have"
    backend = str(configured[handoff].get("BACKEND", ""))
    if backend.rsplit(".", 1)[-1] in {"LoopkeeperBackend", "ImmediateBackend", "DummyBackend"}:
        return (
            f"{handoff!r} is a {backend.rsplit('.', 1)[-1]}, which keeps nothing past "
            "this process: name a durable backend (django-tasks-db's DatabaseBackend, "
            "django-tasks-rq's RQBackend)"
        )
    return None


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
    try:
        _submit(runner, job)
    except BaseException:
        _release_slot()  # ours, and the next job's turn if one queued meanwhile
        raise


def _submit(runner: loopkeeper.Runner, job: _Job) -> None:
    """Any thread; the job already counts in ``in_flight`` (the caller frees its slot if
    this raises)."""
    func: Callable[[_Job], Any] = (
        _run_async if inspect.iscoroutinefunction(job.result.task.func) else _run_sync
    )
    state = _current()
    if job.handoff is not None:
        with state.lock:
            state.in_runner.add(job)
    try:
        handle = runner.submit(func, job, name=job.name)
    except BaseException:
        with state.lock:
            state.in_runner.discard(job)
        raise
    job.handle = handle
    handle.add_done_callback(functools.partial(_on_done, job))


def _on_done(job: _Job, handle: loopkeeper.TaskHandle[Any]) -> None:
    """The runner's done callback (loop thread): free the slot, start the next jobs."""
    if job.handoff is not None:
        state = _current()
        with state.lock:
            state.in_runner.discard(job)
    if handle.cancelled() or handle.state is loopkeeper.TaskState.ABANDONED:
        _fail_unstarted(job, handle)
    _release_slot()


def _release_slot() -> None:
    """Any thread.  Free one slot; give each free slot to the next job waiting.  A job
    the runner refuses (it closed, at shutdown) frees its slot for the next one, in this
    loop: never by recursion, which thousands of waiting jobs would exhaust."""
    runner = loopkeeper.get_runner()
    limit = runner.max_concurrency
    state = _current()
    freed = 1
    while True:
        with state.lock:
            state.in_flight -= freed
            if not state.waiting or (limit is not None and state.in_flight >= limit):
                return
            job = heapq.heappop(state.waiting)[2]
            state.in_flight += 1
        freed = 0
        try:  # outside the lock: submit may run callbacks
            _submit(runner, job)
        except loopkeeper.LoopkeeperError as exc:  # closed (shutdown) or overloaded
            freed = 1
            _refused(job, exc)


def _refused(job: _Job, exc: loopkeeper.LoopkeeperError) -> None:
    """The runner refused a job that waited (for a slot, or for its ``run_after``): it
    fails, unless the runner closed and a ``HANDOFF`` is to take it at the drain's end."""
    if job.handoff is not None and isinstance(exc, loopkeeper.RunnerClosedError):
        state = _current()
        with state.lock:
            if not job.gone:
                state.refused.append(job)
                return
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
    """Loop thread: ``job``'s ``run_after`` has come (unless a hand-off took it)."""
    if job.handoff is not None:
        state = _current()
        with state.lock:
            if job.gone:
                return
            state.deferred.discard(job)
    try:
        _admit(job)
    except loopkeeper.LoopkeeperError as exc:
        _refused(job, exc)


# -- running a job ----------------------------------------------------------------------


def _start(job: _Job) -> TaskResult[Any, Any] | None:
    """Mark the job RUNNING; return the snapshot the task and ``task_started`` see.  None:
    a hand-off took it (it runs elsewhere, not here)."""
    state = _current()
    now = timezone.now()
    with state.lock:
        if job.gone:
            return None
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
        if only_if_ready and (job.status != TaskResultStatus.READY or job.gone):
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
        if snapshot is None:
            return
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
        if snapshot is None:
            return
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


# -- the hand-off at shutdown (OPTIONS["HANDOFF"]) ---------------------------------------


def _hand_off() -> Iterator[HandedOff | HandOffFailure]:
    """The runner's shutdown thread, once its drain has done what it could: enqueue every
    job with a ``HANDOFF`` that has not started (and each ``@idempotent`` one running) on
    that backend, and say what became of each.

    Each job is claimed (``gone``) under the lock first, so it can no longer start here;
    then given away, one ``enqueue`` each, outside any lock (the durable backend's own
    code and signals run).  A job the durable backend refuses is never half-queued: it
    fails here (``_keep``), and the shutdown abandons its task if it has one.  If the
    shutdown is interrupted half way, the jobs not yet given fail the same way."""
    state = _current()
    with state.lock:
        queued = [job for _, _, job in sorted(state.waiting) if job.handoff is not None]
        state.waiting = [entry for entry in state.waiting if entry[2].handoff is None]
        heapq.heapify(state.waiting)
        queued += state.refused
        queued += sorted(state.deferred, key=_due)
        state.refused, state.deferred = [], set()
        in_runner = sorted(
            (
                job
                for job in state.in_runner
                if job.handle is not None
                and not job.handle.done()
                and (
                    job.status == TaskResultStatus.READY
                    or (job.status == TaskResultStatus.RUNNING and _is_idempotent(job))
                )
            ),
            key=_task_id,
        )
        for job in (*queued, *in_runner):
            job.gone = True
    left = deque([(job, None) for job in queued] + [(job, job.handle) for job in in_runner])
    try:
        while left:
            job, handle = left[0]
            yield _give(job, handle)
            left.popleft()  # given: only now, so that an interruption in _give keeps it
    finally:
        for job, handle in left:  # interrupted: what was not given stays, as without HANDOFF
            _keep(job, handle, loopkeeper.RunnerClosedError(loopkeeper.get_runner().name))


def _due(job: _Job) -> datetime:
    assert job.run_after is not None
    return job.run_after


def _task_id(job: _Job) -> int:
    assert job.handle is not None
    return job.handle.id


def _is_idempotent(job: _Job) -> bool:
    return getattr(job.result.task.func, "__loopkeeper_idempotent__", False) is True


def _give(job: _Job, handle: loopkeeper.TaskHandle[Any] | None) -> HandedOff | HandOffFailure:
    """Enqueue ``job`` on its ``HANDOFF`` backend: the same task (path, priority, queue,
    ``run_after``) and arguments."""
    assert job.handoff is not None
    to = f"tasks backend {job.handoff!r}"
    task_id = None if handle is None else handle.id
    try:
        given = job.result.task.using(backend=job.handoff).enqueue(
            *job.result.args, **job.result.kwargs
        )
    except Exception as exc:  # noqa: BLE001  refused (InvalidTask, a database error): kept here
        _keep(job, handle, exc)
        return HandOffFailure(
            job.name, job.result.id, to, f"{type(exc).__qualname__}: {exc}", task_id
        )
    return HandedOff(job.name, job.result.id, to, str(given.id), task_id)


def _keep(job: _Job, handle: loopkeeper.TaskHandle[Any] | None, exc: BaseException) -> None:
    """A claimed job that was not given away.  It stays claimed, so it never starts
    here, and FAILED: in the runner, with ``TaskAbandonedError`` (the shutdown leaves its
    task uncancelled and abandons it, naming it in the report); queued in front of the
    runner, with ``exc``, what the durable backend raised."""
    if handle is not None:
        with _current().lock:
            if job.status != TaskResultStatus.READY:
                return  # an idempotent job running here: its own code settles it
        exc = loopkeeper.TaskAbandonedError(handle.id, handle.name)
    _settle_failed(job, exc)
