"""Enqueueing a Django task from sync code: what one ``enqueue()`` costs the caller.

Rows, measured side by side in one process, interleaved round by round with the order
rotated each round:

    submit                      loopkeeper.submit(send_welcome_mail.func, 42): the bare
                                submit of the task's function, on the default runner
    LoopkeeperBackend           send_welcome_mail.enqueue(42) through
                                loopkeeper.contrib.django.backends.LoopkeeperBackend
    DatabaseBackend sqlite      the same enqueue() through django-tasks-db's DatabaseBackend:
                                one INSERT into a SQLite file
    DatabaseBackend postgresql  the same, one INSERT into PostgreSQL on 127.0.0.1:5432

Each row runs for a sync ``def`` task and an ``async def`` task of the same body.  Two
figures per row, both wall clock as the calling thread sees it:

spaced      one enqueue(), then 200 us of sleep, as a view makes one per request: the
            median of the single calls (us).
batch       enqueue() called back to back: the batch's time / its calls (us).  loopkeeper's
            loop and worker threads run the tasks meanwhile, under the same GIL.

Ratios are taken within a round, then the median over rounds is given: the backend against
the bare submit of the same function (goal: at most 2x), and django-tasks-db against the
backend (goal: loopkeeper at least 5x cheaper).  Between measurements, untimed, loopkeeper's
tasks finish and the inserted rows are deleted.  Nothing runs django-tasks-db's rows (no
``db_worker``): only the enqueue is measured.

PostgreSQL gets a database of its own, ``lk_bench_<pid>``, created at the start and dropped
at the end (``PGUSER`` picks the role; the OS user by default).  Without PostgreSQL, or
without ``--databases postgresql``, its rows are left out and the run says why.

Django 6 has ``django.tasks``; on Django 5.2 (Python 3.10 and 3.11) the ``django-tasks``
backport provides it.  ``./scripts/bench --django`` installs the ``django`` extra and the
``bench`` dependency group.  The tasks themselves are in ``welcome_tasks``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.util
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from time import perf_counter_ns as now
from typing import TYPE_CHECKING, Any, Final

import loopkeeper

from .machine import (
    calibrate,
    calibration_summary,
    calibration_text,
    loopkeeper_source,
    versions,
)
from .report import render
from .summary import Samples, median_of, paired, record, spread_of

if TYPE_CHECKING:
    import argparse

    from django.tasks import Task

SPACING_S: Final = 200e-6
BACKEND_PATH: Final = "loopkeeper.contrib.django.backends.LoopkeeperBackend"
DATABASE_BACKEND_PATH: Final = "django_tasks_db.DatabaseBackend"
PG_ADMIN_DATABASE: Final = "test"  # where CREATE DATABASE is sent
IDLE_WAIT_S: Final = 60.0
KINDS: Final = ("sync", "async")
METRICS: Final = ("spaced_us", "batch_us")
DISTRIBUTIONS: Final = ("django", "django-tasks-db", "psycopg", "loopkeeper-runner")


@dataclasses.dataclass(frozen=True)
class Params:
    rounds: int
    spaced_n: int  # single calls per round and row
    batch_n: int  # back-to-back calls per round and row


MODES: Final = {
    "quick": Params(rounds=5, spaced_n=100, batch_n=100),
    "full": Params(rounds=11, spaced_n=300, batch_n=300),
}


class TaskTableRouter:
    """Sends django-tasks-db's writes to the database the harness is measuring now.

    One DatabaseBackend serves both databases: the harness sets ``database`` before each
    measurement.  Everything else goes to ``default``.
    """

    def __init__(self) -> None:
        self.database = "default"

    def db_for_write(self, model: type[Any], **hints: Any) -> str | None:
        return self.database if model._meta.app_label == "django_tasks_database" else None

    db_for_read = db_for_write


@dataclasses.dataclass
class Row:
    """One way of enqueueing: its name in the tables, the call, and its database if any."""

    name: str
    enqueue: Callable[[], object]
    database: str | None = None  # the alias the router sends its INSERT to


def backend_available() -> str | None:
    """None if the LoopkeeperBackend can be imported, else why not."""
    try:
        spec = importlib.util.find_spec("loopkeeper.contrib.django.backends")
    except ModuleNotFoundError as exc:
        return str(exc)
    return None if spec is not None else f"{BACKEND_PATH} is not in this loopkeeper"


def configure_django(
    sqlite_path: str, pg_name: str, router: TaskTableRouter, with_backend: bool
) -> None:
    """settings.configure() and django.setup(): SQLite as ``default``, PostgreSQL as
    ``postgresql`` (its database made by ``postgresql_database``) and ``postgresql-admin``."""
    import django  # noqa: PLC0415  only --django imports Django
    from django.conf import settings  # noqa: PLC0415

    postgresql = {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": "127.0.0.1",
        "PORT": "5432",
        "USER": os.environ.get("PGUSER", ""),
    }
    apps = ["django_tasks_db"]
    if django.VERSION < (6, 0):
        apps.insert(0, "django_tasks")  # the backport of django.tasks
    tasks: dict[str, dict[str, Any]] = {"default": {"BACKEND": DATABASE_BACKEND_PATH}}
    if with_backend:
        apps.append("loopkeeper.contrib.django")
        tasks["loopkeeper"] = {"BACKEND": BACKEND_PATH}
    settings.configure(
        DEBUG=False,  # with DEBUG, Django keeps every query it ran
        SECRET_KEY="loopkeeper-bench",
        USE_TZ=True,
        INSTALLED_APPS=apps,
        DATABASES={
            "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": sqlite_path},
            "postgresql": {**postgresql, "NAME": pg_name},
            "postgresql-admin": {**postgresql, "NAME": PG_ADMIN_DATABASE},
        },
        DATABASE_ROUTERS=[router],
        TASKS=tasks,
    )
    django.setup()


@contextlib.contextmanager
def postgresql_database(wanted: bool) -> Iterator[str | None]:
    """Yields why PostgreSQL cannot be measured, or None once the database ``postgresql``
    names exists; it is dropped at the end."""
    from django.core.exceptions import ImproperlyConfigured  # noqa: PLC0415
    from django.db import DatabaseError, connections  # noqa: PLC0415

    if not wanted:
        yield "not asked for (--databases)"
        return
    admin = connections["postgresql-admin"]
    name = connections["postgresql"].settings_dict["NAME"]
    try:
        with admin.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE {admin.ops.quote_name(name)}")
    except (DatabaseError, ImproperlyConfigured) as exc:  # no server, no driver, no right
        yield f"not usable on 127.0.0.1:5432 ({type(exc).__name__}: {exc})".strip()
        return
    try:
        yield None
    finally:
        connections["postgresql"].close()
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {admin.ops.quote_name(name)} WITH (FORCE)")
        admin.close()


def migrate(databases: list[str], router: TaskTableRouter) -> None:
    """django-tasks-db's table in each database."""
    from django.core.management import call_command  # noqa: PLC0415

    for alias in databases:
        router.database = alias
        call_command("migrate", "django_tasks_database", database=alias, verbosity=0)
    router.database = "default"


