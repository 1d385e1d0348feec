"""Faults that need a whole process: exit and fork with work in flight, and a finalizer
that could deadlock the runner (a child interpreter, so that a deadlock fails the test
instead of hanging the suite).

Built on ``tests/test_process.py``: its child-interpreter helpers, its ``EXIT_BEGAN``
gate (a task gated on it provably runs after the interpreter began to exit) and its
``fork()`` definition.  That file covers one task at a time; these tests put every kind
of work in flight at once.  ``./scripts/test`` runs them on every Python 3.10-3.13.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Final

import pytest

from test_process import (  # the helpers of the single-task process tests
    EXIT_BEGAN,
    OS_FORK,
    _assert_no_exit_noise,
    _Child,
    _lines_with,
    _run,
    _script,
)

if TYPE_CHECKING:
    from ._support import Figures

DEADLOCK_DEADLINE: Final = 15.0  # seconds a child may take to get past the finalizers

needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork()")

# -- exit with every kind of work in flight ----------------------------------------------------

EXIT_PROLOGUE: Final = """
import asyncio
import logging
import sys
import time
from pathlib import Path

import loopkeeper

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
"""

EXIT_TASKS: Final = """
from asgiref.sync import sync_to_async  # imported at start-up, as Django does

out = Path(sys.argv[1])


def mark(name):
    (out / name).write_text("finished")


def blocking(name):
    time.sleep(0.2)  # stands for blocking I/O: a query, a file, a request
    return name


async def plain_coroutine():
    await wait_until_exit_began()
    await asyncio.sleep(0.2)
    mark("plain_coroutine")


def sync_task():
    _exit_began.wait(20)
    mark(blocking("sync_task"))


async def via_to_thread():
    await wait_until_exit_began()
    mark(await asyncio.to_thread(blocking, "via_to_thread"))


async def via_run_in_executor():
    await wait_until_exit_began()
    loop = asyncio.get_running_loop()
    mark(await loop.run_in_executor(None, blocking, "via_run_in_executor"))


async def via_run_in_thread():
    await wait_until_exit_began()
    mark(await loopkeeper.run_in_thread(blocking, "via_run_in_thread"))


async def via_sync_to_async():
    await wait_until_exit_began()
    mark(await sync_to_async(blocking, thread_sensitive=THREAD_SENSITIVE)("via_sync_to_async"))


async def submits_during_exit():
    await wait_until_exit_began()
    try:
        loopkeeper.submit(plain_coroutine)
    except loopkeeper.RunnerClosedError:
        mark("submits_during_exit")  # the drain began: new work is refused, not lost


for task in TASKS:
    loopkeeper.submit(task, name=task.__name__)
"""

EVERY_KIND: Final = (
    "plain_coroutine",
    "sync_task",
    "via_to_thread",
    "via_run_in_executor",
    "via_run_in_thread",
    "via_sync_to_async",
    "submits_during_exit",
)


def _exit_script(tmp_path: Path, tasks: tuple[str, ...], thread_sensitive: bool) -> Path:
    return _script(
        tmp_path,
        EXIT_PROLOGUE,
        EXIT_BEGAN,
        EXIT_TASKS.replace("TASKS", f"[{', '.join(tasks)}]").replace(
            "THREAD_SENSITIVE", repr(thread_sensitive)
        ),
    )


def test_exit_drain_finishes_every_kind_of_work_in_flight(tmp_path: Path, figures: Figures) -> None:
    """At interpreter exit, with work of every kind in flight at once and each piece
    starting only after the exit began (a coroutine, a sync task, ``asyncio.to_thread``,
    ``run_in_executor(None, ...)``, ``loopkeeper.run_in_thread``,
    ``sync_to_async(thread_sensitive=False)``), the drain lets all of it finish; a submit
    made during the drain is refused with ``RunnerClosedError`` (never silently dropped);
    the report counts all seven, and stderr has no noise."""
    out = tmp_path / "out"
    out.mkdir()
    script = _exit_script(tmp_path, EVERY_KIND, thread_sensitive=False)

    result = _run(script, str(out))

    figures.faults += 1
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(EVERY_KIND), result.stderr
    assert "task_failed" not in result.stderr, result.stderr
    started = _lines_with(result.stderr, "shutdown_started")
    assert len(started) == 1, result.stderr
    assert f"unfinished={len(EVERY_KIND)}" in started[0]
    completed = _lines_with(result.stderr, "shutdown_completed")
    assert len(completed) == 1, result.stderr
    assert f"completed={len(EVERY_KIND)}" in completed[0]
    _assert_no_exit_noise(result.stderr)


def test_exit_drain_finishes_a_default_sync_to_async_call(tmp_path: Path, figures: Figures) -> None:
    """The same for asgiref's default ``sync_to_async(func)`` (``thread_sensitive=True``),
    the form Django code uses: called only after the exit began, it still runs and the task
    finishes.  (On CPython 3.12.0-3.12.2 no thread can start at that point, gh-113964, and
    asgiref's single-thread executor starts its thread on first use: the runner starts it
    when its loop starts.)"""
    out = tmp_path / "out"
    out.mkdir()
    script = _exit_script(tmp_path, ("via_sync_to_async",), thread_sensitive=True)

    result = _run(script, str(out))

    figures.faults += 1
    assert result.returncode == 0, result.stderr
    assert "task_failed" not in result.stderr, result.stderr
    assert [p.name for p in out.iterdir()] == ["via_sync_to_async"], result.stderr
    _assert_no_exit_noise(result.stderr)


# -- fork with work in flight ------------------------------------------------------------------

FORK_IN_FLIGHT: Final = """
import asyncio
import json
import os
import sys
import threading
import warnings
from pathlib import Path

