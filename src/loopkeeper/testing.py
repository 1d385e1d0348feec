"""Test helpers: an isolated default runner per test, ``drain()``, and an eager mode.

Owns: nothing global of its own.  ``isolated_runner()`` puts a fresh runner in place of
the process's default runner for one test (through ``_default.swap_default``) and puts
the previous one back afterwards; it is the only code that swaps.

Also a pytest plugin, registered under the name ``loopkeeper`` (the ``pytest11`` entry
point), that is off until a test asks for it: it adds the ``loopkeeper_runner`` fixture
and the ``loopkeeper`` marker, and nothing else.  A test that does not request the
fixture sees no change.

Threads: ``isolated_runner()`` and ``drain()`` are for the test's own thread (any thread
but a runner's loop thread); ``adrain()`` for async tests on asyncio or trio.  In eager
mode the work runs in the thread that calls ``submit()``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import functools
import inspect
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, Final

import anyio.to_thread
import pytest

from ._carry import carried
from ._default import default_options, get_runner, swap_default
from ._handles import TaskHandle, TaskState
from ._hooks import capture
from ._runner import Runner
from ._threads import CURRENT_TASK
from ._validation import COROUTINE, check_name, check_optional_seconds, classify

__all__ = ("adrain", "drain", "isolated_runner", "loopkeeper_runner")

_DRAIN_TIMEOUT: Final = 10.0
_MARKER_OPTIONS: Final = frozenset({"eager", "expect_failed"})


def drain(timeout: float = _DRAIN_TIMEOUT, *, runner: Runner | None = None) -> None:
    """Wait until all work submitted so far is done.  Any thread but the loop thread.

    Waits for every unfinished task of ``runner`` (default: the default runner), then
    again for the tasks those submitted meanwhile, until none is left.  The task that
    calls ``drain()`` (from a worker thread) does not wait for itself.  It does not
    shut anything down: later submits are accepted as usual.

    Args:
        timeout: seconds to wait in all.
        runner: the runner to drain (default: ``loopkeeper.get_runner()``).

    Raises:
        TimeoutError: tasks were still unfinished after ``timeout`` seconds (named).
        RuntimeError: called on the runner's loop thread (use ``await adrain()``).
    """
    seconds = check_optional_seconds(timeout, param="timeout")
    target = get_runner() if runner is None else runner
    if target._on_loop_thread():
        raise RuntimeError(
            "drain() would block the loop thread that runs the work it waits for; "
            "use 'await loopkeeper.testing.adrain()' in async code"
        )
    me = CURRENT_TASK.get()
    deadline = None if seconds is None else time.monotonic() + seconds
    while True:
        with target._ledger.lock:
            waiting = [h for h in target._ledger.unfinished.values() if h is not me]
        if not waiting:
            return
        for handle in waiting:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not _wait_done(handle, left):
                unfinished = [h for h in waiting if not h.done()]
                names = ", ".join(f"{h.id} {h.name!r} ({h.state.name})" for h in unfinished)
                raise TimeoutError(
                    f"drain(): {len(unfinished)} task(s) of runner {target.name!r} still "
                    f"unfinished after {timeout}s: {names}"
                )


async def adrain(timeout: float = _DRAIN_TIMEOUT, *, runner: Runner | None = None) -> None:
    """``drain()`` for async code (asyncio or trio): waits without blocking the loop.

    Safe on the runner's own loop thread, inside a task (it does not wait for itself).
    Cancelling the await stops the wait, not the work.  Arguments and errors as
    ``drain()``.
    """
    check_optional_seconds(timeout, param="timeout")
    # A worker thread waits; the copied context carries CURRENT_TASK, so a task that
    # drains does not wait for itself.
    await anyio.to_thread.run_sync(
        functools.partial(drain, timeout, runner=runner), abandon_on_cancel=True
    )


def _wait_done(handle: TaskHandle[Any], timeout: float | None) -> bool:
    done = threading.Event()
    handle.add_done_callback(lambda _: done.set())
    return done.wait(timeout)


class _Session:
    """One isolated runner's test: the handles submitted through it, and eager mode."""

    def __init__(self, runner: Runner, eager: bool) -> None:
        self.runner = runner
        self.eager = eager
        self.lock = threading.Lock()  # guards handles; submit() may come from any thread
        self.handles: list[TaskHandle[Any]] = []

    def submit(
        self, func: Any, args: tuple[Any, ...], name: str | None, timeout: float | None
    ) -> TaskHandle[Any]:
        """Any thread: ``loopkeeper.submit()`` while this session's runner is the default."""
        if self.eager:
            handle = self._submit_eagerly(func, args, name, timeout)
        else:
            handle = self.runner.submit(func, *args, name=name, timeout=timeout)
        with self.lock:
            self.handles.append(handle)
        return handle

    def _submit_eagerly(
        self, func: Any, args: tuple[Any, ...], name: str | None, timeout: float | None
    ) -> TaskHandle[Any]:
        kind, task_name = classify(func, args)  # bad input: refused before anything runs
        if name is not None:
            check_name(name)
            task_name = name
        if timeout is not None:
            check_optional_seconds(timeout, param="timeout")
        # The handle is a real task of the runner, RUNNING while the work runs here: it
        # is counted, logged and refused (closed, overloaded) like any other.
        gate: concurrent.futures.Future[Any] = concurrent.futures.Future()
        try:
            # What loopkeeper.carry() named and the runner's hooks capture from the
            # submitter (Django: the language and time zone); the hooks' per-job database
            # hygiene is left out, see the Testing page.
            carry = capture(carried(), self.runner.hooks)
            handle = self.runner.submit(_await_gate(gate), name=task_name)
        except BaseException:
            if kind is COROUTINE:
                func.close()
            raise
        try:
            value = _run_inline(handle, func, args, carry, coroutine=kind is COROUTINE)
        except BaseException as exc:  # the task's outcome, as on the runner
            gate.set_exception(exc)
            if isinstance(exc, KeyboardInterrupt):  # Ctrl-C during the test: stop the test
                raise
        else:
            gate.set_result(value)
        if not self.runner._on_loop_thread():
            _wait_done(handle, None)  # the gate is set: this is one loop iteration
        return handle


