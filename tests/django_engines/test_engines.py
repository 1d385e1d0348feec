"""The same ``@task`` code runs unchanged on an in-process backend and on two distributed engines.

``tests/django_engines/enginesite`` is a small Django project: ``tasks.py`` holds one sync and
one async ``@task`` (each writes a ``TaskRun`` row and returns a JSON value), and the
``engine_demo`` command enqueues them or reads their results back.  The environment variable
``LK_ENGINE`` changes ``settings.TASKS["default"]`` and nothing else:

- ``loopkeeper``: ``LoopkeeperBackend``: the tasks run in the process that enqueues them;
- ``database``: django-tasks-db's ``DatabaseBackend`` on PostgreSQL, run by its ``db_worker``;
- ``rq``: django-tasks-rq's ``RQBackend`` on Redis, run by django-rq's ``rqworker``.

Every Django process is a subprocess (this pytest process never configures Django): the
project's own database ``lk_engines_<pid>`` is created here, migrated by ``manage.py migrate``
and dropped at the end; the RQ queue is named after it too, so no other run's worker takes its
jobs.  Workers are stopped by PID in a ``finally``.  PostgreSQL (127.0.0.1:5432) or Redis
(127.0.0.1:6379) missing skips the tests that need it, except under ``CI=true``, where it fails.
"""

from __future__ import annotations

import getpass
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest

psycopg = pytest.importorskip("psycopg", reason="psycopg (the dev group's) is not installed")

HERE: Final = Path(__file__).resolve().parent
COMMAND_DEADLINE: Final = 120.0  # seconds for one manage.py command, Django's startup included
RESULT_DEADLINE: Final = 120.0  # seconds for a worker to start and run both tasks
STOP_DEADLINE: Final = 30.0  # seconds for a worker to exit after SIGTERM
PG: Final = {
    "host": "127.0.0.1",
    "port": 5432,
    "user": os.environ.get("PGUSER") or getpass.getuser(),
}
REDIS_DB: Final = 0

pytestmark = [
    pytest.mark.skipif(sys.platform == "win32", reason="workers are stopped by POSIX signals"),
    pytest.mark.timeout(300),  # a cold Django start costs seconds on a loaded 2-core machine
]


def unavailable(reason: str) -> None:
    """Skip, or fail under CI (where every service must be there)."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: a missing service is a failure)")
    pytest.skip(reason)


def require_module(name: str, engine: str) -> None:
    if importlib.util.find_spec(name) is None:
        unavailable(f"{name} is not installed: the {engine} engine cannot run here")


@dataclass(frozen=True)
class Site:
    """The test project, with its own database and queue."""

    database: str

    @property
    def queue(self) -> str:
        return self.database

    def env(self, engine: str, **extra: str) -> dict[str, str]:
        env = dict(os.environ, **extra)
        env.update(
            PYTHONPATH=os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")])),
            DJANGO_SETTINGS_MODULE="enginesite.settings",
            LK_ENGINE=engine,
            LK_ENGINES_DB=self.database,
            LK_ENGINES_QUEUE=self.queue,
            LK_ENGINES_REDIS_DB=str(REDIS_DB),
        )
        return env

    def manage(self, engine: str, *args: str) -> str:
        """Run ``manage.py ARGS`` to completion; its stdout."""
        done = subprocess.run(
            [sys.executable, "-m", "django", *args],
            env=self.env(engine),
            capture_output=True,
            text=True,
            timeout=COMMAND_DEADLINE,
            check=False,
        )
        assert done.returncode == 0, f"manage.py {' '.join(args)} failed:\n{done.stderr}"
        return done.stdout

    def demo(self, engine: str, *args: str) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(self.manage(engine, "engine_demo", *args))
        return out

    def rows(self, token: str) -> dict[str, tuple[int, int]]:
        """The rows the tasks wrote for ``token``: kind -> (pid, ppid)."""
        with psycopg.connect(dbname=self.database, **PG) as conn:
            found = conn.execute(
                "SELECT kind, pid, ppid FROM enginesite_taskrun WHERE token = %s", (token,)
            ).fetchall()
        assert len(found) == len({kind for kind, _, _ in found}), f"a task ran twice: {found}"
        return {kind: (pid, ppid) for kind, pid, ppid in found}


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    """The project's database, created and migrated for this module, dropped after it."""
    require_module("django_tasks_db", "database")  # its app is in INSTALLED_APPS: migrate needs it
    require_module("django_rq", "rq")
    database = f"lk_engines_{os.getpid()}"
    try:
        admin = psycopg.connect(dbname="test", autocommit=True, connect_timeout=5, **PG)
    except psycopg.OperationalError as exc:
        unavailable(f"PostgreSQL at 127.0.0.1:5432 (database 'test') is not reachable: {exc}")
    with admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{database}"')
        try:
            made = Site(database)
            made.manage("loopkeeper", "migrate", "--verbosity", "0")
            yield made
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


