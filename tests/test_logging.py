"""Log events: through structlog when the application configured it, else stdlib 'loopkeeper'."""

from __future__ import annotations

import asyncio
import logging

import pytest
import structlog
from structlog.testing import capture_logs

from loopkeeper import Runner

WAIT = 10.0


@pytest.mark.usefixtures("unconfigured_structlog")
def test_events_go_through_structlog_when_it_is_configured() -> None:
    """With structlog configured, events arrive as key-value events, never with arguments."""
    secret = "hunter2-secret"

    async def fail(password: str) -> None:
        raise ValueError("nope")

    with capture_logs() as events, Runner(name="structured") as runner:
        assert structlog.is_configured()
        handle = runner.submit(fail, secret, name="login")
        handle.exception(WAIT)
        runner.submit(asyncio.sleep, 0).result(WAIT)
    failed = [e for e in events if e["event"] == "task_failed"]
    assert len(failed) == 1
    assert failed[0]["task_id"] == handle.id
    assert failed[0]["task_name"] == "login"
    assert failed[0]["log_level"] == "error"
    assert isinstance(failed[0]["exc_info"], ValueError)
    names = [e["event"] for e in events]
    assert names.count("task_succeeded") == 1
    assert "shutdown_completed" in names
    assert secret not in repr(events)


@pytest.mark.usefixtures("unconfigured_structlog")
def test_lifecycle_events_reach_the_stdlib_logger_at_their_levels(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Unconfigured structlog: stdlib logger 'loopkeeper', DEBUG for the routine, INFO for the
    runner's start and a cancellation; the message text carries the task's id and name."""
    with caplog.at_level(logging.DEBUG, logger="loopkeeper"), Runner(name="plain") as runner:
        handle = runner.submit(asyncio.sleep, 0, name="nap")
        handle.result(WAIT)
        sleeper = runner.submit(asyncio.sleep, 60, name="long-nap")
        sleeper.cancel()
    levels = {
        (r.event, r.levelno)  # type: ignore[attr-defined]  # set through `extra`
        for r in caplog.records
        if r.name == "loopkeeper"
    }
    assert ("runner_started", logging.INFO) in levels
    assert ("task_submitted", logging.DEBUG) in levels
    assert ("task_started", logging.DEBUG) in levels
    assert ("task_succeeded", logging.DEBUG) in levels
    assert ("task_cancelled", logging.INFO) in levels
    assert ("shutdown_completed", logging.INFO) in levels
    succeeded = next(r for r in caplog.records if getattr(r, "event", "") == "task_succeeded")
    assert f"task_id={handle.id}" in succeeded.getMessage()
    assert "task_name='nap'" in succeeded.getMessage()
