"""Log events: through structlog when the application configured it, else stdlib 'loopkeeper'."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Callable

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
        with pytest.raises(concurrent.futures.CancelledError):
            sleeper.result(WAIT)  # settled before the drain: it logs no manifest
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


@pytest.mark.usefixtures("unconfigured_structlog")
def test_a_drain_that_logged_its_manifest_logs_its_outcome_at_the_same_level(
    caplog: pytest.LogCaptureFixture, wait_until: Callable[..., None]
) -> None:
    """``shutdown_started`` is a WARNING; the clean ``shutdown_completed`` that answers it is
    a WARNING too (where only warnings show, the outcome shows with the manifest).  A drain
    with nothing unfinished logs no manifest, and its ``shutdown_completed`` stays INFO."""
    gate = threading.Event()
    with caplog.at_level(logging.INFO, logger="loopkeeper"):
        busy = Runner(name="busy")
        busy.submit(gate.wait, WAIT, name="gated")
        closing = threading.Thread(target=busy.shutdown, kwargs={"timeout": WAIT})
        closing.start()
        try:
            wait_until(
                lambda: any(getattr(r, "event", "") == "shutdown_started" for r in caplog.records),
                what="the manifest line",
            )
        finally:
            gate.set()
            closing.join(WAIT)
        idle = Runner(name="idle")
        idle.submit(asyncio.sleep, 0).result(WAIT)
        idle.shutdown(timeout=WAIT)
    levels = {
        (r.loopkeeper["runner"], r.event, r.levelno)  # type: ignore[attr-defined]  # `extra`
        for r in caplog.records
        if r.name == "loopkeeper" and r.event.startswith("shutdown_")  # type: ignore[attr-defined]
    }
    assert levels == {
        ("busy", "shutdown_started", logging.WARNING),
        ("busy", "shutdown_completed", logging.WARNING),
        ("idle", "shutdown_completed", logging.INFO),
    }
