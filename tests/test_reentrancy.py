"""User code that calls back into loopkeeper: done callbacks, log handlers, failing logging.

No loopkeeper lock is held while user code runs, so a callback or a log handler may submit,
cancel or shut down without deadlocking; and a logging filter, handler or structlog
processor that raises changes nothing but the line it was given.  Every test here runs the
suspect call in a daemon thread joined with a deadline, so a deadlock fails the test
instead of hanging the suite.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from typing import Any

import pytest
import structlog

import loopkeeper
from loopkeeper import Runner, ShutdownReport, TaskState

WAIT = 10.0


def _finishes(target: Callable[[], object], what: str) -> list[object]:
    """Run ``target`` in a daemon thread; fail unless it returns within WAIT seconds."""
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(target())
        except BaseException as exc:  # noqa: BLE001  handed to the test
            outcome.append(exc)

    thread = threading.Thread(target=run, name=f"test-{what}", daemon=True)
    thread.start()
    thread.join(WAIT)
    assert not thread.is_alive(), f"{what} is still blocked after {WAIT}s: a deadlock"
    return outcome


class _OnEvent(logging.Handler):
    """Calls ``action`` (once) when a record with the given ``event`` field is emitted."""

    def __init__(self, event: str, action: Callable[[], object]) -> None:
        super().__init__(logging.DEBUG)
        self.wanted = event
        self.action = action
        self.outcomes: list[object] = []

    def handle(self, record: logging.LogRecord) -> bool:  # no handler lock: none is needed
        if getattr(record, "event", None) == self.wanted and not self.outcomes:
            try:
                self.outcomes.append(self.action())
            except Exception as exc:  # noqa: BLE001  recorded for the test
                self.outcomes.append(exc)
        return True


@pytest.fixture
def on_event() -> Iterator[Callable[[str, Callable[[], object], int], _OnEvent]]:
    """Install an ``_OnEvent`` handler on the ``loopkeeper`` logger at a level; removed after."""
    logger = logging.getLogger("loopkeeper")
    old_level = logger.level
    installed: list[_OnEvent] = []

    def install(event: str, action: Callable[[], object], level: int) -> _OnEvent:
        handler = _OnEvent(event, action)
        logger.addHandler(handler)
        logger.setLevel(level)
        installed.append(handler)
        return handler

    yield install
    for handler in installed:
        logger.removeHandler(handler)
    logger.setLevel(old_level)


# -- defect 1: a done callback that calls shutdown() -------------------------------------


def test_done_callback_calling_shutdown_gets_the_first_shutdowns_report() -> None:
    """A sync task's done callback calls ``shutdown()``; the task is abandoned by a shutdown
    from another thread, which runs the callback: that shutdown still returns within its
    timeout plus the grace, and the callback's own ``shutdown()`` returns the same report."""
    runner = Runner(name="callback-shutdown")
    gate = threading.Event()
    started = threading.Event()
    from_callback: list[ShutdownReport] = []

    def blocked() -> None:
        started.set()
        gate.wait(WAIT)

    try:
        handle = runner.submit(blocked, name="blocked")
        handle.add_done_callback(lambda h: from_callback.append(runner.shutdown()))
        assert started.wait(WAIT)
        outcome = _finishes(lambda: runner.shutdown(timeout=0.2), "shutdown")
    finally:
        gate.set()
    report = outcome[0]
    assert isinstance(report, ShutdownReport), report
    assert [info.name for info in report.abandoned] == ["blocked"]
    assert from_callback == [report]
    assert from_callback[0] is report


def test_callback_of_a_task_the_shutdown_cancels_while_pending_gets_the_report() -> None:
    """A task still waiting for a ``max_concurrency`` slot (held by a sync task that does
    not stop when cancelled) is cancelled by the shutdown's own thread; its done callback's
    ``shutdown()`` returns that shutdown's report."""
    runner = Runner(name="pending-callback", max_concurrency=1)
    gate = threading.Event()
    holding = threading.Event()

    def hold_the_slot() -> None:
        holding.set()
        gate.wait(WAIT)

    from_callback: list[object] = []
    try:
        runner.submit(hold_the_slot, name="holder")
        assert holding.wait(WAIT)
        waiting = runner.submit(asyncio.sleep, 0, name="waiting")
        waiting.add_done_callback(lambda h: from_callback.append(runner.shutdown()))
        outcome = _finishes(lambda: runner.shutdown(timeout=0), "shutdown")
    finally:
        gate.set()
    report = outcome[0]
    assert isinstance(report, ShutdownReport), report
    assert waiting.state is TaskState.CANCELLED
    assert report.cancelled == 1
    assert [info.name for info in report.abandoned] == ["holder"]
    assert from_callback == [report]


