"""Security and hygiene: no secret leaks, nothing evaluated, no context leaks, and no task
can stop the loop thread.

A task's arguments and results may be passwords, tokens or personal data: they must
never reach a log line (stdlib or structlog), a report, a repr or an error message, on any
path a task can take.  A task runs in an empty context, whoever submits it.  And a task
that tries to take the loop down (``loop.stop()``, ``loop.close()``, a nested
``run_until_complete``, ``SystemExit`` from a loop callback, shutting the default executor
down) fails alone, or is refused, visibly, while the runner keeps serving everybody else.

Signal handlers and environment variables are covered in ``tests/test_process.py``
(``test_no_signal_handler_or_environment_variable_is_ever_changed``).
"""

from __future__ import annotations

import ast
import asyncio
import concurrent.futures
import contextlib
import contextvars
import functools
import gc
import logging
import threading
import uuid
import weakref
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Final

import pytest
import structlog
from structlog.testing import capture_logs

import loopkeeper
from loopkeeper import Runner, TaskHandle, TaskState

from ._support import Figures, Gate, capture_events

WAIT: Final = 10.0
SRC: Final = Path(__file__).resolve().parents[2] / "src" / "loopkeeper"


class _Secret:
    """A value whose every rendering is the secret marker (made at run time, so that it
    appears in no source line a traceback or a stack could show)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __repr__(self) -> str:
        return self.marker

    __str__ = __repr__


def _every_path(secret: _Secret) -> list[str]:
    """Run tasks holding ``secret`` (argument, keyword argument, result, local) along
    every path a task can take, with DEBUG logging on; return every repr, message and
    report text produced on the way."""
    texts: list[str] = []
    gate = Gate()

    async def echo(value: object, *, extra: object = None) -> object:
        await asyncio.sleep(0)
        return value

    def sync_echo(value: object) -> object:
        return value

    async def fails(value: object) -> None:
        await asyncio.sleep(0)
        raise ValueError("planned failure")

    async def parked(value: object) -> None:
        await gate.opened()

    async def stubborn(value: object) -> None:
        while not gate.is_open():
            with contextlib.suppress(asyncio.CancelledError):
                await gate.opened()

    async def blocks_the_loop(value: object) -> None:
        held = value  # a local holding the secret, on the stack the watchdog shows
        gate.wait(0.5)
        del held

    async def in_thread(value: object) -> object:
        return await loopkeeper.run_in_thread(sync_echo, value)

    def record(*values: object) -> None:
        texts.extend(repr(v) for v in values)
        texts.extend(str(v) for v in values)

    runner = Runner(name="hygiene", max_concurrency=8, watchdog_threshold=0.1)
    handles: list[TaskHandle[Any]] = [
        runner.submit(echo, secret, name="positional"),
        runner.submit(functools.partial(echo, extra=secret), secret, name="keyword"),
        runner.submit(echo(secret), name="coroutine-object"),
        runner.submit(sync_echo, secret, name="sync"),
        runner.submit(in_thread, secret, name="run-in-thread"),
        runner.submit(fails, secret, name="fails"),
        runner.submit(parked, secret, name="times-out", timeout=0.01),
    ]
    for handle in handles:
        with contextlib.suppress(BaseException):
            handle.exception(WAIT)
    running = runner.submit(parked, secret, name="cancelled-running")
    runner.submit(blocks_the_loop, secret, name="blocks-the-loop").result(WAIT)
    fillers = [runner.submit(parked, secret, name=f"filler-{i}") for i in range(6)]
    left_behind = runner.submit(stubborn, secret, name="abandoned")
    waiting = runner.submit(parked, secret, name="cancelled-pending")  # no slot left
    record(waiting, runner.threads(), runner.stats(), runner)
    waiting.cancel()
    running.cancel()
    for handle in (running, waiting):
        with contextlib.suppress(concurrent.futures.CancelledError):
            handle.exception(WAIT)

    def failing_callback(handle: TaskHandle[Any]) -> None:
        held = secret  # in the frame of the traceback that callback_failed logs
        raise RuntimeError(f"callback fault holding a {type(held).__name__}")

    handle = runner.submit(echo, secret, name="done-callback")
    handle.add_done_callback(failing_callback)
    handle.result(WAIT)
    report = runner.shutdown(timeout=0.05)
    gate.open()
    errors: list[BaseException] = []
    for handle in [*handles, running, waiting, left_behind, *fillers]:
        try:
            handle.result(0)
        except BaseException as exc:  # noqa: BLE001  its message is checked
            errors.append(exc)
    try:
        runner.submit(echo, secret, name="refused-closed")
    except loopkeeper.RunnerClosedError as exc:
        errors.append(exc)
    full = Runner(name="hygiene-full", max_pending=1)
    try:
        full.submit(parked, secret, name="fills")
        try:
            full.submit(echo, secret, name="refused-overloaded")
        except loopkeeper.OverloadedError as exc:
            errors.append(exc)
    finally:
        full.shutdown(timeout=0)
    record(report, *report.abandoned, *report.threads, runner.stats(), runner)
    record(*handles, running, waiting, left_behind, *errors)
    assert [i.name for i in report.abandoned] == ["abandoned"], report
    assert handles[0].result(0) is secret  # the secret did go through
    return texts


def test_secret_never_reaches_stdlib_logs_reports_reprs_or_errors(figures: Figures) -> None:
    """With DEBUG logging to the stdlib logger, a secret marker passed as argument,
    keyword argument, coroutine argument and result, and held in a local of a task that
    blocks the loop (whose stack the watchdog logs), appears in no log line (message,
    fields or traceback), no report, no repr and no error message, on every path:
    success, failure, timeout, cancellation while pending and while running,
    abandonment, refusal by a shut-down or a full runner, and a worker thread."""
    secret = _Secret(f"s3cr3t-{uuid.uuid4().hex}")
    with capture_events(logging.DEBUG) as tap:
        texts = _every_path(secret)
    figures.faults += 6
    logged = tap.texts() + [repr(vars(r)) for r in tap.records]
    events = {getattr(r, "event", "") for r in tap.records}
    assert {"task_failed", "task_timed_out", "task_cancelled", "loop_blocked"} <= events
    assert {"shutdown_incomplete", "task_submitted", "task_succeeded"} <= events
    leaks = [t for t in logged + texts if secret.marker in t]
    assert leaks == [], f"the secret leaked: {leaks[:3]}"


@pytest.mark.usefixtures("unconfigured_structlog")
def test_secret_never_reaches_structlog_events(figures: Figures) -> None:
    """The same paths with structlog configured: no event dict (fields, exception
    included) carries the secret."""
    secret = _Secret(f"s3cr3t-{uuid.uuid4().hex}")
    with capture_logs() as events:
        assert structlog.is_configured()
        texts = _every_path(secret)
    figures.faults += 6
    names = {e["event"] for e in events}
    assert {"task_failed", "task_timed_out", "task_cancelled", "shutdown_incomplete"} <= names
    leaks = [repr(e) for e in events if secret.marker in repr(e)]
    leaks += [t for t in texts if secret.marker in t]
    assert leaks == [], f"the secret leaked: {leaks[:3]}"


# -- nothing pickled, evaluated, or process-global touched ------------------------------------

FORBIDDEN_IMPORTS: Final = frozenset({"pickle", "marshal", "shelve", "dill", "cloudpickle"})
FORBIDDEN_CALLS: Final = frozenset({"eval", "exec", "compile", "__import__"})
FORBIDDEN_ATTRIBUTES: Final = frozenset(
    {"putenv", "unsetenv", "add_signal_handler", "set_wakeup_fd", "siginterrupt"}
)


def test_the_package_never_pickles_evaluates_or_touches_signals_or_environment() -> None:
    """No module of ``loopkeeper`` imports a serializer (pickle, marshal, ...), calls
    ``eval``/``exec``/``compile``/``__import__``, installs signal handlers or changes the
    environment (``signal.signal``, ``add_signal_handler``, ``os.environ[...] = ...``,
    ``putenv``): read from the source, so a new call anywhere fails this test."""
    found: list[str] = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            where = f"{path.name}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Import):
                found += [
                    f"{where} import {a.name}"
                    for a in node.names
                    if a.name.split(".")[0] in FORBIDDEN_IMPORTS
                ]
            elif isinstance(node, ast.ImportFrom) and node.module:
                if node.module.split(".")[0] in FORBIDDEN_IMPORTS:
                    found.append(f"{where} from {node.module} import")
            elif isinstance(node, ast.Call):
                func = node.func
                if isinstance(func, ast.Name) and func.id in FORBIDDEN_CALLS:
                    found.append(f"{where} {func.id}()")
                if isinstance(func, ast.Attribute) and (
                    func.attr in FORBIDDEN_ATTRIBUTES
                    or (
                        func.attr == "signal"
                        and isinstance(func.value, ast.Name)
                        and func.value.id == "signal"
                    )
                    or (
                        func.attr in {"setdefault", "update", "pop", "clear"}
                        and ast.unparse(func.value) == "os.environ"
                    )
                ):
                    found.append(f"{where} {ast.unparse(func)}()")
            elif isinstance(node, (ast.Assign, ast.AugAssign, ast.Delete)):
                targets = (
                    node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
                )
                found += [
                    f"{where} {ast.unparse(t)}"
                    for t in targets
                    if isinstance(t, ast.Subscript) and ast.unparse(t.value) == "os.environ"
                ]
    assert found == []


# -- a task cannot stop the loop thread -----------------------------------------------------


async def _stop_the_loop() -> str:
    try:
        asyncio.get_running_loop().stop()
    except RuntimeError as exc:
        return f"refused: {exc}"
    await asyncio.sleep(0.01)  # the loop thread has come back round by now
    return "stop() returned"


async def _close_the_loop() -> None:
    asyncio.get_running_loop().close()


async def _nest_run_until_complete() -> None:
    coro = asyncio.sleep(0)
    try:
        asyncio.get_running_loop().run_until_complete(coro)
    finally:
        coro.close()


async def _nest_asyncio_run() -> None:
    coro = asyncio.sleep(0)
    try:
        asyncio.run(coro)
    finally:
        coro.close()


def _raise_from_a_loop_callback(exc_type: type[BaseException]) -> Callable[[], Any]:
    async def schedule() -> str:
        def boom() -> None:
            raise exc_type("from a loop callback")

        asyncio.get_running_loop().call_soon(boom)
        await asyncio.sleep(0.01)
        return "scheduled"

    return schedule


async def _shut_the_default_executor_down() -> str:
    await asyncio.get_running_loop().shutdown_default_executor()
    return "executor shut down"


ATTEMPTS: Final = {
    "loop.stop()": _stop_the_loop,
    "loop.close()": _close_the_loop,
    "loop.run_until_complete()": _nest_run_until_complete,
    "asyncio.run()": _nest_asyncio_run,
    "SystemExit-from-a-loop-callback": _raise_from_a_loop_callback(SystemExit),
    "KeyboardInterrupt-from-a-loop-callback": _raise_from_a_loop_callback(KeyboardInterrupt),
    "loop.shutdown_default_executor()": _shut_the_default_executor_down,
}


def _visible(handle: TaskHandle[Any], tap: Any) -> bool:
    """The attempt failed the task, was refused inside it, or was logged loudly."""
    if handle.state is TaskState.FAILED and isinstance(handle.exception(0), RuntimeError):
        return True
    if handle.state is TaskState.SUCCEEDED and str(handle.result(0)).startswith("refused"):
        return True
    return any(r.levelno >= logging.WARNING for r in tap.records)


@pytest.mark.parametrize("attempt", list(ATTEMPTS))
def test_a_task_cannot_stop_the_loop_thread(attempt: str, figures: Figures) -> None:
    """A task that tries to take the loop down fails alone with a clear error, or the
    attempt is refused inside it, or it is logged as a warning or error: never silently
    accepted.  Either way the loop thread keeps serving: a task already in flight on it
    finishes, its timers fire, and new async, sync and ``to_thread`` work runs, until a
    clean shutdown."""
    gate = Gate()

    async def in_flight() -> str:
        await gate.opened()
        await asyncio.sleep(0.01)  # a timer, after the attempt
        return "sibling done"

    async def through_a_thread() -> str:
        return await asyncio.to_thread(lambda: "thread")

    runner = Runner(name="unstoppable")
    with capture_events() as tap:
        sibling = runner.submit(in_flight, name="sibling")
        handle = runner.submit(ATTEMPTS[attempt], name="attacker")
        with contextlib.suppress(BaseException):
            handle.exception(WAIT)
        gate.open()
        assert sibling.result(WAIT) == "sibling done"
        assert runner.submit(asyncio.sleep, 0.01, "async").result(WAIT) == "async"
        assert runner.submit(lambda: "sync").result(WAIT) == "sync"
        to_thread = runner.submit(through_a_thread, name="to-thread-after")
        to_thread.exception(WAIT)
        report = runner.shutdown(WAIT)
        visible = _visible(handle, tap)
    figures.faults += 1
    assert handle.done()
    assert to_thread.state is TaskState.SUCCEEDED, (
        f"after {attempt} in one task, asyncio.to_thread fails in every other task: "
        f"{to_thread.exception(0)!r}"
    )
    outcome = handle.result(0) if handle.state is TaskState.SUCCEEDED else handle.exception(0)
    assert visible, (
        f"{attempt} from a task was silently accepted: the task ended "
        f"{handle.state.name} ({outcome!r}) and nothing was logged"
    )
    assert report.clean, report


# -- an empty context, whoever submits ---------------------------------------------------------

_submitters_var: contextvars.ContextVar[str] = contextvars.ContextVar("submitters_var")


async def _context_names() -> list[str]:
    return sorted(var.name for var in contextvars.copy_context())


def _sync_context_names() -> list[str]:
    return sorted(var.name for var in contextvars.copy_context())


def _returns_coroutine() -> Coroutine[Any, Any, list[str]]:
    return _context_names()


KINDS: Final[dict[str, Callable[[Runner], TaskHandle[list[str]]]]] = {
    "async-function": lambda r: r.submit(_context_names),
    "coroutine-object": lambda r: r.submit(_context_names()),
    "sync-function": lambda r: r.submit(_sync_context_names),
    "sync-returning-coroutine": lambda r: r.submit(_returns_coroutine),
    "partial": lambda r: r.submit(functools.partial(_context_names)),
}


def _from_this_thread(runner: Runner, kind: str) -> list[str]:
    _submitters_var.set("submitter")
    return KINDS[kind](runner).result(WAIT)


def _from_another_thread(runner: Runner, kind: str) -> list[str]:
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(_from_this_thread, runner, kind).result(WAIT)


def _from_a_task_of_the_runner(runner: Runner, kind: str) -> list[str]:
    async def parent() -> list[str]:
        _submitters_var.set("parent task")
        return await KINDS[kind](runner)

    return runner.submit(parent).result(WAIT)


def _from_another_loop(runner: Runner, kind: str) -> list[str]:
    async def main() -> list[str]:
        _submitters_var.set("other loop")
        return await KINDS[kind](runner)

    return contextvars.Context().run(asyncio.run, main())


def _from_a_done_callback(runner: Runner, kind: str) -> list[str]:
    submitted: list[TaskHandle[list[str]]] = []
    ready = threading.Event()

    async def sets_the_var() -> None:
        _submitters_var.set("finished task")

    def callback(handle: TaskHandle[Any]) -> None:
        submitted.append(KINDS[kind](runner))  # runs on the loop, in the task's context
        ready.set()

    first = runner.submit(sets_the_var)
    first.add_done_callback(callback)
    assert ready.wait(WAIT)
    return submitted[0].result(WAIT)


SITES: Final = {
    "this-thread": _from_this_thread,
    "another-thread": _from_another_thread,
    "a-task-of-the-runner": _from_a_task_of_the_runner,
    "another-asyncio-loop": _from_another_loop,
    "a-done-callback": _from_a_done_callback,
}


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("site", list(SITES))
def test_task_runs_in_an_empty_context_whoever_submits_it(
    runner: Runner, site: str, kind: str
) -> None:
    """Whoever submits (a thread, another thread, a task of the runner, a coroutine on
    another loop, a done-callback running in a finished task's context) and whatever is
    submitted, the task's context holds none of the submitter's variables: only
    loopkeeper's own record of the current task."""
    names = contextvars.Context().run(SITES[site], runner, kind)
    assert names == ["loopkeeper_current_task"], names


# -- nothing of a finished task is kept ---------------------------------------------------------


class _Payload:
    """Stands for what a task may hold: a password, a request, a 500 MB frame."""


def _sync_work(payload: _Payload) -> _Payload:
    return _Payload()


async def _async_work(payload: _Payload) -> _Payload:
    await asyncio.sleep(0)
    return _Payload()


async def _to_thread_work(payload: _Payload) -> _Payload:
    return await asyncio.to_thread(_sync_work, payload)


async def _run_in_thread_work(payload: _Payload) -> _Payload:
    return await loopkeeper.run_in_thread(_sync_work, payload)


RETAINING: Final[dict[str, Callable[[_Payload], Any]]] = {
    "async": _async_work,
    "sync": _sync_work,
    "asyncio.to_thread": _to_thread_work,
    "run_in_thread": _run_in_thread_work,
}


@pytest.mark.parametrize("kind", list(RETAINING))
def test_finished_task_keeps_neither_its_arguments_nor_its_result_alive(
    runner: Runner, kind: str, wait_until: Callable[..., None]
) -> None:
    """Once a task has finished, the runner holds none of its arguments; once its handle
    is dropped too, nothing holds its result.  (An idle worker thread that keeps its last
    job would keep both alive, for as long as it idles: forever for the last worker.)"""
    payload = _Payload()
    argument = weakref.ref(payload)
    handle = runner.submit(RETAINING[kind], payload)
    del payload
    result = weakref.ref(handle.result(WAIT))
    wait_until(
        lambda: gc.collect() >= 0 and argument() is None,
        timeout=2.0,
        what=f"the runner to let go of a finished {kind} task's argument",
    )
    del handle
    wait_until(
        lambda: gc.collect() >= 0 and result() is None,
        timeout=2.0,
        what=f"the runner to let go of a finished {kind} task's result",
    )