def build_rows(databases: list[str], with_backend: bool) -> list[Row]:
    """Per task kind: the bare submit, the backend, then django-tasks-db in each database."""
    from . import welcome_tasks  # noqa: PLC0415  needs django.setup()

    tasks: dict[str, Task[[int], Any]] = {
        "sync": welcome_tasks.send_welcome_mail,
        "async": welcome_tasks.asend_welcome_mail,
    }
    rows: list[Row] = []
    for kind in KINDS:
        db_task = tasks[kind]
        rows.append(Row(f"submit {kind}", functools.partial(loopkeeper.submit, db_task.func, 42)))
        if with_backend:
            lk_task = db_task.using(backend="loopkeeper")
            rows.append(Row(f"LoopkeeperBackend {kind}", functools.partial(lk_task.enqueue, 42)))
        for alias in databases:
            label = "sqlite" if alias == "default" else alias
            enqueue = functools.partial(db_task.enqueue, 42)
            rows.append(Row(f"DatabaseBackend {label} {kind}", enqueue, alias))
    return rows


def wait_idle() -> None:
    """Until loopkeeper's default runner has no task left (untimed, between measurements)."""
    runner = loopkeeper.get_runner()
    deadline = time.monotonic() + IDLE_WAIT_S
    while True:
        stats = runner.stats()
        if stats.pending + stats.running == 0:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"loopkeeper still busy after {IDLE_WAIT_S:.0f} s: {stats}")
        time.sleep(0.001)