@pytest.fixture
def redis_jobs(site: Site) -> Iterator[list[str]]:
    """Redis reachable; afterwards, the keys of this queue and of the job ids listed go."""
    require_module("django_tasks_rq", "rq")
    import redis  # noqa: PLC0415  only the RQ engine needs it, and it may be absent

    client = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB, socket_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        unavailable(f"Redis at 127.0.0.1:6379 is not reachable: {exc}")
    job_ids: list[str] = []
    try:
        yield job_ids
    finally:
        keys = [*client.scan_iter(match=f"*{site.queue}*")]
        keys += [key for job in job_ids for key in client.scan_iter(match=f"rq:*{job}*")]
        if keys:
            client.delete(*keys)
        client.srem("rq:queues", f"rq:queue:{site.queue}")  # RQ's registry of queue names
        client.close()


def stop(worker: subprocess.Popen[bytes]) -> int:
    """SIGTERM, as a process manager stops a worker; SIGKILL if it is still there later."""
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
    try:
        return worker.wait(STOP_DEADLINE)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait(STOP_DEADLINE)
        raise


EXPECTED: Final = [
    ("enginesite.tasks.record_sync", {"kind": "sync", "doubled": 42}),
    ("enginesite.tasks.record_async", {"kind": "async", "incremented": 42}),
]


def outcomes(report: dict[str, Any]) -> list[tuple[str, str, Any]]:
    return [(r["task"], r["status"], r["return_value"]) for r in report["results"]]


def test_tasks_run_in_the_enqueuing_process_on_loopkeeper_backend(site: Site) -> None:
    """With ``LoopkeeperBackend`` both tasks run inside the process that enqueued them, and
    their results live there only: another process of the project cannot fetch them.  The
    baseline the distributed engines are compared with."""
    token = uuid.uuid4().hex
    report = site.demo("loopkeeper", "enqueue", token, "--wait", str(RESULT_DEADLINE))

    assert report["backend"].rsplit(".", 1)[-1] == "LoopkeeperBackend"
    assert outcomes(report) == [(path, "SUCCESSFUL", value) for path, value in EXPECTED]
    ran_in = {kind: pid for kind, (pid, _) in site.rows(token).items()}
    assert ran_in == {"sync": report["pid"], "async": report["pid"]}
    elsewhere = site.demo("loopkeeper", "results", *[r["id"] for r in report["results"]])
    assert [r["status"] for r in elsewhere["results"]] == ["MISSING", "MISSING"]


@dataclass(frozen=True)
class Engine:
    backend: str  # the class settings.TASKS names for it
    worker: tuple[str, ...]  # its worker's manage.py command, {queue} and {worker} filled in
    module: str  # the package it needs


ENGINES: Final = {
    "database": Engine(
        "DatabaseBackend",
        (
            *("db_worker", "--queue-name", "{queue}", "--worker-id", "{worker}"),
            *("--interval", "0.1", "--no-startup-delay", "--no-reload"),
        ),
        "django_tasks_db",
    ),
    "rq": Engine(
        "RQBackend",
        ("rqworker", "--job-class", "django_tasks_rq.Job", "--name", "{worker}", "{queue}"),
        "django_tasks_rq",
    ),
}