def test_log_handler_calling_shutdown_during_that_shutdown_is_refused_not_deadlocked(
    on_event: Callable[[str, Callable[[], object], int], _OnEvent],
) -> None:
    """A log handler that calls ``shutdown()`` from inside the shutdown it is logging (the
    ``shutdown_started`` line, on the shutting-down thread, before any report exists) gets
    ``RuntimeError`` saying why; the shutdown goes on and returns its report."""
    runner = Runner(name="handler-shutdown")
    gate = threading.Event()

    def shut_down_then_open_the_gate() -> object:
        try:
            return runner.shutdown(timeout=0)
        finally:
            gate.set()

    handler = on_event("shutdown_started", shut_down_then_open_the_gate, logging.WARNING)
    runner.submit(gate.wait, WAIT, name="gated")
    try:
        outcome = _finishes(lambda: runner.shutdown(timeout=WAIT), "shutdown")
        assert isinstance(outcome[0], ShutdownReport), outcome
    finally:
        gate.set()
    assert len(handler.outcomes) == 1
    refused = handler.outcomes[0]
    assert isinstance(refused, RuntimeError), refused
    assert "cannot wait for itself" in str(refused)
    assert runner.shutdown() is outcome[0]


# -- defect 2: a log handler that submits ---------------------------------------------------


def test_log_handler_that_submits_on_runner_started_does_not_deadlock_the_first_submit(
    on_event: Callable[[str, Callable[[], object], int], _OnEvent],
) -> None:
    """A handler on the ``loopkeeper`` logger that submits (log shipping) runs on the loop
    thread for ``runner_started``; the first ``submit()``, which started the loop, returns,
    and both tasks run."""
    runner = Runner(name="shipping")
    handler = on_event(
        "runner_started", lambda: runner.submit(asyncio.sleep, 0, "shipped"), logging.INFO
    )
    try:
        outcome = _finishes(lambda: runner.submit(asyncio.sleep, 0, "first"), "first submit")
        first = outcome[0]
        assert isinstance(first, loopkeeper.TaskHandle), first
        assert first.result(WAIT) == "first"
        assert len(handler.outcomes) == 1
        shipped = handler.outcomes[0]
        assert isinstance(shipped, loopkeeper.TaskHandle), shipped
        assert shipped.result(WAIT) == "shipped"
    finally:
        _finishes(lambda: runner.shutdown(timeout=WAIT), "shutdown")


# -- defect 6: logging that raises ----------------------------------------------------------


class _PlannedLoggingError(Exception):
    pass


class _RaisingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        raise _PlannedLoggingError("a broken logging filter")


def _raising_processor(
    logger: object, method: str, event: MutableMapping[str, Any]
) -> Mapping[str, Any]:
    raise _PlannedLoggingError("a broken structlog processor")


@pytest.fixture(params=["stdlib-filter", "structlog-processor"])
def broken_logging(
    request: pytest.FixtureRequest, unconfigured_structlog: None, capsys: pytest.CaptureFixture[str]
) -> Iterator[str]:
    """Every loopkeeper log line raises: through a stdlib filter, or a structlog processor."""
    logger = logging.getLogger("loopkeeper")
    old_level = logger.level
    broken = _RaisingFilter()
    if request.param == "stdlib-filter":
        logger.addFilter(broken)
        logger.setLevel(logging.DEBUG)
    else:
        structlog.configure(processors=[_raising_processor])
    try:
        yield request.param
    finally:
        logger.removeFilter(broken)
        logger.setLevel(old_level)


def test_a_raising_log_call_does_not_keep_the_slot_of_a_failed_task(broken_logging: str) -> None:
    """With ``max_concurrency=1``, a failed task whose ``task_failed`` line raises still frees
    its slot: the next task runs."""
    runner = Runner(name="broken-log-slot", max_concurrency=1)

    async def fail() -> None:
        raise ValueError("planned")

    try:
        failed = runner.submit(fail, name="fails")
        assert isinstance(failed.exception(WAIT), ValueError)
        assert runner.submit(asyncio.sleep, 0, "next").result(WAIT) == "next"
    finally:
        report = _finishes(lambda: runner.shutdown(timeout=WAIT), "shutdown")[0]
    assert isinstance(report, ShutdownReport), report
    assert report.clean, report


def test_a_raising_log_call_in_a_callback_failure_skips_no_other_callback(
    broken_logging: str,
) -> None:
    """A done callback raises, and its ``callback_failed`` line raises too: the task's next
    callback still runs, and a shutdown still sees the runner drained."""
    runner = Runner(name="broken-log-callback")
    gate = threading.Event()
    later: list[int] = []

    def explode(handle: loopkeeper.TaskHandle[Any]) -> None:
        raise RuntimeError("planned callback failure")

    try:
        handle = runner.submit(gate.wait, WAIT, name="gated")
        handle.add_done_callback(explode)
        handle.add_done_callback(lambda h: later.append(h.id))
        gate.set()
        assert handle.result(WAIT) is True
        report = _finishes(lambda: runner.shutdown(timeout=WAIT), "shutdown")[0]
    finally:
        gate.set()
    assert later == [handle.id]
    assert isinstance(report, ShutdownReport), report
    assert report.clean, report