def clear_rows(database: str | None) -> None:
    """Delete what the database backend inserted (untimed, between measurements)."""
    if database is None:
        return
    from django.apps import apps  # noqa: PLC0415

    apps.get_model("django_tasks_database", "DBTaskResult")._default_manager.using(
        database
    ).all().delete()


def measure_spaced(row: Row, n: int) -> float:
    """Median of n single enqueue() calls (us), each followed by SPACING_S of sleep."""
    enqueue = row.enqueue
    sleep = time.sleep
    took = [0] * n
    for i in range(n):
        t0 = now()
        enqueue()
        took[i] = now() - t0
        sleep(SPACING_S)
    return statistics.median(took) / 1e3


def measure_batch(row: Row, n: int) -> float:
    """n enqueue() calls back to back: us per call."""
    enqueue = row.enqueue
    t0 = now()
    for _ in range(n):
        enqueue()
    return (now() - t0) / n / 1e3


@dataclasses.dataclass
class Outcome:
    """What the rounds measured: the samples, the calibration times, the failed rows."""

    samples: Samples
    calibration: list[float]
    errors: dict[str, str]


def run_rounds(rows: list[Row], params: Params, router: TaskTableRouter) -> Outcome:
    """Each round measures every row once per metric, the order rotated each round."""
    samples: Samples = {}
    calibration: list[float] = []
    errors: dict[str, str] = {}
    metrics: tuple[tuple[str, Callable[[Row, int], float], int], ...] = (
        ("spaced_us", measure_spaced, params.spaced_n),
        ("batch_us", measure_batch, params.batch_n),
    )
    for row in rows:  # warm-up: connections, lazily created threads, first-call imports
        router.database = row.database or "default"
        measure_batch(row, 20)
        wait_idle()
        clear_rows(row.database)
    started = time.monotonic()
    for rnd in range(params.rounds):
        calibration.append(calibrate())
        shift = rnd % len(rows)
        for row in rows[shift:] + rows[:shift]:
            router.database = row.database or "default"
            for metric, measure, n in metrics:
                try:
                    value: float | None = measure(row, n)
                except Exception as exc:  # noqa: BLE001  a failing row must not sink the run
                    errors[f"{metric}/{row.name}"] = f"{type(exc).__name__}: {exc}"
                    value = None
                record(samples, metric, row.name, rnd, value)
                wait_idle()
                clear_rows(row.database)
        elapsed = time.monotonic() - started
        print(f"[{elapsed:6.1f}s] round {rnd + 1} of {params.rounds}", file=sys.stderr)
    return Outcome(samples, calibration, errors)


def _fmt(value: float | None, fmt: str = "") -> str:
    """A figure as text: ``fmt`` if given, else a ratio (two decimals below 100)."""
    if value is None:
        return "-"
    if not fmt:
        fmt = "{:.2f}" if value < 100 else "{:,.0f}"  # noqa: PLR2004  a ratio's width
    return fmt.format(value)