import loopkeeper

journal = Path(sys.argv[1])  # every task writes "pid name event" here
journal_lock = threading.Lock()


def note(name, event):
    with journal_lock, journal.open("a") as f:
        f.write(f"{os.getpid()} {name} {event}\\n")


loopkeeper.configure(max_concurrency=4)  # some tasks wait for a slot: queued, not running
gate = threading.Event()


async def parked(name):
    note(name, "started")
    while not gate.is_set():
        await asyncio.sleep(0.005)
    note(name, "finished")


def sync_parked(name):
    note(name, "started")
    gate.wait(30)
    note(name, "finished")


async def via_thread(name):
    note(name, "started")
    await asyncio.to_thread(gate.wait, 30)
    note(name, "finished")


FORK_DEFINITION

handles = []
handles_lock = threading.Lock()
for i, kind in enumerate([parked, sync_parked, via_thread, parked, sync_parked, parked]):
    name = f"{kind.__name__}-{i}"
    handles.append(loopkeeper.submit(kind, name, name=name))
stop = threading.Event()
streaming = threading.Event()


def keep_submitting():  # submits while the fork happens: some posts are in the inbox
    i = 0
    while not stop.is_set():
        name = f"stream-{i}"
        with handles_lock:
            handles.append(loopkeeper.submit(parked, name, name=name))
        streaming.set()
        i += 1
        stop.wait(0.0005)


submitter = threading.Thread(target=keep_submitting)
submitter.start()
assert streaming.wait(10)
sys.stdout.flush()
sys.stderr.flush()
pid = fork()
if pid == 0:
    journal_lock = threading.Lock()  # a parent thread may have held it at the fork
    err = os.open(sys.argv[3], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(err, 2)
    os.close(err)
    seen = {}
    try:
        runner = loopkeeper.get_runner()
        stats = runner.stats()
        seen["inherited"] = [stats.submitted, stats.pending, stats.running]
        gate.set()  # the child's copy: would let a parent task that ran here finish too
        seen["own"] = runner.submit(sync_parked, "child-own").result(10)
        seen["own_stats"] = [runner.stats().submitted, runner.stats().succeeded]
    except BaseException as exc:
        seen["error"] = repr(exc)
    Path(sys.argv[2]).write_text(json.dumps(seen))
    sys.exit(0)  # a normal exit: the child's exit hook runs

_, status = os.waitpid(pid, 0)
stop.set()
submitter.join(10)
gate.set()
with handles_lock:
    every = list(handles)
for h in every:
    h.result(30)
outcomes = sorted({h.state.name for h in every})
stats = loopkeeper.get_runner().stats()
print(json.dumps({
    "child": pid,
    "child_exit_code": os.waitstatus_to_exitcode(status),
    "handles": len(every),
    "outcomes": outcomes,
    "stats": [stats.submitted, stats.succeeded, stats.pending, stats.running],
}), flush=True)
"""


@needs_fork
def test_fork_with_work_in_flight_gives_the_child_none_of_it(
    tmp_path: Path, figures: Figures
) -> None:
    """Fork while the parent has work of every kind in flight: coroutines running and
    queued for a ``max_concurrency`` slot, sync tasks in worker threads, ``to_thread`` jobs,
    and a thread submitting continuously (so some tasks sit in the loop's inbox at the
    moment of the fork).  The child's default runner starts empty (nothing inherited), works
    for its own tasks, and none of the parent's tasks ever runs there (no journal line
    carries the child's pid but its own tasks'); its exit drain waits for none of them.
    In the parent every task then finishes, counted exactly."""
    journal = tmp_path / "journal"
    child_seen = tmp_path / "child.json"
    child_stderr = tmp_path / "child.stderr"
    script = _script(tmp_path, FORK_IN_FLIGHT.replace("FORK_DEFINITION", OS_FORK))

    result = _run(script, str(journal), str(child_seen), str(child_stderr))

    figures.faults += 1
    assert result.returncode == 0, result.stderr
    parent = json.loads(result.stdout)
    seen = json.loads(child_seen.read_text())
    assert seen == {"inherited": [0, 0, 0], "own": None, "own_stats": [1, 1]}, seen
    assert parent["child_exit_code"] == 0
    assert parent["outcomes"] == ["SUCCEEDED"]
    count = parent["handles"]
    assert parent["stats"] == [count, count, 0, 0]
    lines = [line.split() for line in journal.read_text().splitlines()]
    in_child = sorted({name for pid, name, _ in lines if int(pid) == parent["child"]})
    assert in_child == ["child-own"], f"parent tasks ran in the child: {in_child}"
    child_pid = str(parent["child"])
    finished = [name for pid, name, event in lines if event == "finished" and pid != child_pid]
    assert len(finished) == count == len(set(finished)), "a parent task finished twice or never"
    child_log = child_stderr.read_text()
    assert "shutdown_started" not in child_log, child_log
    _assert_no_exit_noise(child_log)
    _assert_no_exit_noise(result.stderr)


# -- a finalizer that calls back into the runner ------------------------------------------------

FINALIZER_SCRIPT: Final = """
import asyncio
import json
import threading
import weakref

