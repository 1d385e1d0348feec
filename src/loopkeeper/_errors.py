"""The exception tree: every error loopkeeper raises on its own account.

::

    LoopkeeperError
    ├── RunnerClosedError       submit() after shutdown began
    ├── OverloadedError         submit() while max_pending tasks are unfinished
    ├── TaskTimeoutError        a task's own ``timeout=`` expired (also a TimeoutError)
    └── TaskAbandonedError      result of a task that shutdown had to leave behind

Each error pickles and copies with its fields (``__reduce__``), so it survives a trip
through ``multiprocessing`` or a test runner's worker.

Bad input is not in this tree: it gets ``TypeError`` or ``ValueError`` from
``_validation``, as the standard library does.  A cancelled task's ``result()`` raises
``concurrent.futures.CancelledError`` and ``await handle`` raises
``asyncio.CancelledError``, as cancelled futures do.  Waiting past a caller's own
``timeout`` raises the builtin ``TimeoutError``.
"""

from __future__ import annotations

__all__ = (
    "LoopkeeperError",
    "OverloadedError",
    "RunnerClosedError",
    "TaskAbandonedError",
    "TaskTimeoutError",
)


class LoopkeeperError(Exception):
    """Base class of every error loopkeeper raises on its own account."""


class RunnerClosedError(LoopkeeperError):
    """Raised by ``submit()`` once the runner's shutdown has begun.

    Nothing was accepted: the work was not scheduled, and a coroutine object passed in
    was closed.
    """

    def __init__(self, runner_name: str) -> None:
        self.runner_name = runner_name
        super().__init__(
            f"runner {runner_name!r} is shut down or shutting down and accepts no new tasks; "
            "submit before shutdown(), or create a new Runner"
        )

    def __reduce__(self) -> tuple[type[RunnerClosedError], tuple[str]]:
        return type(self), (self.runner_name,)


class OverloadedError(LoopkeeperError):
    """Raised by ``submit()`` when ``max_pending`` tasks are already accepted and unfinished.

    Nothing was accepted. Retry later, shed the work, or raise the limit.
    """

    def __init__(self, runner_name: str, max_pending: int) -> None:
        self.runner_name = runner_name
        self.max_pending = max_pending
        super().__init__(
            f"runner {runner_name!r} already has max_pending={max_pending} unfinished tasks "
            "and refused this one; retry later, shed load, or raise max_pending"
        )

    def __reduce__(self) -> tuple[type[OverloadedError], tuple[str, int]]:
        return type(self), (self.runner_name, self.max_pending)


class TaskTimeoutError(LoopkeeperError, TimeoutError):
    """The task's own ``timeout=`` expired: it was cancelled and is ``FAILED``.

    Raised by ``result()`` and ``await handle``, returned by ``exception()``.  It is a
    ``TimeoutError`` too, so ``except TimeoutError`` catches it.
    """

    def __init__(self, task_id: int, task_name: str, timeout: float) -> None:
        self.task_id = task_id
        self.task_name = task_name
        self.timeout = timeout
        super().__init__(
            f"task {task_id} {task_name!r} did not finish within its timeout={timeout}s"
        )

    def __reduce__(self) -> tuple[type[TaskTimeoutError], tuple[int, str, float]]:
        return type(self), (self.task_id, self.task_name, self.timeout)


class TaskAbandonedError(LoopkeeperError):
    """The task was still running when shutdown's deadline passed and was left behind.

    Raised by ``result()``, ``exception()`` and ``await handle`` of an ``ABANDONED`` task.
    Its code may still be running; its outcome will never be reported.
    """

    def __init__(self, task_id: int, task_name: str) -> None:
        self.task_id = task_id
        self.task_name = task_name
        super().__init__(
            f"task {task_id} {task_name!r} was abandoned by shutdown: it had not finished "
            "by the deadline, and its outcome will never be known; raise shutdown_timeout "
            "or make the task honour cancellation"
        )

    def __reduce__(self) -> tuple[type[TaskAbandonedError], tuple[int, str]]:
        return type(self), (self.task_id, self.task_name)
