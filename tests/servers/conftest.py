"""Fixtures for the real-server tests: a migrated database per test, and a ``serve``
that starts a server on it and ends every process it started."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import pytest

from ._harness import PROJECT, Served, end, migrate, skip_unless_wanted, start


@pytest.fixture(scope="session")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site's database, migrated once per session; each test gets a copy."""
    skip_unless_wanted()
    directory = tmp_path_factory.mktemp("site-template")
    migrate(directory)
    return directory / "db.sqlite3"


class Serve(Protocol):
    def __call__(self, command: list[str], *, name: str, **env: str) -> Served: ...


@pytest.fixture
def serve(migrated: Path, tmp_path: Path) -> Iterator[Serve]:
    """Start a server on the test's own copy of the database (``{port}`` in the command
    is its port); every process started is ended by PID after the test."""
    shutil.copy(migrated, tmp_path / "db.sqlite3")
    started: list[Served] = []

    def serve_(command: list[str], *, name: str, **env: str) -> Served:
        served = start(command, tmp_path, name=name, env=env)
        started.append(served)
        return served

    yield serve_
    for served in started:
        end(served.process)


@pytest.fixture
def site_copy(tmp_path: Path) -> Path:
    """A copy of the site's code, for a test that changes it."""
    copy = tmp_path / "site"
    shutil.copytree(PROJECT, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


@pytest.fixture
def serve_copy(migrated: Path, tmp_path: Path, site_copy: Path) -> Iterator[Serve]:
    """``serve``, running the copy of the site's code."""
    shutil.copy(migrated, tmp_path / "db.sqlite3")
    started: list[Served] = []

    def serve_(command: list[str], *, name: str, **env: str) -> Served:
        served = start(command, tmp_path, name=name, env=env, project=site_copy)
        started.append(served)
        return served

    yield serve_
    for served in started:
        end(served.process)
