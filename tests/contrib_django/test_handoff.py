"""``OPTIONS["HANDOFF"]``: at shutdown, LoopkeeperBackend gives the tasks that have not
started to a durable backend instead of cancelling them.

The settings checks run in this process; the shutdown runs in a fresh interpreter (a
shutdown closes its default runner for good) on SQLite, with django-tasks-db's
``DatabaseBackend`` as the durable backend and its own ``db_worker`` run afterwards.  The
same on PostgreSQL, with ``db_worker`` as a separate process and 50 tasks, is in
``tests/django_engines/test_engines.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from loopkeeper.contrib.django._tasks_compat import task_backends

from . import tasks
from .conftest import BACKEND, ONE_SLOT_SCRIPT, run_django_script

DURABLE = {"BACKEND": "django_tasks_db.DatabaseBackend"}


@pytest.mark.parametrize(
    ("handoff", "durable", "message"),
    [
        (
            "default",
            DURABLE,
            (
                "OPTIONS['HANDOFF']: expected another alias of TASKS ('durable'), got 'default', "
                "this backend's own alias"
            ),
        ),
        (
            "elsewhere",
            DURABLE,
            (
                "OPTIONS['HANDOFF']: expected another alias of TASKS ('durable'), got "
                "'elsewhere', which TASKS does not have"
            ),
        ),
        (
            3,
            DURABLE,
            "OPTIONS['HANDOFF']: expected another alias of TASKS ('durable'), got int 3",
        ),
        (
            "durable",
            {"BACKEND": BACKEND},
            (
                "OPTIONS['HANDOFF']: 'durable' is a LoopkeeperBackend, which keeps nothing past "
                "this process"
            ),
        ),
    ],
    ids=["itself", "unknown-alias", "not-a-str", "not-durable"],
)
def test_a_bad_handoff_is_a_check_error_and_refuses_enqueue(
    handoff: object, durable: dict[str, str], message: str
) -> None:
    """A HANDOFF that names no other alias, or a backend that keeps nothing past the
    process, is a ``loopkeeper.E003`` naming what was given and what is allowed, and
    ``enqueue`` refuses with the same words before anything is queued."""
    configured = {
        "default": {"BACKEND": BACKEND, "OPTIONS": {"HANDOFF": handoff}},
        "durable": durable,
    }
    with override_settings(TASKS=configured):
        backend = task_backends["default"]
        errors = backend.check()
        assert [error.id for error in errors] == ["loopkeeper.E003"]
        assert message in errors[0].msg
        with pytest.raises(ImproperlyConfigured, match=r"OPTIONS\['HANDOFF'\]"):
            backend.enqueue(tasks.noop, [], {})


def test_a_durable_handoff_passes_the_checks() -> None:
    configured = {
        "default": {"BACKEND": BACKEND, "OPTIONS": {"HANDOFF": "durable"}},
        "durable": DURABLE,
    }
    with override_settings(TASKS=configured):
        assert task_backends["default"].check() == []


_SCRIPT = """
import asyncio, json, logging, sys, threading
from datetime import timedelta
import django
from django.conf import settings

settings.configure(
    INSTALLED_APPS=["loopkeeper.contrib.django", "django_tasks_db"] + EXTRA_APPS,
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "handoff.sqlite3"}},
    USE_TZ=True,
    LOGGING_CONFIG=None,
    LOOPKEEPER={"MAX_CONCURRENCY": 3},
    TASKS={
        "default": {
            "BACKEND": "loopkeeper.contrib.django.backends.LoopkeeperBackend",
            "QUEUES": ["default", "reports", "local-only"],
            "OPTIONS": {"HANDOFF": "durable"},
        },
        "durable": {
            "BACKEND": "django_tasks_db.DatabaseBackend",
            "QUEUES": ["default", "reports"],
        },
    },
)
django.setup()
logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(message)s")
from django.core.management import call_command
call_command("migrate", verbosity=0)

import loopkeeper
from django.utils import timezone
from django_tasks_db.models import DBTaskResult
from loopkeeper.contrib.django._tasks_compat import task
from loopkeeper.contrib.django.backends import idempotent

ran = []  # (label, where) for every run of record(), here or in the worker
held = threading.Event()
started = {"hold": threading.Event(), "hold_idempotent": threading.Event()}

@task
async def hold() -> None:
    started["hold"].set()
    await asyncio.Event().wait()

in_worker = False

