"""Shared fixtures.  Every runner a test makes is shut down, and must shut down clean."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import structlog

import loopkeeper

# The plugin our users get from the entry point, loaded here once coverage has started
# (pyproject.toml's addopts turn the entry point off for this suite).
pytest_plugins = ("loopkeeper.testing", "pytester")

# A Django project with its own test suite, run by test_django_recipe.py in a subprocess.
collect_ignore = ["django_recipe"]


@pytest.fixture
def unconfigured_structlog() -> Iterator[None]:
    """structlog as an application that never configured it (the stdlib route), and put
    back so afterwards: ``capture_logs()`` leaves structlog marked configured."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


def pytest_configure(config: pytest.Config) -> None:
    """Give child processes the SIGINT a terminal gives them.

    A shell starts a background job (``./scripts/test &``) with SIGINT ignored, children
    inherit that, and Python then installs no ``KeyboardInterrupt`` handler: the
    subprocess tests that send a real Ctrl-C would wait for one that never comes.
    """
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def runner() -> Iterator[loopkeeper.Runner]:
    """A fresh runner; the test fails if it leaves unfinished work behind."""
    r = loopkeeper.Runner(name="test-runner", shutdown_timeout=5)
    yield r
    report = r.shutdown(timeout=5)
    assert report.clean, f"test left work behind: {report!r}"


@pytest.fixture
def wait_until() -> Callable[..., None]:
    """Poll ``predicate`` until it holds, failing the test after ``timeout`` seconds.

    For states that no event announces (a task moving to RUNNING); everything else
    waits on events.
    """

    def wait(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        pause = threading.Event()
        while not predicate():
            if time.monotonic() > deadline:
                pytest.fail(f"gave up after {timeout}s waiting for {what or predicate!r}")
            pause.wait(0.001)

    return wait