async def _await_gate(gate: concurrent.futures.Future[Any]) -> Any:
    return await asyncio.wrap_future(gate)


def _run_inline(
    handle: TaskHandle[Any],
    func: Any,
    args: tuple[Any, ...],
    carry: Callable[[], object] | None,
    *,
    coroutine: bool,
) -> Any:
    """Run one task's work in this thread, in a fresh context; return its value.

    As on the runner: the context knows its task (``handle``: a ``drain()`` inside does
    not wait for itself, a carried span ends with it), ``carry`` (what was captured at
    submit) runs first in it, and an async function's coroutine, or a coroutine that a
    sync callable returns, is awaited.
    """
    context = contextvars.Context()
    context.run(CURRENT_TASK.set, handle)
    if carry is not None:
        context.run(carry)
    value = func if coroutine else context.run(func, *args)
    if inspect.iscoroutine(value):
        return _run_coroutine(context, value)
    return value


def _run_coroutine(context: contextvars.Context, coro: Coroutine[Any, Any, Any]) -> Any:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:  # an async test, or an eager task that submits: run it on a loop of its own
        return _run_in_helper_thread(context, coro)
    if "asgiref.sync" in sys.modules:
        # Django's way (its ImmediateBackend does the same): thread-sensitive
        # sync_to_async() calls inside come back to this thread, to its connection.
        from asgiref.sync import async_to_sync  # noqa: PLC0415  only where asgiref is in use

        return context.run(async_to_sync(_await), coro)
    return context.run(asyncio.run, coro)


async def _await(coro: Coroutine[Any, Any, Any]) -> Any:
    return await coro


