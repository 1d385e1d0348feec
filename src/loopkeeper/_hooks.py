"""Hooks: how a framework adapter takes part in every task of a runner.

Owns: the ``Hooks`` base class, whose methods a runner calls at fixed points of a task's
life, and the helpers that call them without letting an adapter's failure lose a task.

Who calls what, on which thread:

- ``capture()``: the submitting thread, once per ``submit()``, before anything is
  accepted.  What it returns runs first inside the task's own context on the loop
  thread; the threads the task uses inherit that context.
- ``around_task()``: the loop thread, inside the task's context, around each async
  task's coroutine.
- ``around_thread_job()``: a tracked worker thread, around each job it runs (a sync
  task, ``run_in_thread``, ``asyncio.to_thread``, ``run_in_executor(None, ...)``, a
  ``TaskExecutor`` session).
- ``thread_exiting()``: a tracked worker thread, as it ends.
- ``failure_hint(exc)``: the loop thread, when a task fails: a sentence added to its
  ``task_failed`` line.

No loopkeeper lock is held while any of them runs.  What a hook raises is logged
(``hook_failed``, with the hook's name) and never loses the task: a failed
``capture()`` refuses the submit (nothing accepted), a failed ``around_task()`` or
``capture()``'s function fails that task, and a failed ``around_thread_job()`` still
runs the job.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

from . import _logging

__all__ = ("Hooks", "capture", "failure_hint", "thread_exiting", "within_task", "within_thread_job")


class Hooks:
    """Extension points for framework adapters: subclass and override what you need.

    Pass an instance as ``Runner(hooks=...)`` or ``loopkeeper.configure(hooks=...)``.
    The Django app does so with ``loopkeeper.contrib.django.hygiene.DjangoHooks``
    (database hygiene, the submitter's language and time zone, thread-sensitive
    ``sync_to_async`` on a thread of the task)::

        class RequestIdHooks(loopkeeper.Hooks):
            def capture(self):
                request_id = REQUEST_ID.get()
                return lambda: REQUEST_ID.set(request_id)

    Every method has a default that does nothing.  No loopkeeper lock is held while a
    hook runs, so a hook may call loopkeeper.
    """

    def capture(self) -> Callable[[], object] | None:
        """Submitting thread, at each ``submit()``: what to carry into the task.

        Returns:
            A function that the task calls first, in its own fresh context on the loop
            thread (the threads it uses inherit that context), or None.
        """
        return None

    def around_task(self) -> contextlib.AbstractAsyncContextManager[object] | None:
        """Loop thread, inside the task's context: entered around each async task.

        Returns:
            An async context manager, or None.
        """
        return None

    def around_thread_job(self) -> contextlib.AbstractContextManager[object] | None:
        """Worker thread: entered around each job a tracked worker thread runs.

        Returns:
            A context manager, or None.
        """
        return None

    def thread_exiting(self) -> None:
        """Worker thread: a tracked worker thread is about to end."""

    def failure_hint(self, exc: BaseException) -> str | None:
        """Loop thread: a sentence saying what to do about ``exc``, which failed a task.

        Returns:
            The hint, added to the ``task_failed`` line as ``hint=``, or None.
        """
        return None


def capture(first: Hooks | None, second: Hooks | None) -> Callable[[], object] | None:
    """Submitting thread.  Both hooks' ``capture()``, as one function (or None)."""
    one = first.capture() if first is not None else None
    two = second.capture() if second is not None else None
    if one is None or two is None:
        return one or two

    def both() -> None:
        one()
        two()

    return both


def _hook_failed(hook: str, exc: BaseException) -> None:
    _logging.log(_logging.ERROR, "hook_failed", hook=hook, exc_info=exc)


async def within_task(hooks: Hooks, coro: Coroutine[Any, Any, Any]) -> Any:
    """Loop thread, in the task's context.  Await ``coro`` inside ``around_task()``.

    If the hook fails before ``coro`` started, ``coro`` is closed and the task fails
    with the hook's exception.
    """
    try:
        manager = hooks.around_task()
        if manager is not None:
            await manager.__aenter__()
    except BaseException:
        coro.close()
        raise
    if manager is None:
        return await coro
    try:
        value = await coro
    except BaseException as exc:
        if not await manager.__aexit__(type(exc), exc, exc.__traceback__):
            raise
        return None
    await manager.__aexit__(None, None, None)
    return value


@contextlib.contextmanager
def within_thread_job(hooks: Hooks) -> Iterator[None]:
    """Worker thread.  Run the job inside ``around_thread_job()``; a hook that fails is
    logged, and the job runs all the same (it must report its outcome)."""
    manager = None
    try:
        manager = hooks.around_thread_job()
        if manager is not None:
            manager.__enter__()
    except BaseException as exc:  # noqa: BLE001  the job must still run and report
        _hook_failed("around_thread_job", exc)
        manager = None
    try:
        yield
    finally:
        if manager is not None:
            try:
                manager.__exit__(None, None, None)
            except BaseException as exc:  # noqa: BLE001  the job has reported already
                _hook_failed("around_thread_job", exc)


def thread_exiting(hooks: Hooks | None) -> None:
    """Worker thread, as it ends.  Never raises."""
    if hooks is None:
        return
    try:
        hooks.thread_exiting()
    except BaseException as exc:  # noqa: BLE001  a thread's last act must not raise
        _hook_failed("thread_exiting", exc)


def failure_hint(hooks: Hooks | None, exc: BaseException) -> str | None:
    """Loop thread.  The hooks' hint for ``exc``, or None.  Never raises."""
    if hooks is None:
        return None
    try:
        return hooks.failure_hint(exc)
    except Exception as exc2:  # noqa: BLE001  a hint must not hide the failure it explains
        _hook_failed("failure_hint", exc2)
        return None
