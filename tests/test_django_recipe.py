"""The Django test recipe of docs/testing.md, proven by a Django project's own test suite.

``tests/django_recipe/`` is a small project (a sync view that queues a sync and an async
ORM task) whose tests use the recipe: ``TestCase`` with eager mode, ``TransactionTestCase``
with ``drain()``, and the reason eager mode is needed.  Here it runs, in a copy, under
pytest-django with loopkeeper's plugin from its entry point, on SQLite and on the local
PostgreSQL, and the test database must be gone afterwards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Final

import psycopg
import pytest
from psycopg import sql

PROJECT: Final = Path(__file__).resolve().parent / "django_recipe"
PG: Final = "host=127.0.0.1 port=5432 user=postgres dbname=test"
RECIPE_TESTS: Final = 6


def _run_project(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    copy = tmp_path / "project"
    shutil.copytree(PROJECT, copy, ignore=shutil.ignore_patterns("__pycache__"))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q"],
        cwd=copy,
        env={**os.environ, **env, "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{RECIPE_TESTS} passed" in result.stdout, result.stdout
    assert "being accessed by other users" not in result.stdout + result.stderr
    return result


def test_recipe_on_sqlite(tmp_path: Path) -> None:
    """On SQLite: eager tasks see and write the TestCase's transaction (rolled back with
    it); a background task fails with "database table is locked" there, as the docs say;
    under TransactionTestCase the background tasks commit and drain() waits for them."""
    _run_project(tmp_path, RECIPE_DB="sqlite")


def _postgres() -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(PG, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 is not available: {exc}")


def test_recipe_on_postgresql_tears_the_test_database_down(tmp_path: Path) -> None:
    """On PostgreSQL: the same tests pass (a background task sees none of the TestCase's
    rows), no connection is left open when the test database is destroyed, and the
    database is gone afterwards."""
    admin = _postgres()
    name = f"lk_docs_{os.getpid()}"
    try:
        _run_project(tmp_path, RECIPE_DB="postgresql", RECIPE_PG_NAME=name)
        left = admin.execute(
            "SELECT datname FROM pg_database WHERE datname = %s", (f"test_{name}",)
        ).fetchall()
        assert left == []
    finally:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(f"test_{name}")))
        admin.close()