import loopkeeper

runner = loopkeeper.Runner(name="finalizers", max_concurrency=1)
results = {}


class Connection:  # stands for a client whose finalizer closes it asynchronously
    pass


async def close_connection(n):
    return f"closed {n}"


def finalize(n):  # weakref.finalize(conn, ...): submit the async close when conn goes away
    try:
        results[f"close_{n}"] = runner.submit(close_connection, n)
    except loopkeeper.RunnerClosedError:
        results[f"close_{n}"] = "refused: shut down"


async def holds_the_slot(gate):
    while not gate.is_set():
        await asyncio.sleep(0.005)


async def use(conn):
    return "used"


first_gate = threading.Event()
runner.submit(holds_the_slot, first_gate, name="holder-1")  # the next task must wait
conn = Connection()
weakref.finalize(conn, finalize, 1)
waiting = runner.submit(use, conn, name="cancelled-while-pending")
del conn  # the task's argument is now the only reference
print("cancelling a pending task", flush=True)
results["cancel"] = waiting.cancel()
print("cancelled", flush=True)
first_gate.set()
results["close_1"] = results["close_1"].result(10)

second_gate = threading.Event()
runner.submit(holds_the_slot, second_gate, name="holder-2")
conn = Connection()
weakref.finalize(conn, finalize, 2)
runner.submit(use, conn, name="abandoned-while-pending")
del conn
print("abandoning a pending task", flush=True)
report = runner.shutdown(timeout=0.05, cancel_remaining=False)
print("abandoned", flush=True)
second_gate.set()
results["abandoned"] = sorted(i.name for i in report.abandoned)
print(json.dumps(results), flush=True)
"""


def test_finalizer_submitting_cleanup_cannot_deadlock_cancel_or_shutdown(
    tmp_path: Path, figures: Figures
) -> None:
    """A common pattern: a client object whose finalizer submits its async close
    (``weakref.finalize(conn, runner.submit, close)``).  When a task's argument holds the
    last reference to it and that task is cancelled while pending, or abandoned by a
    shutdown while pending, the finalizer runs as the argument is released.  That must not
    happen while the runner holds its own lock: ``cancel()`` and ``shutdown()`` return, the
    first close runs, the second is refused (the runner is shut down), and nothing hangs.
    (In a child interpreter: a deadlock kills the child, not the test run.)"""
    script = _script(tmp_path, FINALIZER_SCRIPT)

    with _Child(script) as child:
        try:
            returncode = child.wait(DEADLOCK_DEADLINE)
        except Exception:  # noqa: BLE001  subprocess.TimeoutExpired: reported below
            stdout = child.text("stdout")
            last = stdout.splitlines()[-1] if stdout else "(nothing)"
            pytest.fail(
                f"the child deadlocked after printing {last!r}: a finalizer ran while the "
                f"runner held its lock; stderr={child.text('stderr')!r}"
            )

    figures.faults += 2
    stdout, stderr = child.text("stdout"), child.text("stderr")
    assert returncode == 0, stderr
    assert json.loads(stdout.splitlines()[-1]) == {
        "cancel": True,
        "close_1": "closed 1",
        "close_2": "refused: shut down",
        "abandoned": ["abandoned-while-pending", "holder-2"],
    }
