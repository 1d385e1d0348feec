"""What Django does around a request, done around every task: ``DjangoHooks``.

Owns: the ``loopkeeper.Hooks`` the Django app installs on the default runner (through
``loopkeeper.configure(hooks=DjangoHooks())`` in its ``ready()``).  Pass one to your own
``Runner(hooks=DjangoHooks())`` for the same care there.

Which thread runs what:

- At ``submit()``, in the submitting thread: the active language and time zone are
  read, and activated again inside the task, before its code runs (the threads it uses
  inherit them).
- Around each job of a tracked worker thread (a sync task, ``run_in_thread``,
  ``asyncio.to_thread``, ``sync_to_async(thread_sensitive=False)``, and one task's whole
  thread-sensitive session below): ``close_old_connections()`` before and after, as
  Django does on ``request_started`` and ``request_finished``.  So ``CONN_MAX_AGE`` and
  ``CONN_HEALTH_CHECKS`` mean for a job what they mean for a request: with the default
  ``CONN_MAX_AGE = 0`` no connection outlives the job that opened it, and a connection
  the server dropped meanwhile is never reused.  A worker thread that ends closes its
  connections.
- Around each async task, on the loop thread: asgiref's ``ThreadSensitiveContext`` with
  a ``loopkeeper.TaskExecutor``, so ``sync_to_async(func)`` (thread-sensitive, the form
  Django uses) runs on a tracked thread of *this* task, the same one for all its calls,
  never on asgiref's one process-wide thread: one slow task's ORM call cannot stall
  another's, and a forked worker never waits for a thread its parent started.
- ORM on the loop thread itself keeps raising Django's ``SynchronousOnlyOperation`` (the
  loop must never block); its ``task_failed`` line says what to do instead.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Executor, Future
from typing import Any, Final

from asgiref.sync import SyncToAsync, ThreadSensitiveContext
from django.core.exceptions import SynchronousOnlyOperation
from django.db import close_old_connections, connections
from django.utils import timezone, translation

import loopkeeper

__all__ = ("DjangoHooks",)

# asgiref 3.13 takes the executor itself; older releases (3.12 is what Python 3.10 gets)
# read it from a shared mapping.  Their signatures and types differ: Any spans both.
_CONTEXT_TAKES_EXECUTOR: Final = (
    "executor" in inspect.signature(ThreadSensitiveContext.__init__).parameters
)
_Context: Final[Any] = ThreadSensitiveContext
_EXECUTORS: Final[Any] = SyncToAsync.context_to_thread_executor

SYNC_ONLY_HINT: Final = (
    "Django's ORM cannot run on loopkeeper's event loop thread: submit the sync function "
    "itself (loopkeeper runs it in a worker thread), or wrap the ORM call in "
    "asgiref.sync.sync_to_async() inside the async task"
)


class DjangoHooks(loopkeeper.Hooks):
    """Database hygiene, the submitter's language and time zone, and thread-sensitive
    ``sync_to_async`` on a thread of the task.  See the module docstring."""

    def capture(self) -> Callable[[], object]:
        # None after deactivate_all(), though django-stubs says str.
        language: str | None = translation.get_language()
        zone = timezone.get_current_timezone()

        def activate() -> None:
            if language is None:
                translation.deactivate_all()
            else:
                translation.activate(language)
            timezone.activate(zone)

        return activate

    def around_task(self) -> contextlib.AbstractAsyncContextManager[object]:
        return _thread_sensitive_on_task_thread()

    def around_thread_job(self) -> contextlib.AbstractContextManager[object]:
        return _like_a_request()

    def thread_exiting(self) -> None:
        connections.close_all()

    def failure_hint(self, exc: BaseException) -> str | None:
        return SYNC_ONLY_HINT if isinstance(exc, SynchronousOnlyOperation) else None


@contextlib.contextmanager
def _like_a_request() -> Iterator[None]:
    close_old_connections()
    try:
        yield
    finally:
        close_old_connections()


@contextlib.asynccontextmanager
async def _thread_sensitive_on_task_thread() -> AsyncIterator[None]:
    executor = loopkeeper.TaskExecutor()
    try:
        if _CONTEXT_TAKES_EXECUTOR:
            async with _Context(executor=executor):
                yield
        else:  # pragma: no cover  asgiref < 3.13 (tested on Python 3.10)
            async with _Context() as context:
                # asgiref shuts the mapped executor down on exit, from the loop thread:
                # hand it a view whose shutdown waits for nothing.
                _EXECUTORS[context] = _Unowned(executor)
                yield
    finally:
        executor.shutdown(wait=False)


class _Unowned(Executor):  # pragma: no cover  asgiref < 3.13
    """``executor`` without its shutdown: its owner shuts it down, not asgiref."""

    def __init__(self, executor: Executor) -> None:
        self._executor = executor

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        return self._executor.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Nothing: the task's scope gives the thread back when the task ends."""