@task
@idempotent
async def hold_idempotent() -> None:
    if in_worker:  # run again by the durable backend's worker: it finishes there
        ran.append("hold_idempotent")
        return
    started["hold_idempotent"].set()
    await asyncio.Event().wait()

@task
def record(label: str, where: str = "?") -> str:
    ran.append(label)
    return label

async def blocker() -> None:  # a plain submit(): not a Django task, never handed off
    held.set()
    await asyncio.Event().wait()

loopkeeper.submit(blocker, name="blocker")
assert held.wait(10)
results = {"hold": hold.enqueue(), "hold_idempotent": hold_idempotent.enqueue()}
assert all(event.wait(10) for event in started.values())
# The runner's three slots are held; the gate lets one more task of ours into the runner,
# where it waits for a slot: one the durable backend refuses (its queue is not there).
results["in_runner_refused"] = record.using(queue_name="local-only").enqueue("in_runner_refused")
results["low"] = record.using(priority=-5).enqueue("low")
results["high"] = record.using(priority=7, queue_name="reports").enqueue("high", where="kw")
results["queued_refused"] = record.using(queue_name="local-only").enqueue("queued_refused")
later = timezone.now() + timedelta(hours=1)
results["deferred"] = record.using(run_after=later).enqueue("deferred")

report = loopkeeper.shutdown(timeout=0.3)

out = {"ran_here": list(ran)}
for label, result in results.items():
    result.refresh()
    out[label] = [str(result.status), [e.exception_class_path for e in result.errors]]
out["handed_off"] = [[h.name, h.id, h.to, h.new_id, h.task_id] for h in report.handed_off]
out["ids"] = {label: result.id for label, result in results.items()}
out["abandoned"] = [info.name for info in report.abandoned]
out["cancelled"] = report.cancelled
out["clean"] = report.clean
out["repr"] = repr(report)
rows = {}
for row in DBTaskResult.objects.all():
    rows[str(row.id)] = {
        "task_path": row.task_path,
        "args_kwargs": row.args_kwargs,
        "priority": row.priority,
        "queue_name": row.queue_name,
        "run_after": row.run_after.isoformat(),
        "status": row.status,
    }
out["rows"] = rows
out["later"] = later.isoformat()
del ran[:]
in_worker = True
call_command("db_worker", "--batch", "--no-startup-delay", "--no-reload", "--queue-name", "*",
             "--backend", "durable", "--interval", "0.05", verbosity=0)
