"""The per-process default runner: lazy creation, options, pid check, fork, exit hook.

Owns: the one default runner of this process (created by the first ``get_runner()``,
usually through ``loopkeeper.submit()``), the options ``configure()`` set for it, and
the interpreter-exit hook that drains every started runner.

Fork: ``os.register_at_fork`` forgets the parent's default runner in the child, and
every entry point compares the recorded pid with ``os.getpid()`` as well, because some
servers (uWSGI) fork without running at-fork hooks.  The lock is re-created in the
child: a parent thread may have held it at the moment of the fork.

Exit: the hook is registered with ``threading._register_atexit`` after importing
``concurrent.futures.thread``, so it runs before executors shut down (a plain ``atexit``
hook runs too late for ``asyncio.to_thread`` and ``sync_to_async``); plain ``atexit`` is
the fallback where the private function is missing.  It drains each started runner with
its ``shutdown_timeout``, never raises, and a ``KeyboardInterrupt`` during it (a second
Ctrl-C) abandons what is left at once.
"""

from __future__ import annotations

import atexit
import concurrent.futures.thread  # noqa: F401  its exit hook must be registered before ours
import os
import threading
from collections.abc import Callable, Coroutine
from typing import Any, Final, TypeVar, overload

from typing_extensions import TypeVarTuple, Unpack

from . import _logging
from ._handles import ShutdownReport, TaskHandle, cancel_handle
from ._runner import Runner, live_runners
from ._threads import reset_asgiref_in_child

__all__ = (
    "cancel",
    "configure",
    "default_options",
    "get_runner",
    "shutdown",
    "submit",
    "swap_default",
)

T = TypeVar("T")
PosArgsT = TypeVarTuple("PosArgsT")
# What loopkeeper.testing puts in submit()'s place: (func, args, name, timeout) -> handle.
SubmitWith = Callable[[Any, tuple[Any, ...], "str | None", "float | None"], TaskHandle[Any]]


class _Default:
    """The default runner's slot in one process."""

    def __init__(self) -> None:
        self.pid: Final = os.getpid()
        self.lock: Final = threading.Lock()  # guards the fields below (submit() reads them)
        self.runner: Runner | None = None
        self.options: dict[str, Any] = {}
        # loopkeeper.testing only (swap_default): takes submit()'s place for one test.
        self.submit_with: SubmitWith | None = None


_state = _Default()  # replaced, never mutated across processes


def _current() -> _Default:
    """This process's slot: a forked child (even one forked without at-fork hooks, as
    uWSGI does) gets a fresh one, with the options ``configure()`` set in the parent."""
    state = _state
    if state.pid != os.getpid():
        state = _reset_in_child()
    return state


def _reset_in_child() -> _Default:
    global _state  # noqa: PLW0603  the one piece of process-global state
    if _state.pid != os.getpid():  # a fork that ran no at-fork hook: do their work here
        reset_asgiref_in_child()
    options = _state.options
    _state = _Default()
    _state.options = dict(options)
    return _state


os.register_at_fork(after_in_child=_reset_in_child)  # returns a value; at-fork ignores it


def get_runner() -> Runner:
    """The default runner of this process, created on first use.  Any thread.

    It starts no thread until the first submit.  Once shut down it stays closed:
    ``submit()`` raises ``RunnerClosedError``.  In a forked child it is a new runner.
    """
    state = _current()
    runner = state.runner
    if runner is not None:
        return runner
    with state.lock:
        if state.runner is None:
            state.runner = Runner(**state.options)
        return state.runner


def configure(**options: Any) -> None:
    """Set the default runner's options (the keywords of ``Runner``).  Any thread.

    Allowed until the default runner starts its loop thread (the first submit), so call
    it at start-up, e.g. ``loopkeeper.configure(shutdown_timeout=25, max_pending=50_000)``.
    Options set earlier are kept unless given again.  A default runner that already
    exists (``get_runner()`` was called) is reconfigured in place: there is only ever one.

    Raises:
        TypeError, ValueError: an unknown option, or a bad value (nothing changed).
        RuntimeError: the default runner has already started or was shut down.
    """
    state = _current()
    with state.lock:
        runner = state.runner
        merged = {**state.options, **options}
        new = Runner(**merged)  # validates every option; starts nothing
        if runner is None:
            state.runner = new
        elif not runner._adopt_options(new):  # in place: whoever holds it sees the change
            raise RuntimeError(
                f"configure(): the default runner {runner.name!r} has already started (or was "
                "shut down), so its options are fixed; call configure() at start-up, before "
                "the first submit()"
            )
        state.options = merged