def report(result: dict[str, Any], markdown: bool) -> str:
    """The medians per row, then the goal ratios, as aligned text or markdown."""
    meta = result["meta"]
    samples: Samples = result["samples"]
    rows: list[str] = result["rows"]
    v = meta["versions"]
    lines = [
        (
            f"Python {meta['python']}, Django {v['django']}, django-tasks-db "
            f"{v['django-tasks-db']}, psycopg {v['psycopg']}, loopkeeper "
            f"{v['loopkeeper-runner']} ({meta['loopkeeper_source']}); mode {meta['mode']}, "
            f"rounds {meta['rounds']} (spaced {meta['spaced_n']} calls, batch "
            f"{meta['batch_n']} calls per row and round), wall {meta['wall_s']:.0f} s, "
            f"{calibration_text(meta)}; PostgreSQL: {meta['postgresql']}"
        ),
        "",
        "enqueue() from sync code, us per call (median over rounds, spread min-max):",
    ]
    table = []
    for name in rows:
        cells = [name]
        for metric in METRICS:
            spread = spread_of(samples, metric, name)
            cells.append(_fmt(median_of(samples, metric, name), "{:,.1f}"))
            cells.append("-" if spread is None else f"{spread[0]:,.1f}-{spread[1]:,.1f}")
        table.append(cells)
    header = ["row", "spaced us", "spaced spread", "batch us", "batch spread"]
    lines += [render(header, table, markdown), ""]
    goal_rows = []
    for kind in KINDS:
        backend, submit = f"LoopkeeperBackend {kind}", f"submit {kind}"
        if backend not in rows:  # the database backend against the bare submit, for scale
            goal_rows += [
                [
                    f"{database} / submit, {kind} def (no LoopkeeperBackend row)",
                    *[_fmt(paired(samples, (m, database), (m, submit))) for m in METRICS],
                ]
                for database in (f"DatabaseBackend {db} {kind}" for db in ("sqlite", "postgresql"))
                if database in rows
            ]
            continue
        goal_rows.append(
            [
                f"LoopkeeperBackend / submit, {kind} def: <= 2x",
                *[_fmt(paired(samples, (m, backend), (m, submit))) for m in METRICS],
            ]
        )
        for label in ("sqlite", "postgresql"):
            database = f"DatabaseBackend {label} {kind}"
            if database not in rows:
                continue
            goal_rows.append(
                [
                    f"DatabaseBackend {label} / LoopkeeperBackend, {kind} def: >= 5x",
                    *[_fmt(paired(samples, (m, database), (m, backend))) for m in METRICS],
                ]
            )
    if not any(name.startswith("LoopkeeperBackend") for name in rows):
        lines += [f"No LoopkeeperBackend row: {meta['backend']}", ""]
    lines += [
        "Ratios, paired per round (median over rounds):",
        render(["ratio: goal", "spaced", "batch"], goal_rows, markdown),
    ]
    if result["errors"]:
        lines += ["", "Errors:", *[f"  {k}: {v}" for k, v in result["errors"].items()]]
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    """``--django``: configure Django, measure every row, print the tables."""
    if args.report:
        with open(args.report, encoding="utf-8") as f:
            print(report(json.load(f), args.markdown))
        return 0
    databases = {d.strip() for d in args.databases.split(",") if d.strip()}
    unknown = databases - {"sqlite", "postgresql"}
    if unknown:
        print(f"unknown databases: {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    params = MODES["quick" if args.quick else "full"]
    if args.rounds:
        params = dataclasses.replace(params, rounds=args.rounds)
    missing = backend_available()
    router = TaskTableRouter()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="lk-bench-django-") as tmp:
        sqlite_path = os.path.join(tmp, "tasks.sqlite3")
        configure_django(sqlite_path, f"lk_bench_{os.getpid()}", router, missing is None)
        with postgresql_database("postgresql" in databases) as pg_missing:
            aliases = ["default"] if "sqlite" in databases else []
            if pg_missing is None:
                aliases.append("postgresql")
            migrate(aliases, router)
            rows = build_rows(aliases, missing is None)
            pg_note = pg_missing or "a database of its own, lk_bench_<pid>, dropped at the end"
            print(f"rows: {', '.join(r.name for r in rows)}", file=sys.stderr)
            print(f"PostgreSQL: {pg_note}", file=sys.stderr)
            outcome = run_rounds(rows, params, router)
            loopkeeper.shutdown(timeout=10)
    result: dict[str, Any] = {
        "meta": {
            "python": platform.python_version(),
            "versions": versions(DISTRIBUTIONS),
            "loopkeeper_source": loopkeeper_source(),
            "mode": "quick" if args.quick else "full",
            "rounds": params.rounds,
            "spaced_n": params.spaced_n,
            "batch_n": params.batch_n,
            "postgresql": pg_note,
            "backend": missing or BACKEND_PATH,
            "wall_s": time.monotonic() - started,
            "calibration_ms": calibration_summary(outcome.calibration),
        },
        "rows": [r.name for r in rows],
        "samples": outcome.samples,
        "errors": outcome.errors,
    }
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
    print(report(result, args.markdown))
    return 1 if outcome.errors else 0