out["ran_by_worker"] = list(ran)
print(json.dumps(out))
"""


def run_script(tmp_path: Path) -> dict[str, Any]:
    seen, stderr = run_django_script(tmp_path, _SCRIPT)
    return {**seen, "stderr": stderr}


@pytest.fixture(scope="module")
def seen(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return run_script(tmp_path_factory.mktemp("handoff"))


def test_unstarted_tasks_are_handed_off_with_their_priority_queue_and_run_after(
    seen: dict[str, Any],
) -> None:
    """Tasks waiting for a slot (highest priority first) and the deferred one are each
    enqueued on the durable backend with the same task path, arguments, priority, queue
    and ``run_after``; nothing ran here; the report names each with its new id."""
    assert seen["ran_here"] == []
    ids = seen["ids"]
    handed = {name_id[1]: name_id for name_id in seen["handed_off"]}
    order = [entry[1] for entry in seen["handed_off"]]
    assert order == [ids["high"], ids["low"], ids["deferred"], ids["hold_idempotent"]]
    path = "__main__.record"
    expected = {
        "high": ({"args": ["high"], "kwargs": {"where": "kw"}}, 7, "reports"),
        "low": ({"args": ["low"], "kwargs": {}}, -5, "default"),
        "deferred": ({"args": ["deferred"], "kwargs": {}}, 0, "default"),
    }
    for label, (args_kwargs, priority, queue) in expected.items():
        name, _, to, new_id, task_id = handed[ids[label]]
        assert (name, to, task_id) == (path, "tasks backend 'durable'", None)
        row = seen["rows"][new_id]
        assert row["task_path"] == path
        assert row["args_kwargs"] == args_kwargs
        assert (row["priority"], row["queue_name"], row["status"]) == (priority, queue, "READY")
    assert seen["rows"][handed[ids["deferred"]][3]]["run_after"] == seen["later"]
    # Handed off, they stay READY here: their result is the durable backend's now.
    for label in ("high", "low", "deferred"):
        assert seen[label] == ["READY", []]


def test_a_started_idempotent_task_is_handed_off_and_cancelled_here(
    seen: dict[str, Any],
) -> None:
    """A running ``@idempotent`` task is enqueued there too, and cancelled here (its loopkeeper
    task is named in ``task_id`` and not counted as cancelled); a running task that is
    not idempotent is cancelled, as without HANDOFF."""
    name, _, _, new_id, task_id = seen["handed_off"][-1]
    assert name == "__main__.hold_idempotent"
    assert isinstance(task_id, int)
    assert seen["rows"][new_id]["task_path"] == "__main__.hold_idempotent"
    assert seen["hold_idempotent"] == ["FAILED", ["asyncio.exceptions.CancelledError"]]
    assert seen["hold"] == ["FAILED", ["asyncio.exceptions.CancelledError"]]
    # hold, the plain blocker, and the deferred task's timer set-up (waiting for a slot).
    assert seen["cancelled"] == 3


def test_a_refused_hand_off_leaves_the_task_here_named(seen: dict[str, Any]) -> None:
    """A task whose hand-off the durable backend refuses (its queue is not there) is never
    half-queued: one in the runner is abandoned, and named in the report; one queued in
    front of the runner fails with the durable backend's exception.  The log line names
    both, with the error."""
    assert len(seen["rows"]) == 4  # the four handed off, nothing else
    assert seen["abandoned"] == ["__main__.record"]
    assert seen["in_runner_refused"] == ["FAILED", ["loopkeeper.TaskAbandonedError"]]
    (path,) = seen["queued_refused"][1]
    assert path.rsplit(".", 1)[-1] in {"InvalidTask", "InvalidTaskError"}
    assert seen["queued_refused"][0] == "FAILED"
    failed = [line for line in seen["stderr"].splitlines() if "shutdown_hand_off_failed" in line]
    assert len(failed) == 1, seen["stderr"]
    for label in ("in_runner_refused", "queued_refused"):
        assert seen["ids"][label] in failed[0]
    assert "failed=2" in failed[0]
    assert "InvalidTask" in failed[0]
    assert seen["clean"] is False


def test_the_log_line_and_the_report_name_each_hand_off(seen: dict[str, Any]) -> None:
    (line,) = [line for line in seen["stderr"].splitlines() if "shutdown_handed_off " in line]
    assert "handed_off=4" in line
    for _, old_id, _, new_id, _ in seen["handed_off"]:
        assert f"{old_id} -> tasks backend 'durable' {new_id}" in line
        assert f"{old_id} -> tasks backend 'durable' {new_id}" in seen["repr"]


def test_the_durable_worker_runs_each_handed_off_task_once(seen: dict[str, Any]) -> None:
    """django-tasks-db's own ``db_worker`` then runs the tasks handed off that are due
    (not the deferred one: its time has not come), once each, highest priority first."""
    assert seen["ran_by_worker"] == ["high", "hold_idempotent", "low"]
    assert seen["ran_here"] == []


_MANY_WAITING_SCRIPT = (
    ONE_SLOT_SCRIPT.format(max_pending=5_000)
    + """
hold.enqueue()
assert started.wait(10)
results = [waiting.enqueue() for _ in range(3_000)]
loopkeeper.shutdown(timeout=0.1)
# The slot is freed by the held task's done callback, on the loop thread, which may still
# be refusing the waiting tasks when shutdown() returns: wait (10 s at most) for the last.
results[-1].refresh()
deadline = time.monotonic() + 10
while str(results[-1].status).endswith("READY") and time.monotonic() < deadline:
    time.sleep(0.01)
    results[-1].refresh()
seen = {}
for result in results:
    result.refresh()
    key = f"{result.status} {[e.exception_class_path for e in result.errors]}"
    seen[key] = seen.get(key, 0) + 1
print(json.dumps(seen))
"""
)


def test_thousands_waiting_for_a_slot_at_shutdown_all_fail_with_runner_closed(
    tmp_path: Path,
) -> None:
    """Without HANDOFF, 3,000 tasks waiting for the one slot when the runner closes each end
    FAILED with RunnerClosedError: the slot freed at the deadline refuses them one after
    the other (it used to recurse once per task, and ended in RecursionError with most of
    them left READY)."""
    seen, stderr = run_django_script(tmp_path, _MANY_WAITING_SCRIPT)
    assert seen == {"FAILED ['loopkeeper.RunnerClosedError']": 3_000}, stderr[-2000:]
    assert "RecursionError" not in stderr
