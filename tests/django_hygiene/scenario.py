"""One Django process running one hygiene scenario; prints its findings as one JSON line.

Started by ``tests/test_django_hygiene.py`` in a child interpreter, so that each scenario
has its own Django settings (PostgreSQL, a unique ``application_name`` to count its
connections by) and its own default runner.

    python scenario.py SCENARIO '{"hooks": true, "app": "lk-...", ...}'
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import threading
import time
import zoneinfo
from collections.abc import Callable
from typing import Any

import django
import psycopg
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection
from django.utils import timezone, translation

import loopkeeper
from loopkeeper.contrib.django.hygiene import DjangoHooks

DSN = "host=127.0.0.1 port=5432 dbname=test"


def setup(options: dict[str, Any]) -> None:
    settings.configure(
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.postgresql",
                "HOST": "127.0.0.1",
                "PORT": 5432,
                "NAME": "test",
                "USER": options.get("user", ""),
                "CONN_MAX_AGE": options.get("conn_max_age", 0),
                "CONN_HEALTH_CHECKS": options.get("health_checks", False),
                "OPTIONS": {"application_name": options["app"]},
            }
        },
        INSTALLED_APPS=[],
        USE_I18N=True,
        USE_TZ=True,
        TIME_ZONE="UTC",
        LANGUAGE_CODE="en",
        LANGUAGES=[("en", "English"), ("fr", "French")],
    )
    django.setup()
    if options["hooks"]:
        loopkeeper.configure(hooks=DjangoHooks())


def count_connections(app: str) -> int:
    with psycopg.connect(DSN, application_name="lk-monitor") as monitor:
        row = monitor.execute(
            "select count(*) from pg_stat_activity where application_name = %s", (app,)
        ).fetchone()
    assert row is not None
    return int(row[0])


def terminate_connections(app: str) -> int:
    with psycopg.connect(DSN, application_name="lk-monitor", autocommit=True) as monitor:
        rows = monitor.execute(
            "select pg_terminate_backend(pid) from pg_stat_activity where application_name = %s",
            (app,),
        ).fetchall()
    return len(rows)


def wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            return False
        pause.wait(0.02)
    return True


def query() -> int:
    with connection.cursor() as cursor:
        cursor.execute("select 1")
        row = cursor.fetchone()
    return int(row[0])


async def query_thread_sensitive() -> int:
    return await sync_to_async(query)()


async def query_to_thread() -> int:
    return await asyncio.to_thread(query)


def run_mix(count: int) -> tuple[int, list[str]]:
    """``count`` ORM tasks: sync, thread-sensitive sync_to_async, to_thread.  Returns the
    successes and the failures' messages."""
    kinds = (query, query_thread_sensitive, query_to_thread)
    handles = [loopkeeper.submit(kinds[i % 3]) for i in range(count)]
    ok, errors = 0, []
    for handle in handles:
        try:
            handle.result(timeout=60)
            ok += 1
        except Exception as exc:  # noqa: BLE001  counted and reported, not raised
            errors.append(f"{type(exc).__name__}: {exc}".strip()[:120])
    return ok, errors


def settle() -> bool:
    """Wait until no tracked thread runs a job: every job's after-hook has run."""
    return wait_for(lambda: loopkeeper.get_runner().stats().threads == 0)


def scenario_connections(options: dict[str, Any]) -> dict[str, Any]:
    app = options["app"]
    before = count_connections(app)
    ok, errors = run_mix(options["tasks"])
    settled = settle()
    if options["hooks"]:
        returned = wait_for(lambda: count_connections(app) == before)
    else:
        returned = count_connections(app) == before
    return {
        "before": before,
        "after": count_connections(app),
        "ok": ok,
        "errors": errors[:3],
        "settled": settled,
        "returned": returned,
    }


def scenario_terminated(options: dict[str, Any]) -> dict[str, Any]:
    app = options["app"]
    warm_ok, warm_errors = run_mix(60)
    settle()
    terminated = terminate_connections(app)
    ok, errors = run_mix(180)
    return {
        "warm_ok": warm_ok,
        "warm_errors": warm_errors[:3],
        "terminated": terminated,
        "ok": ok,
        "failed": len(errors),
        "errors": errors[:3],
    }


def scenario_thread_sensitive(options: dict[str, Any]) -> dict[str, Any]:
    release = threading.Event()
    entered = threading.Event()

    def slow() -> str:
        entered.set()
        release.wait(30)
        return threading.current_thread().name

    async def slow_task() -> str:
        return await sync_to_async(slow)()

    async def quick_task() -> str:
        return await sync_to_async(lambda: threading.current_thread().name)()

    runner = loopkeeper.get_runner()
    slow_handle = loopkeeper.submit(slow_task, name="slow-orm")
    assert entered.wait(10), "the slow call never started"
    owners = [(t.task_id, t.task_name) for t in runner.threads()]
    quick_handle = loopkeeper.submit(quick_task, name="quick-orm")
    try:
        quick_thread = quick_handle.result(timeout=options.get("quick_wait", 10))
        quick_done_while_slow_ran = not slow_handle.done()
    except TimeoutError:
        quick_thread, quick_done_while_slow_ran = "", False
    finally:
        release.set()
    return {
        "slow_thread": slow_handle.result(timeout=10),
        "quick_thread": quick_thread or quick_handle.result(timeout=30),
        "quick_done_while_slow_ran": quick_done_while_slow_ran,
        "owners_while_slow_ran": owners,
        "slow_id": slow_handle.id,
    }


def scenario_carry(options: dict[str, Any]) -> dict[str, Any]:
    def read() -> list[str]:
        return [translation.get_language() or "", timezone.get_current_timezone_name()]

    async def read_async() -> list[list[str]]:
        return [read(), await sync_to_async(read)(), await asyncio.to_thread(read)]

    with translation.override("fr"), timezone.override(zoneinfo.ZoneInfo("Europe/Paris")):
        in_request = [loopkeeper.submit(read_async), loopkeeper.submit(read)]
    outside = [loopkeeper.submit(read_async), loopkeeper.submit(read)]
    return {
        "in_request": [h.result(timeout=10) for h in in_request],
        "outside": [h.result(timeout=10) for h in outside],
    }


def scenario_hint(options: dict[str, Any]) -> dict[str, Any]:
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logging.getLogger("loopkeeper").addHandler(Collect())

    async def orm_on_the_loop() -> int:
        return query()

    handle = loopkeeper.submit(orm_on_the_loop, name="orm-on-loop")
    error = handle.exception(timeout=10)
    # The line is logged after the handle settles (and wakes us): the shutdown stops the
    # loop thread, which logged it, so it is in by then.
    loopkeeper.shutdown(timeout=10)
    return {
        "error": type(error).__name__,
        "failed_lines": [line for line in lines if line.startswith("task_failed")],
    }


SCENARIOS = {
    "connections": scenario_connections,
    "terminated": scenario_terminated,
    "thread_sensitive": scenario_thread_sensitive,
    "carry": scenario_carry,
    "hint": scenario_hint,
}

if __name__ == "__main__":
    name, raw = sys.argv[1], sys.argv[2]
    opts = json.loads(raw)
    setup(opts)
    result = SCENARIOS[name](opts)
    loopkeeper.shutdown(timeout=10)
    print(json.dumps(result), flush=True)
