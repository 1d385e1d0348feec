"""Shared fixtures.  Every runner a test makes is shut down, and must shut down clean."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import loopkeeper


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