@overload
def submit(
    func: Callable[[Unpack[PosArgsT]], Coroutine[Any, Any, T]],
    /,
    *args: Unpack[PosArgsT],
    name: str | None = None,
    timeout: float | None = None,
) -> TaskHandle[T]: ...
@overload
def submit(
    func: Coroutine[Any, Any, T], /, *, name: str | None = None, timeout: float | None = None
) -> TaskHandle[T]: ...
@overload
def submit(
    func: Callable[[Unpack[PosArgsT]], T],
    /,
    *args: Unpack[PosArgsT],
    name: str | None = None,
    timeout: float | None = None,
) -> TaskHandle[T]: ...
def submit(  # type: ignore[misc]  # mypy cannot match overload 2 (a coroutine) to a TypeVarTuple
    func: Any, /, *args: Unpack[PosArgsT], name: str | None = None, timeout: float | None = None
) -> TaskHandle[Any]:
    """Run ``func`` on the process's default runner; return its handle at once.

    Any thread.  Same as ``get_runner().submit(...)``: see ``Runner.submit``::

        h = loopkeeper.submit(send_welcome_mail, user_id, name="welcome-mail", timeout=30)
    """
    state = _current()
    if state.submit_with is not None:  # a test's loopkeeper.testing.isolated_runner()
        return state.submit_with(func, args, name, timeout)
    runner = state.runner
    if runner is None:
        runner = get_runner()
    return runner.submit(func, *args, name=name, timeout=timeout)


def cancel(handle: TaskHandle[Any], msg: str | None = None) -> bool:
    """Cancel a task: same as ``handle.cancel(msg)``.  Any thread.

    Raises:
        TypeError: ``handle`` is not a ``TaskHandle``.
    """
    return cancel_handle(handle, msg)


def shutdown(timeout: float | None = None, *, cancel_remaining: bool = True) -> ShutdownReport:
    """Shut the default runner down now (normally done for you at exit).

    Same as ``get_runner().shutdown(...)``: see ``Runner.shutdown``.  ``timeout=None``
    uses the default runner's ``shutdown_timeout`` (10 s unless configured).
    """
    return get_runner().shutdown(timeout, cancel_remaining=cancel_remaining)


def default_options() -> dict[str, Any]:
    """For ``loopkeeper.testing``: a copy of the options ``configure()`` set.  Any thread."""
    return dict(_current().options)


def swap_default(
    runner: Runner | None, submit_with: SubmitWith | None
) -> tuple[Runner | None, SubmitWith | None]:
    """For ``loopkeeper.testing`` only: make ``runner`` this process's default runner and
    ``submit_with`` the function ``submit()`` calls instead of ``runner.submit``; return
    the two it replaced, to be put back the same way.  Any thread.
    """
    state = _current()
    with state.lock:
        previous = state.runner, state.submit_with
        state.runner, state.submit_with = runner, submit_with
    return previous


def _exit_hook() -> None:
    """Drain every started runner of this process.  Never raises."""
    interrupted = False
    for runner in live_runners():
        try:
            if interrupted:  # a second Ctrl-C came: abandon the rest at once
                runner._shutdown(0.0, False, frozenset())
            else:  # logs its own report
                runner._shutdown(runner.shutdown_timeout, True, frozenset())
        except (KeyboardInterrupt, SystemExit):  # a second Ctrl-C, a server's abort handler
            interrupted = True  # that runner's report was made and logged
        except BaseException as exc:  # noqa: BLE001  an exit hook must not raise
            _logging.log(_logging.ERROR, "exit_drain_failed", runner=runner.name, exc_info=exc)


def _register_exit_hook() -> None:
    register = getattr(threading, "_register_atexit", None)
    if register is None:  # pragma: no cover  (every CPython 3.10-3.13 has it)
        atexit.register(_exit_hook)
    else:
        register(_exit_hook)


_register_exit_hook()