@pytest.mark.parametrize("engine", ENGINES)
def test_same_tasks_run_unchanged_on_a_distributed_engine_by_its_own_worker(
    site: Site, engine: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Switching ``TASKS["default"]["BACKEND"]`` to a distributed engine moves the same sync and
    async tasks into that engine's real worker process: enqueueing with no worker running leaves
    both READY in the durable queue; a worker started afterwards runs them (the rows they write
    carry its PID, or for RQ its forked child's, never the enqueuer's); and a third process that
    enqueued nothing fetches both results by id with the worker's id on them."""
    spec = ENGINES[engine]
    require_module(spec.module, engine)
    job_ids: list[str] = request.getfixturevalue("redis_jobs") if engine == "rq" else []
    token = uuid.uuid4().hex
    worker_id = f"lk-engines-{os.getpid()}-{token[:8]}"

    enqueued = site.demo(engine, "enqueue", token)
    assert enqueued["backend"].rsplit(".", 1)[-1] == spec.backend
    ids = [r["id"] for r in enqueued["results"]]
    job_ids.extend(ids)
    assert [(r["task"], r["status"]) for r in enqueued["results"]] == [
        (path, "READY") for path, _ in EXPECTED
    ], "a task ran before any worker existed"
    assert site.rows(token) == {}

    log = tmp_path / f"{engine}-worker.log"
    argv = [part.format(queue=site.queue, worker=worker_id) for part in spec.worker]
    with log.open("wb") as sink:
        worker = subprocess.Popen(
            [sys.executable, "-m", "django", *argv],
            env=site.env(engine),
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        fetched = site.demo(engine, "results", *ids, "--wait", str(RESULT_DEADLINE))
    finally:
        try:
            returncode = stop(worker)
        finally:
            print(f"{engine} worker log:\n{log.read_text(errors='replace')}")  # shown on failure

    assert fetched["pid"] != enqueued["pid"]
    assert outcomes(fetched) == [(path, "SUCCESSFUL", value) for path, value in EXPECTED]
    assert [r["worker_ids"] for r in fetched["results"]] == [[worker_id], [worker_id]]
    rows = site.rows(token)
    assert rows.keys() == {"sync", "async"}
    for kind, (pid, ppid) in rows.items():
        assert worker.pid in (pid, ppid), (
            f"{kind} task ran in pid {pid} (parent {ppid}), not in the worker"
        )
    assert returncode == 0, "the worker did not exit cleanly on SIGTERM"


HANDED_OFF: Final = re.compile(r"(?P<old>[0-9a-f]{32}) -> tasks backend 'durable' (?P<new>[\w-]+)")


@pytest.mark.parametrize("durable", ENGINES)
def test_tasks_a_short_drain_cannot_run_are_handed_off_and_run_once_by_the_durable_worker(
    site: Site, durable: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """``LoopkeeperBackend`` with ``OPTIONS["HANDOFF"]`` naming a durable backend
    (django-tasks-db's on PostgreSQL, or django-tasks-rq's on Redis): a process queues 50
    tasks under ``MAX_CONCURRENCY`` 2 and exits; its exit drain (``SHUTDOWN_TIMEOUT`` 1 s)
    runs some and hands the rest off, naming each with its new id.  The durable backend's
    own worker (``db_worker``, ``rqworker``), started afterwards, runs those.  Across the
    two processes every task ran exactly once."""
    spec = ENGINES[durable]
    require_module(spec.module, durable)
    job_ids: list[str] = request.getfixturevalue("redis_jobs") if durable == "rq" else []
    env = site.env("handoff", LK_HANDOFF_TO=durable)
    count = 50
    token = uuid.uuid4().hex
    enqueuer = subprocess.run(
        [sys.executable, "-m", "django", "engine_demo", "many", token, str(count)],
        env=env,
        capture_output=True,
        text=True,
        timeout=COMMAND_DEADLINE,
        check=False,
    )
    assert enqueuer.returncode == 0, enqueuer.stderr
    enqueued = json.loads(enqueuer.stdout)
    (line,) = [line for line in enqueuer.stderr.splitlines() if "shutdown_handed_off" in line]
    handed = {m["old"]: m["new"] for m in HANDED_OFF.finditer(line)}
    job_ids.extend(handed.values())
    ran_here = {kind for kind, (pid, _) in site.rows(token).items() if pid == enqueued["pid"]}
    assert f"handed_off={len(handed)}" in line
    assert handed, "the drain ran everything: the test proves nothing"
    assert ran_here, "nothing ran in the enqueuing process"
    assert set(handed) <= set(enqueued["ids"])
    assert len(ran_here) + len(handed) == count, enqueuer.stderr

    worker_id = f"lk-handoff-{os.getpid()}-{token[:8]}"
    log = tmp_path / f"{durable}-worker.log"
    argv = [part.format(queue=site.queue, worker=worker_id) for part in spec.worker]
    if durable == "database":
        argv += ["--backend", "durable"]  # db_worker runs one backend alias's tasks
    with log.open("wb") as sink:
        worker = subprocess.Popen(  # the project's own worker for its "durable" backend
            [sys.executable, "-m", "django", *argv], env=env, stdout=sink, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + RESULT_DEADLINE
        while len(rows := site.rows(token)) < count:  # site.rows fails on a task run twice
            assert time.monotonic() < deadline, f"{len(rows)}/{count} rows: {log.read_text()}"
            time.sleep(0.1)  # a poll: the deadline above bounds it
        fetched = json.loads(
            subprocess.run(
                [sys.executable, "-m", "django", "engine_demo", "durable", *handed.values()],
                env=env,
                capture_output=True,
                text=True,
                timeout=COMMAND_DEADLINE,
                check=True,
            ).stdout
        )
    finally:
        try:
            returncode = stop(worker)
        finally:
            print(f"{durable} worker log:\n{log.read_text(errors='replace')}")  # shown on failure

    rows = site.rows(token)
    assert rows.keys() == {f"n{n}" for n in range(count)}
    by_worker = {kind for kind, (pid, ppid) in rows.items() if worker.pid in (pid, ppid)}
    assert by_worker == {f"n{n}" for n in range(count)} - ran_here
    assert len(by_worker) == len(handed)
    assert [r["status"] for r in fetched["results"]] == ["SUCCESSFUL"] * len(handed)
    assert returncode == 0
