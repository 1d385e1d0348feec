"""Django DB hygiene, measured on the local PostgreSQL: ``DjangoHooks``.

Each test runs one scenario of ``tests/django_hygiene/scenario.py`` in a child interpreter
(its own Django settings and default runner) and counts that process's connections in
``pg_stat_activity`` by a unique ``application_name``.  Each promise has a control run
without the hooks, so the measurement is shown to see the failure it guards against.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, Final

import pytest

pytest.importorskip("django")
pytest.importorskip("psycopg")

SCENARIO: Final = Path(__file__).parent / "django_hygiene" / "scenario.py"


def _postgres_reason() -> str | None:
    """Why PostgreSQL cannot be used here, or None if it can."""
    import psycopg  # noqa: PLC0415  only where the tests run

    try:
        with psycopg.connect("host=127.0.0.1 port=5432 dbname=test", connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return f"PostgreSQL on 127.0.0.1:5432 (database 'test') is not reachable: {exc}"


@pytest.fixture(scope="module")
def postgres() -> None:
    """Skip without PostgreSQL, except in CI, where a missing service is a failure."""
    reason = _postgres_reason()
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def run_scenario(name: str, *, hooks: bool = True, **options: Any) -> dict[str, Any]:
    """Run one scenario in a child interpreter; return what it printed."""
    app = f"lk-hygiene-{uuid.uuid4().hex[:12]}"
    opts = json.dumps({"hooks": hooks, "app": app, **options})
    done = subprocess.run(
        [sys.executable, str(SCENARIO), name, opts],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, f"scenario {name} failed:\n{done.stdout}\n{done.stderr}"
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.usefixtures("postgres")
def test_a_thousand_orm_tasks_leave_no_connection_open() -> None:
    """1,000 tasks doing ORM work (sync tasks, thread-sensitive ``sync_to_async``,
    ``asyncio.to_thread``) all succeed, and the process's connections in
    ``pg_stat_activity`` return to what they were before."""
    result = run_scenario("connections", tasks=1000)
    assert result["ok"] == 1000, result["errors"]
    assert result["settled"], "tracked threads were still running jobs"
    assert result["returned"], f"{result['after']} connections left, {result['before']} before"


@pytest.mark.usefixtures("postgres")
def test_control_without_the_hooks_worker_threads_keep_idle_connections() -> None:
    """The measurement sees a leak: without ``DjangoHooks`` every worker thread keeps
    its connection open after the work is done."""
    result = run_scenario("connections", hooks=False, tasks=300)
    assert result["ok"] == 300, result["errors"]
    assert result["after"] > result["before"]


@pytest.mark.usefixtures("postgres")
@pytest.mark.parametrize(
    ("conn_max_age", "health_checks"),
    [(0, False), (600, True)],
    ids=["default-settings", "persistent-with-health-checks"],
)
def test_tasks_after_the_server_dropped_connections_do_not_fail(
    conn_max_age: int, health_checks: bool
) -> None:
    """After ``pg_terminate_backend`` of every connection of the process (a database
    restart or failover), 180 later ORM tasks all succeed: with the default
    ``CONN_MAX_AGE = 0`` no connection outlives its job, and with persistent connections
    ``CONN_HEALTH_CHECKS`` replaces the dead ones, as for a request."""
    result = run_scenario("terminated", conn_max_age=conn_max_age, health_checks=health_checks)
    assert result["warm_ok"] == 60, result["warm_errors"]
    if conn_max_age:
        assert result["terminated"] > 0, "no persistent connection was there to drop"
    assert (result["ok"], result["failed"]) == (180, 0), result["errors"]


@pytest.mark.usefixtures("postgres")
def test_control_without_the_hooks_dropped_connections_fail_every_later_task() -> None:
    """The scenario is real: without ``DjangoHooks`` the worker threads keep their dead
    connections and later ORM tasks fail (all 180 on a quiet machine; a worker thread
    started meanwhile opens a fresh connection, so a few may pass under load)."""
    result = run_scenario("terminated", hooks=False)
    assert result["terminated"] > 0
    assert result["failed"] > 90, result


def test_thread_sensitive_sync_to_async_runs_on_a_thread_of_its_own_task() -> None:
    """``sync_to_async(func)`` in a task runs on a tracked thread owned by that task,
    not on asgiref's one process-wide thread: a second task's call completes while the
    first task's call is still blocked."""
    result = run_scenario("thread_sensitive")
    assert result["quick_done_while_slow_ran"], "the second task waited for the first"
    assert result["slow_thread"] != result["quick_thread"]
    assert result["slow_thread"].startswith("loopkeeper-worker-")
    assert [result["slow_id"], "slow-orm"] in result["owners_while_slow_ran"]


def test_control_without_the_hooks_one_tasks_call_stalls_the_others() -> None:
    """The promise is not free: without ``DjangoHooks`` both calls share asgiref's
    single thread, so the second is still waiting 2 s later (and ends after the first)."""
    result = run_scenario("thread_sensitive", hooks=False, quick_wait=2)
    assert not result["quick_done_while_slow_ran"]


def test_the_submitters_language_and_time_zone_are_active_in_the_task() -> None:
    """Submitted under ``translation.override("fr")`` and a Paris time zone, a task
    sees both in its coroutine, in ``sync_to_async`` calls and in a sync task; submitted
    outside, it sees the defaults."""
    result = run_scenario("carry")
    [in_coroutine, in_sync_to_async, _in_to_thread], in_sync_task = result["in_request"]
    assert in_coroutine == in_sync_to_async == in_sync_task == ["fr", "Europe/Paris"]
    outside_async, outside_sync = result["outside"]
    assert outside_async == [["en", "UTC"]] * 3
    assert outside_sync == ["en", "UTC"]


def test_orm_on_the_loop_thread_fails_and_the_log_says_what_to_do() -> None:
    """ORM called directly in an ``async def`` task keeps raising
    ``SynchronousOnlyOperation``; its ``task_failed`` line carries the hint."""
    result = run_scenario("hint")
    assert result["error"] == "SynchronousOnlyOperation"
    [line] = result["failed_lines"]
    assert "hint=" in line
    assert "sync_to_async" in line