def _run_in_helper_thread(context: contextvars.Context, coro: Coroutine[Any, Any, Any]) -> Any:
    outcome: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def run() -> None:
        try:
            outcome.set_result(context.run(asyncio.run, coro))
        except BaseException as exc:  # noqa: BLE001  handed to the submitting thread
            outcome.set_exception(exc)

    thread = threading.Thread(target=run, name="loopkeeper-eager")
    thread.start()
    thread.join()
    return outcome.result()


@contextlib.contextmanager
def isolated_runner(*, eager: bool = False, expect_failed: int = 0) -> Iterator[Runner]:
    """A fresh default runner for one test; shut down, and checked, at the end.

    Inside the ``with`` block, ``loopkeeper.submit()`` and ``loopkeeper.get_runner()`` use
    a new runner made with the options ``configure()`` set, started at once (so a
    ``configure()`` inside the test raises instead of changing later tests).  On exit it
    is shut down, the previous default runner is put back, and ``AssertionError`` is
    raised if the shutdown was not clean (work was cancelled or abandoned, or a thread
    was left running) or if the number of failed tasks is not ``expect_failed``.

    Args:
        eager: run each ``loopkeeper.submit()`` to its end inside the call, in the
            calling thread (see the Testing page for what it cannot promise).
        expect_failed: the exact number of tasks expected to end ``FAILED``.

    Raises:
        TypeError, ValueError: bad arguments.
        AssertionError: on exit, as above.

    Example, in a ``unittest.TestCase`` (``manage.py test``)::

        def setUp(self) -> None:
            self.runner = self.enterContext(isolated_runner())
    """
    if not isinstance(eager, bool):
        raise TypeError(f"eager: expected a bool, got {type(eager).__qualname__}")
    if type(expect_failed) is not int or expect_failed < 0:
        raise ValueError(f"expect_failed: expected an int >= 0, got {expect_failed!r}")
    runner = Runner(**default_options())
    runner.start()
    session = _Session(runner, eager)
    previous = swap_default(runner, session.submit)
    try:
        yield runner
    finally:
        try:
            report = runner.shutdown()
        finally:
            swap_default(*previous)
    problems = []
    if not report.clean:
        problems.append(f"the shutdown at the end of the test was not clean: {report!r}")
    failed = [h for h in session.handles if h.state is TaskState.FAILED]
    count = runner.stats().failed
    if count != expect_failed:
        named = ", ".join(f"{h.id} {h.name!r}: {h._exc!r}" for h in failed)
        problems.append(
            f"{count} task(s) failed, {expect_failed} expected"
            + (f" ({named})" if named else "")
            + "; mark expected failures with @pytest.mark.loopkeeper(expect_failed=N)"
        )
    if problems:
        raise AssertionError("; ".join(problems))


# -- the pytest plugin ---------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "loopkeeper(eager=False, expect_failed=0): options of the loopkeeper_runner fixture",
    )


@pytest.fixture
def loopkeeper_runner(request: pytest.FixtureRequest) -> Iterator[Runner]:
    """A fresh default runner for this test (``isolated_runner()``); shut down at the end.

    The test fails if a task failed unexpectedly, or if the shutdown had to cancel or
    abandon work.  ``@pytest.mark.loopkeeper(eager=True, expect_failed=1)`` sets the
    options of ``isolated_runner()``.
    """
    marker = request.node.get_closest_marker("loopkeeper")
    options: dict[str, Any] = {} if marker is None else dict(marker.kwargs)
    unknown = sorted(set(options) - _MARKER_OPTIONS)
    if marker is not None and (marker.args or unknown):
        got = ", ".join([*(repr(arg) for arg in marker.args), *unknown])
        raise TypeError(
            "@pytest.mark.loopkeeper takes the keyword arguments eager= and expect_failed= "
            f"only; got {got}"
        )
    with isolated_runner(**options) as runner:
        yield runner
