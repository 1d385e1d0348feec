"""Tracked worker threads, cancellation tokens, and check_cancelled().

Owns: the pool's threads, named ``<runner name>-worker-N``; the queue of jobs for them;
a record of every job running now (thread, token, start time); and the adapter that
makes the pool the loop's default executor.

Every job carries a ``Token``: the task that owns it (``CURRENT_TASK`` when the job was
submitted) and a flag of its own.  ``check_cancelled()`` in the thread raises
``asyncio.CancelledError`` once either is set: the owning task was cancelled (by
``cancel()``, its timeout or shutdown), or the one await waiting for this job was.  The
token lives in a thread-local for the job's duration, and ``CURRENT_TASK`` is a
contextvar, so a thread started from a copied context (``asyncio.to_thread``, a
grandchild thread) still knows its task.  Python cannot stop a thread: cancellation is
cooperative, and what does not cooperate is *visible* (``Runner.threads()``, the
shutdown report).

Threads: any thread may submit; workers take jobs in FIFO order.  At most
``max_threads`` workers exist; an idle worker exits after ``idle_timeout``, except the
last one, which stays for the life of the pool, so that work submitted while the
interpreter shuts down (when Python 3.12.0-3.12.2 refuse to start threads) has a thread
to run on.  ``close()`` lets queued jobs finish, then idle workers exit; a worker stuck
in a job is left alone (a daemon thread; shutdown reports it).

This is deliberately not a ``ThreadPoolExecutor``: that refuses new work once CPython's
executor exit hook has run, which is exactly when the exit drain needs it.  The loop's
default executor is a ``ThreadPoolExecutor`` subclass only because
``loop.set_default_executor`` demands one (3.11+): ``TrackedExecutor`` overrides
``submit`` and ``shutdown`` and never reaches the base class's machinery.

After fork, the child never uses a parent's pool (its runner refuses to work there).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import itertools
import os
import queue
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast, final

from typing_extensions import TypeVarTuple, Unpack

from . import _logging
from ._handles import ThreadInfo
from ._hooks import Hooks, thread_exiting, within_thread_job
from ._validation import wait_seconds

if TYPE_CHECKING:
    from ._handles import TaskHandle

__all__ = (
    "ACK_TIMEOUT",
    "CARRIED",
    "CURRENT_TASK",
    "THREADS_REFUSED_AT_EXIT",
    "Outcome",
    "TaskExecutor",
    "Token",
    "TrackedExecutor",
    "WorkerPool",
    "call_in",
    "check_cancelled",
    "prestart_asgiref_thread",
    "reset_asgiref_in_child",
    "run_in_thread",
)

T = TypeVar("T")
PosArgsT = TypeVarTuple("PosArgsT")

ACK_TIMEOUT: Final = 1.0  # seconds run_in_thread waits for a cancelled thread to return

# CPython 3.12.0-3.12.2 refuse to start any thread once the interpreter begins to exit
# (gh-113964, fixed in 3.12.3): a thread that the exit drain may need must exist before.
THREADS_REFUSED_AT_EXIT: Final = (3, 12, 0) <= sys.version_info[:3] <= (3, 12, 2)

# The task a piece of code runs for.  Every task and job runs in a fresh Context, so
# setting it there makes it task-local; copied contexts carry it into other threads.
CURRENT_TASK: contextvars.ContextVar[TaskHandle[Any] | None] = contextvars.ContextVar(
    "loopkeeper_current_task", default=None
)

# What the task's hooks carried (``Hooks.capture()``'s function), set in the task's
# context: it runs again at the start of each job of the task, because some context-local
# storage (asgiref's ``Local``, which holds Django's language and time zone) is tagged with
# the thread that set it, so a copied context alone does not carry it into a thread.
CARRIED: contextvars.ContextVar[Callable[[], object] | None] = contextvars.ContextVar(
    "loopkeeper_carried", default=None
)

_local = threading.local()  # .token: the Token of the job this worker runs now


class Token:
    """Tells one job's thread to stop: its own flag, or its owning task's cancellation."""

    __slots__ = ("cancelled", "owner")

    def __init__(self, owner: TaskHandle[Any] | None) -> None:
        self.owner = owner
        self.cancelled = False  # set by any thread, read by the job's thread

    def is_set(self) -> bool:
        owner = self.owner
        return self.cancelled or (owner is not None and owner._stop_requested())


def check_cancelled() -> None:
    """Raise ``asyncio.CancelledError`` if the task that owns this thread was cancelled.

    Call it now and then from blocking code that a task runs in a thread (a sync task,
    ``run_in_thread``, ``asyncio.to_thread``, ``loop.run_in_executor(None, ...)``,
    ``sync_to_async(thread_sensitive=False)``, or ``anyio.to_thread.run_sync``, whose own
    cancel scopes it honours too).  The exception is a ``BaseException``, so an
    ``except Exception`` in your code does not swallow it; let it propagate.  Anywhere
    else (a thread loopkeeper does not know, the main thread) it does nothing, so
    library code may call it unconditionally.  It is cheap: a few attribute reads.

    Raises:
        asyncio.CancelledError: the owning task (or this job's own await) was cancelled.
    """
    token: Token | None = getattr(_local, "token", None)
    if token is not None and token.is_set():
        raise _cancelled(token.owner)
    owner = CURRENT_TASK.get()
    if owner is not None and owner._stop_requested():
        raise _cancelled(owner)
    if token is None and "anyio" in sys.modules:
        import anyio.from_thread  # noqa: PLC0415  only where anyio is in use already

        with contextlib.suppress(RuntimeError):  # not an anyio worker thread either
            anyio.from_thread.check_cancelled()


def _cancelled(owner: TaskHandle[Any] | None) -> asyncio.CancelledError:
    if owner is None:
        return asyncio.CancelledError("loopkeeper: the await for this thread was cancelled")
    return asyncio.CancelledError(
        f"loopkeeper: task {owner.id} {owner.name!r}, which owns this thread, was cancelled"
    )


class _Running:
    """One job running now.  Fields are written under the pool lock."""

    __slots__ = ("abandoned", "name", "since", "token")

    def __init__(self, name: str, token: Token) -> None:
        self.name = name
        self.token = token
        self.since = time.monotonic()
        self.abandoned = False  # run_in_thread stopped waiting for it

    def info(self, now: float) -> ThreadInfo:
        owner = self.token.owner
        state = (
            "abandoned" if self.abandoned else "cancelling" if self.token.is_set() else ("running")
        )
        return ThreadInfo(
            name=self.name,
            task_id=owner.id if owner is not None else None,
            task_name=owner.name if owner is not None else None,
            age=now - self.since,
            state=state,
        )


_STOP: Final = None  # sentinel: the worker that takes it exits

Job = Callable[[], None]


# Signals sent to the process that a thread of ours should never receive: POSIX delivers
# such a signal to any thread that does not block it, and a server's C-level handler (uWSGI
# installs them for SIGINT, SIGTERM, SIGHUP in its workers, and calls exit() from them) then
# runs on that thread: uWSGI's exit stage would drain loopkeeper from its own loop thread.
# Python's own handlers run on the main thread whatever thread the signal reached, so
# blocking the signals here changes nothing for Python code.
_PROCESS_SIGNALS: Final = frozenset(
    getattr(signal, name)
    for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGABRT")
    if hasattr(signal, name)
)


def leave_signals_to_the_main_thread() -> None:
    """Block the process-directed signals in the calling thread (one of loopkeeper's own,
    at its start), so the kernel delivers them to the main thread.  No-op where
    ``pthread_sigmask`` does not exist (Windows)."""
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, _PROCESS_SIGNALS)


class WorkerPool:
    """A bounded, reused pool of daemon threads running zero-argument jobs, tracked."""

    def __init__(
        self,
        prefix: str,
        max_threads: int,
        idle_timeout: float = 60.0,
        hooks: Hooks | None = None,
    ) -> None:
        self._prefix = prefix
        self._hooks = hooks  # around each job, and as a worker ends
        self._max = max_threads
        self._idle_timeout = idle_timeout
        self._queue: queue.SimpleQueue[tuple[Job, Token] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()  # guards every field below
        self._changed = threading.Condition(self._lock)  # notified when a job ends
        self._workers = 0  # live worker threads
        self._idle = 0  # workers waiting for a job
        self._queued = 0  # jobs put and not yet taken
        # The job each busy worker runs, keyed by the worker's Thread (not its ident,
        # which a later thread may reuse).
        self._running: dict[threading.Thread, _Running] = {}
        self._closed = False
        self._numbers = itertools.count(1)

    @property
    def busy(self) -> int:
        """Workers running a job now."""
        return len(self._running)

    def submit(self, job: Job, token: Token) -> None:
        """Queue ``job``, starting a worker if none is free.  Any thread.

        ``job`` reports its own outcome and must not raise.

        Raises:
            RuntimeError: the pool is closed, or no worker exists and none can be started.
        """
        with self._lock:
            if self._closed:
                raise RuntimeError(f"worker pool {self._prefix!r} is closed")
            self._queued += 1
            start = self._queued > self._idle and self._workers < self._max
            if start:
                self._workers += 1
        if start:
            try:
                self._start_worker()
            except RuntimeError:  # e.g. "can't create new thread at interpreter shutdown"
                with self._lock:
                    self._workers -= 1
                    if self._workers == 0:
                        self._queued -= 1
                        raise
        self._queue.put((job, token))

    def prestart(self) -> None:
        """Start the one worker that never times out, now, while threads can start."""
        with self._lock:
            if self._workers or self._closed:
                return
            self._workers += 1
        self._start_worker()

    def close(self) -> None:
        """Let queued jobs finish, then stop every worker as it becomes idle.  Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            workers = self._workers
        for _ in range(workers):
            self._queue.put(_STOP)

    def infos(self, exempt: frozenset[int] = frozenset()) -> tuple[ThreadInfo, ...]:
        """The jobs running now, oldest first, except those of tasks in ``exempt``."""
        now = time.monotonic()
        with self._lock:
            running = sorted(self._running.values(), key=lambda r: r.since)
        return tuple(r.info(now) for r in running if _owner_id(r.token) not in exempt)

    def stack_of(self, owner: TaskHandle[Any]) -> str | None:
        """The stack of the thread running a job of ``owner`` now (innermost frame last),
        or None if none does.  Read while the job holds the thread, so its ident is live."""
        frames = sys._current_frames()
        with self._lock:
            idents = [t.ident for t, r in self._running.items() if r.token.owner is owner]
        for ident in idents:  # by ident, as _current_frames() keys them: live while listed
            frame = frames.get(ident or 0)
            if frame is not None:
                return "".join(traceback.format_stack(frame))
        return None

    def cancel_all(self, exempt: frozenset[int] = frozenset()) -> None:
        """Set the token of every running job (but those of tasks in ``exempt``)."""
        with self._lock:
            for record in self._running.values():
                if _owner_id(record.token) not in exempt:
                    record.token.cancelled = True

    def abandon(self, token: Token) -> ThreadInfo | None:
        """Mark the job holding ``token`` abandoned; its info, or None if it has ended."""
        with self._lock:
            for record in self._running.values():
                if record.token is token:
                    record.abandoned = True
                    return record.info(time.monotonic())
        return None

    def wait_quiet(self, deadline: float, exempt: frozenset[int] = frozenset()) -> bool:
        """Wait until no job runs but those of tasks in ``exempt``, or the monotonic
        ``deadline`` passes.  True if quiet."""

        def quiet() -> bool:
            return all(_owner_id(r.token) in exempt for r in self._running.values())

        with self._changed:
            while not quiet():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(wait_seconds(remaining))
            return True

    def _start_worker(self) -> None:
        name = f"{self._prefix}-worker-{next(self._numbers)}"
        threading.Thread(target=self._work, name=name, daemon=True).start()

    def _work(self) -> None:
        leave_signals_to_the_main_thread()
        try:
            self._work_until_stopped()
        finally:
            thread_exiting(self._hooks)

    def _work_until_stopped(self) -> None:
        me = threading.current_thread()
        name = me.name
        hooks = self._hooks
        while True:
            with self._lock:
                self._idle += 1
            try:
                item = self._queue.get(timeout=self._idle_timeout)
            except queue.Empty:
                with self._lock:
                    self._idle -= 1
                    if self._workers > 1 and self._queued == 0 and not self._closed:
                        self._workers -= 1
                        return
                continue
            with self._lock:
                self._idle -= 1
                if item is _STOP:
                    self._workers -= 1
                    return
                self._queued -= 1
                job, token = item
                self._running[me] = _Running(name, token)
            _local.token = token
            try:
                if hooks is None:
                    job()
                else:
                    with within_thread_job(hooks):
                        job()
            except BaseException as exc:  # noqa: BLE001  jobs should not raise; keep the worker
                _logging.log(_logging.ERROR, "worker_job_failed", thread=name, exc_info=exc)
            finally:
                _local.token = None
                with self._changed:
                    record = self._running.pop(me)  # dropped after the lock, like the job
                    self._changed.notify_all()
                # An idle worker must not keep its last job (and so the task's arguments
                # and result) alive while it waits: the last worker waits forever.
                del item, job, token, record


def _owner_id(token: Token) -> int | None:
    return token.owner.id if token.owner is not None else None


class _TrackedFuture(concurrent.futures.Future[Any]):
    """A job's future whose ``cancel()`` also tells its thread to stop."""

    def __init__(self, token: Token) -> None:
        super().__init__()
        self._token = token

    def cancel(self) -> bool:
        self._token.cancelled = True
        return super().cancel()


class TrackedExecutor(concurrent.futures.ThreadPoolExecutor):
    """The loop's default executor: ``run_in_executor(None, ...)`` on the tracked pool.

    Each job is owned by the task that submitted it (``CURRENT_TASK`` at submit time:
    ``run_in_executor`` copies no context), runs in a fresh context with that owner set,
    and is told to stop when its owner is cancelled or its future is cancelled.
    """

    def __init__(self, pool: WorkerPool) -> None:
        super().__init__(max_workers=1)  # starts no thread; only submit() is ever used
        self._pool = pool

    def submit(
        self, fn: Callable[..., T], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[T]:
        context = contextvars.copy_context()  # the submitting task's, with its owner set
        token = Token(context.get(CURRENT_TASK))
        future = _TrackedFuture(token)

        def job() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                result = context.run(fn, *args, **kwargs)
            except BaseException as exc:  # noqa: BLE001  delivered to the awaiting task
                future.set_exception(exc)
            else:
                future.set_result(result)

        self._pool.submit(job, token)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """The runner owns the pool's lifetime: the loop's close changes nothing."""


_Call = tuple["concurrent.futures.Future[Any]", Callable[..., Any], tuple[Any, ...], dict[str, Any]]


@final
class TaskExecutor(concurrent.futures.Executor):
    """Calls that run one at a time, in order, on one tracked thread owned by the task.

    Create it inside a loopkeeper task.  Its thread comes from the runner's pool at the
    first ``submit()`` and stays with this executor until ``shutdown()``, so code with
    thread affinity sees one thread for the whole task: Django's ORM keeps its
    connection (and a transaction) across calls.  The Django app gives every task one,
    through asgiref's ``ThreadSensitiveContext``, so that ``sync_to_async(func)`` in a
    task runs on a thread of that task instead of asgiref's one process-wide thread::

        executor = loopkeeper.TaskExecutor()
        try:
            await loop.run_in_executor(executor, save_order, order)
        finally:
            executor.shutdown(wait=False)

    The thread is listed by ``Runner.threads()`` while the executor holds it (idle
    between calls included), and ``check_cancelled()`` there raises once the task is
    cancelled.  Any thread may submit.  Calls run in the thread's own context, as with
    ``ThreadPoolExecutor`` (asgiref's ``sync_to_async`` carries the caller's).

    Raises:
        RuntimeError: created outside a loopkeeper task.
    """

    def __init__(self) -> None:
        owner = CURRENT_TASK.get()
        if owner is None:
            raise RuntimeError(
                "TaskExecutor() must be created inside a loopkeeper task, whose thread it "
                "holds; elsewhere use concurrent.futures.ThreadPoolExecutor(max_workers=1)"
            )
        self._owner = owner
        self._pool: WorkerPool = owner._owner._pool
        self._lock = threading.Lock()  # guards the two fields below
        self._started = False  # a session job was handed to the pool
        self._closed = False  # shutdown() was called
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()  # None: end
        self._ended = threading.Event()  # set when the session job returns
        self._thread: threading.Thread | None = None  # the session's thread, while it runs

    def submit(
        self, fn: Callable[..., T], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[T]:
        """Queue ``fn(*args, **kwargs)`` for the task's thread.  Any thread.

        Raises:
            RuntimeError: after ``shutdown()``, or the runner's pool is closed.
        """
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._lock:
            if self._closed:
                raise RuntimeError(
                    f"TaskExecutor of task {self._owner.id} {self._owner.name!r}: cannot "
                    "schedule new calls after shutdown()"
                )
            start = not self._started
            self._started = True
            self._calls.put((future, fn, args, kwargs))
        if start:
            self._pool.submit(self._session, Token(self._owner))
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Give the thread back once the queued calls ran.  Any thread; idempotent.

        Args:
            wait: block until the thread is given back (not when called on it).
            cancel_futures: cancel the calls that have not started.
        """
        with self._lock:
            first = not self._closed
            self._closed = True
            started = self._started
        if not started:
            return
        if cancel_futures:
            with contextlib.suppress(queue.Empty):
                while True:
                    item = self._calls.get_nowait()
                    if item is not None:
                        item[0].cancel()
        if first or cancel_futures:
            self._calls.put(None)
        if wait and threading.current_thread() is not self._thread:
            self._ended.wait()

    def _session(self) -> None:
        """Worker thread: run calls until shutdown() says to end."""
        self._thread = threading.current_thread()
        try:
            while (item := self._calls.get()) is not None:
                future, fn, args, kwargs = item
                del item
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(fn(*args, **kwargs))
                    except BaseException as exc:  # noqa: BLE001  delivered to the caller
                        future.set_exception(exc)
                # An idle thread must not keep its last call alive while it waits.
                del future, fn, args, kwargs
        finally:
            self._thread = None
            self._ended.set()


Outcome = tuple[Any, "BaseException | None"]  # (value, None) or (None, what it raised)


def call_in(
    context: contextvars.Context, func: Callable[..., Any], args: tuple[Any, ...]
) -> Outcome:
    """Worker thread.  ``func(*args)`` in ``context`` (a copy of the owning task's, taken
    where the job was submitted: the thread sees what the task set, and what its hooks
    carried is applied again first); never raises."""
    try:
        return (context.run(_carried_call, func, args), None)
    except BaseException as exc:  # noqa: BLE001  the caller re-raises it in the task
        return (None, exc)


def _carried_call(func: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    carry = CARRIED.get()
    if carry is not None:
        carry()
    return func(*args)


async def run_in_thread(func: Callable[[Unpack[PosArgsT]], T], /, *args: Unpack[PosArgsT]) -> T:
    """Run blocking ``func(*args)`` in a tracked child thread of the current task.

    Await it from a coroutine running as a loopkeeper task.  The thread is named
    ``<runner>-worker-N``, listed by ``Runner.threads()`` and owned by the task: when the
    task, or this await, is cancelled, ``check_cancelled()`` in the thread raises.  The
    await then waits up to ``ACK_TIMEOUT`` (1 s) for the thread to return; if it does not,
    the thread is abandoned visibly (logged as ``thread_abandoned``, listed with state
    ``abandoned`` until it ends, named by shutdown) and ``CancelledError`` propagates.
    This is a cancellation point; nothing else in it is.

    Raises:
        RuntimeError: not awaited inside a loopkeeper task on its runner's loop.
        BaseException: whatever ``func`` raised.
    """
    owner = CURRENT_TASK.get()
    if owner is None or not owner._owner._on_loop_thread():
        raise RuntimeError(
            "run_in_thread() must be awaited inside a loopkeeper task, on its runner's loop; "
            "elsewhere use asyncio.to_thread() or anyio.to_thread.run_sync()"
        )
    pool: WorkerPool = owner._owner._pool
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Outcome] = loop.create_future()
    token = Token(owner)
    context = contextvars.copy_context()

    def settle(outcome: Outcome) -> None:
        if not done.done():
            done.set_result(outcome)

    def job() -> None:
        outcome = call_in(context, func, args)
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody awaits it any more
            loop.call_soon_threadsafe(settle, outcome)

    pool.submit(job, token)
    try:
        value, exc = await asyncio.shield(done)
    except asyncio.CancelledError:
        token.cancelled = True
        with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(done), ACK_TIMEOUT)
        if not done.done():
            info = pool.abandon(token)
            if info is not None:
                _logging.log(
                    _logging.WARNING,
                    "thread_abandoned",
                    thread=info.name,
                    task_id=owner.id,
                    task_name=owner.name,
                    age=round(info.age, 3),
                )
        raise
    if exc is not None:
        raise exc
    return cast("T", value)


def reset_asgiref_in_child() -> None:
    """Forked child: give asgiref a fresh thread-sensitive executor if the parent's had a
    thread.  A no-op when asgiref is not imported.

    ``SyncToAsync.single_thread_executor`` is process-wide; a child inherits it with the
    parent's thread recorded but not running, so thread-sensitive ``sync_to_async`` would
    queue forever there.  Registered with ``os.register_at_fork``, and called by the
    default runner's own fork check for forks that run no at-fork hook (uWSGI).
    """
    sync = sys.modules.get("asgiref.sync")
    owner = getattr(sync, "SyncToAsync", None)
    executor = getattr(owner, "single_thread_executor", None)
    if isinstance(executor, concurrent.futures.ThreadPoolExecutor) and getattr(
        executor, "_threads", None
    ):
        owner.single_thread_executor = concurrent.futures.ThreadPoolExecutor(max_workers=1)  # type: ignore[union-attr]


os.register_at_fork(after_in_child=reset_asgiref_in_child)


def prestart_asgiref_thread() -> None:
    """Start asgiref's process-wide thread-sensitive thread now, if asgiref is imported.

    ``sync_to_async(func)`` (``thread_sensitive=True``, the form Django code uses) runs
    ``func`` on ``SyncToAsync.single_thread_executor``, whose one thread starts on first
    use.  Where that first use comes from a task of the exit drain, on a Python that
    refuses threads at exit, the task would fail; started now, the thread is there.  A
    no-op when asgiref is not imported or its executor is already shut down.

    Also a no-op in a uWSGI master (``uwsgi.worker_id()`` is 0 there): uWSGI forks its
    workers without Python's at-fork hooks, so a worker would inherit this thread as
    one that looks alive but does not exist there, and Python's exit would join it
    forever (``concurrent.futures`` joins every thread of its executors).  Each worker's
    own runner starts the thread in the worker instead.
    """
    if _in_uwsgi_master():
        return
    sync = sys.modules.get("asgiref.sync")
    executor = getattr(getattr(sync, "SyncToAsync", None), "single_thread_executor", None)
    if isinstance(executor, concurrent.futures.ThreadPoolExecutor):
        with contextlib.suppress(RuntimeError):  # shut down, or no thread can start
            executor.submit(int)  # a no-op job: the executor starts its thread for it


def _in_uwsgi_master() -> bool:
    """True in a uWSGI master (or a process uWSGI has not made a worker yet)."""
    uwsgi = sys.modules.get("uwsgi")  # present only inside uWSGI
    worker_id = getattr(uwsgi, "worker_id", None)
    return callable(worker_id) and worker_id() == 0
