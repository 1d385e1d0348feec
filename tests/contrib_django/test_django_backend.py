"""LoopkeeperBackend against what Django's own task tests hold a backend to.

Modelled on Django's ``tests/tasks/test_immediate_backend.py`` and ``test_tasks.py`` and
on django-tasks-db's tests, run in-process on the session's default runner
(``MAX_CONCURRENCY`` 2, see conftest.py): Django 6 on Python >= 3.12, Django 5.2 with the
django-tasks backport below.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.test import override_settings
from django.utils import timezone, translation

import loopkeeper
from loopkeeper.contrib.django._tasks_compat import (
    LOGGER_NAME,
    InvalidTask,
    TaskResult,
    TaskResultDoesNotExist,
    TaskResultStatus,
    default_task_backend,
    task_backends,
    task_enqueued,
    task_started,
)
from loopkeeper.contrib.django.backends import DEFAULT_MAX_RESULTS, LoopkeeperBackend
from loopkeeper.contrib.django.hygiene import DjangoHooks

from . import tasks
from .conftest import BACKEND, ONE_SLOT_SCRIPT, WaitFinished, run_django_script

# -- the backend and its settings ----------------------------------------------------------


def test_backend_is_loopkeeper_and_supports_every_feature() -> None:
    """The settings' backend is a LoopkeeperBackend claiming async tasks, defer,
    results and priority; its options are what the settings gave (none)."""
    backend = task_backends["default"]
    assert isinstance(backend, LoopkeeperBackend)
    assert default_task_backend.alias == "default"
    assert backend.options == {}
    assert backend.supports_async_task is True
    assert backend.supports_defer is True
    assert backend.supports_get_result is True
    assert backend.supports_priority is True
    assert backend.check() == []


def test_options_stay_what_the_settings_gave() -> None:
    """``self.options`` is the settings' OPTIONS dict, unchanged by reading it."""
    options = {"MAX_RESULTS": 5}
    with override_settings(TASKS={"default": {"BACKEND": BACKEND, "OPTIONS": options}}):
        backend = task_backends["default"]
        assert backend.options is options
        assert options == {"MAX_RESULTS": 5}


def test_bad_options_are_check_errors_and_refuse_enqueue() -> None:
    """Bad OPTIONS never crash the backend's construction: ``check()`` names each bad
    key (loopkeeper.E003) and ``enqueue`` raises ImproperlyConfigured saying the same."""
    options = {"MAX_RESULTS": -1, "MAX_RESULT": 3}
    with override_settings(TASKS={"default": {"BACKEND": BACKEND, "OPTIONS": options}}):
        backend = task_backends["default"]
        errors = backend.check()
        assert [error.id for error in errors] == ["loopkeeper.E003", "loopkeeper.E003"]
        text = " ".join(error.msg for error in errors)
        assert "'MAX_RESULT'" in text
        assert "OPTIONS['MAX_RESULTS']: expected an int >= 0, got int -1" in text
        with pytest.raises(ImproperlyConfigured, match="MAX_RESULTS"):
            backend.enqueue(tasks.noop, [], {})


def test_backend_instances_are_per_thread_but_share_results(finished: WaitFinished) -> None:
    """Django makes one backend instance per thread; a result enqueued through one is
    found through another."""
    enqueued: list[TaskResult[Any, Any]] = []
    backends: list[object] = []

    def elsewhere() -> None:
        backends.append(task_backends["default"])
        enqueued.append(tasks.add.enqueue(2, 3))

    thread = threading.Thread(target=elsewhere)
    thread.start()
    thread.join(10)
    assert backends[0] is not task_backends["default"]
    assert finished(enqueued[0]).return_value == 5
    assert tasks.add.get_result(enqueued[0].id).return_value == 5


# -- enqueue and the life of a task -----------------------------------------------------------


@pytest.mark.parametrize("task", [tasks.noop, tasks.anoop], ids=["sync", "async"])
def test_enqueue_returns_ready_then_task_succeeds(task: Any, finished: WaitFinished) -> None:
    """``enqueue`` returns at once a READY result with the JSON-normalised arguments;
    the task then runs once and ends SUCCESSFUL with its timestamps in order."""
    result = task.enqueue(1, two=(3,))
    assert result.status == TaskResultStatus.READY
    assert result.enqueued_at is not None
    assert result.started_at is None
    assert result.args == [1]
    assert result.kwargs == {"two": [3]}
    assert result.task == task
    assert result.backend == "default"

    done = finished(result)
    assert done.status == TaskResultStatus.SUCCESSFUL
    assert done.is_finished is True
    assert done.return_value is None
    assert done.attempts == 1
    assert done.enqueued_at is not None
    assert done.started_at is not None
    assert done.last_attempted_at is not None
    assert done.finished_at is not None
    assert done.started_at >= done.enqueued_at
    assert done.finished_at >= done.started_at
    assert done.errors == []
    assert done.args == [1]


@pytest.mark.parametrize("task", [tasks.add, tasks.aadd], ids=["sync", "async"])
def test_return_value_reaches_the_result(task: Any, finished: WaitFinished) -> None:
    """A task's return value is the result's ``return_value``."""
    assert finished(task.enqueue(20, 22)).return_value == 42


def test_non_json_arguments_are_refused_before_anything_is_enqueued() -> None:
    """Arguments that are not JSON raise TypeError from ``enqueue``; no signal is sent
    and nothing is submitted."""
    sent: list[object] = []

    def receiver(sender: object, **kwargs: object) -> None:
        sent.append(kwargs)

    task_enqueued.connect(receiver, weak=False, dispatch_uid="lk-tests-not-json-args")
    try:
        before = loopkeeper.get_runner().stats().submitted
        with pytest.raises(TypeError, match="Unsupported type"):
            tasks.noop.enqueue(object())
        assert sent == []
        assert loopkeeper.get_runner().stats().submitted == before
    finally:
        task_enqueued.disconnect(dispatch_uid="lk-tests-not-json-args")


def test_non_json_return_value_fails_the_task_with_type_error(finished: WaitFinished) -> None:
    """A return value that is not JSON fails the task with TypeError, as in Django."""
    done = finished(tasks.not_json.enqueue())
    assert done.status == TaskResultStatus.FAILED
    assert done.errors[0].exception_class is TypeError
    assert "Unsupported type" in done.errors[0].traceback
    with pytest.raises(ValueError, match="Task failed"):
        _ = done.return_value


@pytest.mark.parametrize("task", [tasks.fail, tasks.afail], ids=["sync", "async"])
@pytest.mark.parametrize(
    ("kind", "exception"),
    [
        ("ValueError", ValueError),
        ("SystemExit", SystemExit),
        ("KeyboardInterrupt", KeyboardInterrupt),
    ],
)
def test_any_exception_fails_the_task_with_path_and_traceback(
    task: Any,
    kind: str,
    exception: type[BaseException],
    finished: WaitFinished,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Whatever a task raises, SystemExit and KeyboardInterrupt included (there is no
    caller to hand them to), makes it FAILED with the exception's path and traceback,
    logged once at ERROR by Django's receiver, with the traceback; the runner goes on."""
    message = f"This task failed due to {kind}"
    with caplog.at_level(logging.ERROR, logger=LOGGER_NAME):
        done = finished(task.enqueue(kind, message))
    assert done.status == TaskResultStatus.FAILED
    assert done.is_finished is True
    assert done.attempts == 1
    assert done.finished_at is not None
    assert done.started_at is not None
    assert done.finished_at >= done.started_at
    assert len(done.errors) == 1
    assert done.errors[0].exception_class_path == f"builtins.{exception.__qualname__}"
    assert done.errors[0].exception_class is exception
    assert done.errors[0].traceback.endswith(f"{exception.__name__}: {message}\n")
    with pytest.raises(ValueError, match="Task failed"):
        _ = done.return_value
    errors = [r for r in caplog.records if r.name == LOGGER_NAME and r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert done.id in errors[0].getMessage()
    assert errors[0].exc_info is not None
    assert errors[0].exc_info[0] is exception
    assert finished(tasks.add.enqueue(1, 1)).return_value == 2  # the runner lives on


@pytest.mark.parametrize("task", [tasks.locale_now, tasks.alocale_now], ids=["sync", "async"])
def test_task_runs_in_default_language_and_time_zone(task: Any, finished: WaitFinished) -> None:
    """A Django task runs with the default language and time zone, as a worker process
    of a multi-process backend runs it, whatever the enqueuer had active."""
    with translation.override("fr"), timezone.override("Asia/Tokyo"):
        result = task.enqueue()
    assert finished(result).return_value == [settings.LANGUAGE_CODE, settings.TIME_ZONE]


def test_default_runner_has_djangos_hooks() -> None:
    """The app gave the default runner DjangoHooks (database hygiene and the rest)."""
    assert isinstance(loopkeeper.get_runner().hooks, DjangoHooks)


def test_takes_context_gets_the_running_result(finished: WaitFinished) -> None:
    """A ``takes_context`` task gets a TaskContext of its own result, first attempt."""
    result = tasks.context_info.enqueue()
    assert finished(result).return_value == [result.id, 1]


def test_unknown_queue_name_is_refused() -> None:
    """A queue the backend's QUEUES does not list is refused, as Django words it."""
    with pytest.raises(InvalidTask, match="Queue 'other' is not valid for backend"):
        tasks.noop.using(queue_name="other").enqueue()


def test_listed_queue_name_is_accepted(finished: WaitFinished) -> None:
    """A queue the backend lists runs like the default one."""
    assert finished(tasks.add.using(queue_name="emails").enqueue(1, 2)).return_value == 3


# -- signals and log lines ----------------------------------------------------------------------


@pytest.mark.parametrize("task", [tasks.noop, tasks.anoop], ids=["sync", "async"])
def test_log_lines_are_exactly_those_of_djangos_backends(
    task: Any, finished: WaitFinished, caplog: pytest.LogCaptureFixture
) -> None:
    """Django's task logger gets three lines per successful task, as from Django's own
    backends: enqueued (DEBUG), state=RUNNING and state=SUCCESSFUL (INFO), and no more."""
    with caplog.at_level(logging.DEBUG, logger=LOGGER_NAME):
        result = task.enqueue()
        finished(result)
    lines = [r for r in caplog.records if r.name == LOGGER_NAME]
    assert [r.levelno for r in lines] == [logging.DEBUG, logging.INFO, logging.INFO]
    messages = [r.getMessage() for r in lines]
    assert all(result.id in message for message in messages)
    assert "enqueued backend=default" in messages[0]
    assert messages[1].endswith("state=RUNNING")
    assert messages[2].endswith("state=SUCCESSFUL")
    assert not any("NoneType" in r.getMessage() or r.exc_info for r in lines)


@pytest.mark.parametrize("task", [tasks.fail, tasks.afail], ids=["sync", "async"])
def test_failed_task_log_lines_are_exactly_those_of_djangos_backends(
    task: Any, finished: WaitFinished, caplog: pytest.LogCaptureFixture
) -> None:
    """A failed task also gets exactly three lines: enqueued, state=RUNNING, and
    state=FAILED at ERROR with the task's exception as its traceback."""
    with caplog.at_level(logging.DEBUG, logger=LOGGER_NAME):
        result = task.enqueue("ValueError", "This task failed due to ValueError")
        finished(result)
    lines = [r for r in caplog.records if r.name == LOGGER_NAME]
    assert [r.levelno for r in lines] == [logging.DEBUG, logging.INFO, logging.ERROR]
    assert lines[1].getMessage().endswith("state=RUNNING")
    assert lines[2].getMessage().endswith("state=FAILED")
    assert lines[2].exc_info is not None
    assert str(lines[2].exc_info[1]) == "This task failed due to ValueError"


def test_task_enqueued_is_sent_before_the_task_can_start(finished: WaitFinished) -> None:
    """``task_enqueued`` reaches its receivers while the result is READY and before
    ``task_started``, for every task of a burst."""
    lock = threading.Lock()
    order: list[tuple[str, str]] = []

    def on_enqueued(sender: object, task_result: TaskResult[Any, Any], **kw: object) -> None:
        assert task_result.status == TaskResultStatus.READY
        assert tasks.noop.get_result(task_result.id).status == TaskResultStatus.READY
        with lock:
            order.append(("enqueued", task_result.id))

    def on_started(sender: object, task_result: TaskResult[Any, Any], **kw: object) -> None:
        with lock:
            order.append(("started", task_result.id))

    task_enqueued.connect(on_enqueued, weak=False, dispatch_uid="lk-tests-order-enqueued")
    task_started.connect(on_started, weak=False, dispatch_uid="lk-tests-order-started")
    try:
        results = [tasks.noop.enqueue() for _ in range(20)]
        for result in results:
            finished(result)
    finally:
        task_enqueued.disconnect(dispatch_uid="lk-tests-order-enqueued")
        task_started.disconnect(dispatch_uid="lk-tests-order-started")
    for result in results:
        assert order.index(("enqueued", result.id)) < order.index(("started", result.id))


def test_signals_are_sent_by_the_backend_class(finished: WaitFinished) -> None:
    """The signals' sender is the backend class, as Django's backends send them."""
    senders: list[object] = []

    def receiver(sender: object, **kwargs: object) -> None:
        senders.append(sender)

    task_started.connect(receiver, weak=False, dispatch_uid="lk-tests-sender")
    try:
        finished(tasks.noop.enqueue())
    finally:
        task_started.disconnect(dispatch_uid="lk-tests-sender")
    assert senders == [LoopkeeperBackend]


# -- results ------------------------------------------------------------------------------------


def test_get_result_returns_snapshots_and_refresh_updates(finished: WaitFinished) -> None:
    """``enqueue`` and ``get_result`` return snapshots that never change under their
    reader; ``refresh()`` brings one up to date."""
    result = tasks.add.enqueue(1, 2)
    finished(result)
    assert result.status == TaskResultStatus.READY  # the snapshot taken at enqueue
    again = tasks.add.get_result(result.id)
    assert again is not result
    assert again.status == TaskResultStatus.SUCCESSFUL
    result.refresh()
    assert status_of(result) == TaskResultStatus.SUCCESSFUL
    assert result.return_value == 3
    assert result.worker_ids == again.worker_ids
    assert result.worker_ids is not again.worker_ids


def status_of(result: TaskResult[Any, Any]) -> TaskResultStatus:
    """The status now (a call, so the type checker does not keep an earlier narrowing)."""
    return result.status


def test_unknown_result_id_does_not_exist() -> None:
    """``get_result`` of an id this process never enqueued raises TaskResultDoesNotExist."""
    with pytest.raises(TaskResultDoesNotExist):
        default_task_backend.get_result("123")


def test_results_are_bounded_oldest_dropped_first(finished: WaitFinished) -> None:
    """With OPTIONS MAX_RESULTS=2, the third result pushes out the first."""
    tasks_setting = {
        "default": {"BACKEND": BACKEND},
        "small": {"BACKEND": BACKEND, "OPTIONS": {"MAX_RESULTS": 2}},
    }
    with override_settings(TASKS=tasks_setting):
        small = tasks.add.using(backend="small")
        results = [small.enqueue(i, i) for i in range(3)]
        for result in results[1:]:  # the first is gone already (it still runs)
            finished(result)
        with pytest.raises(TaskResultDoesNotExist):
            small.get_result(results[0].id)
        assert [small.get_result(r.id).return_value for r in results[1:]] == [2, 4]
        with pytest.raises(TaskResultDoesNotExist):  # results are per alias
            tasks.add.get_result(results[2].id)
    assert DEFAULT_MAX_RESULTS == 10_000


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_aenqueue_and_aget_result_work_from_any_running_loop(
    anyio_backend: str,
) -> None:
    """``aenqueue`` and ``aget_result`` are direct: they work from an asyncio loop and
    from trio, where Django's ``sync_to_async`` default could not."""
    result = await tasks.aadd.aenqueue(2, 3)
    assert result.status == TaskResultStatus.READY
    with anyio.fail_after(10):
        while not (done := await tasks.aadd.aget_result(result.id)).is_finished:
            await anyio.sleep(0.005)
    value: object = done.return_value  # the stubs type an async task's value as a coroutine
    assert value == 5
    await result.arefresh()
    refreshed: object = result.return_value
    assert refreshed == 5


async def _from_the_runners_loop() -> int:
    result = await tasks.add.aenqueue(4, 5)
    while not (done := await tasks.add.aget_result(result.id)).is_finished:
        await loopkeeper_sleep()
    value: int = done.return_value
    return value


async def loopkeeper_sleep() -> None:
    await asyncio.sleep(0.005)


def test_aenqueue_works_on_the_runners_own_loop() -> None:
    """A loopkeeper task can enqueue a Django task and await its result."""
    assert loopkeeper.submit(_from_the_runners_loop).result(timeout=10) == 9


# -- priority and defer ---------------------------------------------------------------------------


@pytest.fixture
def slots_held() -> Iterator[Callable[[int | None], None]]:
    """Hold every MAX_CONCURRENCY slot of the default runner with blocking tasks; the
    yielded ``release(n)`` lets ``n`` of them go (None: all; teardown lets all go)."""
    limit = loopkeeper.get_runner().max_concurrency
    assert limit is not None
    names = [f"slot-{i}" for i in range(limit)]
    for name in names:
        tasks.gates.pop(name, None)
        tasks.blocked.pop(name, None)
    for name in names:
        tasks.block.enqueue(name)
    for name in names:
        entered, _ = tasks.gate(name)
        assert entered.wait(10), f"blocking task {name} never started"

    def release(count: int | None = None) -> None:
        for name in names[:count]:
            tasks.gate(name)[1].set()

    yield release
    release(None)


def test_priority_orders_tasks_waiting_for_a_slot(
    slots_held: Callable[[int | None], None], finished: WaitFinished
) -> None:
    """While every MAX_CONCURRENCY slot is taken, waiting tasks start highest priority
    first, and in arrival order within one priority.  One slot is freed, the others stay
    held, so the waiting tasks run one at a time and their order is the start order."""
    tasks.recorded.clear()
    results = [
        tasks.record.using(priority=priority).enqueue(label)
        for label, priority in [
            ("low", -10),
            ("default-1", 0),
            ("high", 50),
            ("default-2", 0),
            ("highest", 100),
        ]
    ]
    assert all(tasks.record.get_result(r.id).status == TaskResultStatus.READY for r in results)
    slots_held(1)
    for result in results:
        finished(result)
    assert tasks.recorded == ["highest", "high", "default-1", "default-2", "low"]


def test_run_after_waits_for_its_time(finished: WaitFinished) -> None:
    """A deferred task stays READY until its ``run_after`` and starts no earlier."""
    run_after = timezone.now() + timedelta(milliseconds=300)
    deferred = tasks.add.using(run_after=run_after).enqueue(1, 1)
    assert tasks.add.get_result(deferred.id).status == TaskResultStatus.READY
    done = finished(deferred)
    assert done.return_value == 2
    assert done.started_at is not None
    assert done.started_at >= run_after


def test_deferred_task_holds_no_slot_while_it_waits(
    slots_held: Callable[[int | None], None], finished: WaitFinished
) -> None:
    """With a single free MAX_CONCURRENCY slot, a task deferred by an hour leaves it free:
    a task enqueued after it runs and finishes."""
    slots_held(1)  # one slot free, the others held
    later = timezone.now() + timedelta(hours=1)
    deferred = tasks.noop.using(run_after=later).enqueue()
    assert finished(tasks.add.enqueue(2, 2)).return_value == 4
    assert tasks.noop.get_result(deferred.id).status == TaskResultStatus.READY


def test_run_after_in_the_past_runs_at_once(finished: WaitFinished) -> None:
    """A ``run_after`` already past runs like an undeferred task."""
    past = timezone.now() - timedelta(days=1)
    assert finished(tasks.add.using(run_after=past).enqueue(3, 3)).return_value == 6


def test_naive_run_after_is_refused() -> None:
    """With USE_TZ, a naive ``run_after`` is refused, as Django words it."""
    with pytest.raises(InvalidTask, match="run_after must be an aware datetime"):
        tasks.noop.using(run_after=timezone.now().replace(tzinfo=None))


# -- transactions -------------------------------------------------------------------------------


def test_enqueue_in_atomic_does_not_wait_for_commit(finished: WaitFinished) -> None:
    """Inside ``transaction.atomic()`` the task is enqueued and runs at once, before the
    block commits; ``transaction.on_commit(lambda: task.enqueue())`` is the way to wait."""
    with transaction.atomic():
        result = tasks.add.enqueue(1, 2)
        assert finished(result).status == TaskResultStatus.SUCCESSFUL


def test_on_commit_enqueues_after_commit(finished: WaitFinished) -> None:
    """The documented ``on_commit`` pattern enqueues only once the block commits."""
    enqueued: list[TaskResult[Any, Any]] = []
    with transaction.atomic():
        transaction.on_commit(lambda: enqueued.append(tasks.add.enqueue(2, 2)))
        assert enqueued == []
    assert finished(enqueued[0]).return_value == 4


# -- shutdown -----------------------------------------------------------------------------------

_SHUTDOWN_SCRIPT = (
    ONE_SLOT_SCRIPT.format(max_pending=3)
    + """
def refused() -> str:
    try:
        waiting.enqueue()
    except Exception as exc:
        return type(exc).__name__
    return "accepted"

held = hold.enqueue()
queued = [waiting.enqueue(), waiting.enqueue()]
out = {"over_max_pending": refused()}  # 1 running + 2 waiting: the limit of 3
deferred = waiting.using(run_after=timezone.now() + timedelta(hours=1)).enqueue()
assert started.wait(10)
report = loopkeeper.shutdown(timeout=0.2)
out["after_shutdown"] = refused()
for label, result in [("held", held), ("queued", queued[1]), ("deferred", deferred)]:
    result.refresh()
    out[label] = [str(result.status), [e.exception_class_path for e in result.errors]]
out["cancelled"] = report.cancelled
print(json.dumps(out))
"""
)


def test_overload_and_shutdown_show_in_enqueue_and_results(tmp_path: Path) -> None:
    """Over MAX_PENDING, ``enqueue`` raises OverloadedError.  At shutdown, a running task
    the runner cancels is FAILED with CancelledError, a task still waiting for a slot is
    FAILED with RunnerClosedError, a deferred task whose time has not come stays READY
    (it lived in this process only), and a later ``enqueue`` raises RunnerClosedError."""
    seen, _ = run_django_script(tmp_path, _SHUTDOWN_SCRIPT)
    assert seen["held"] == ["FAILED", ["asyncio.exceptions.CancelledError"]]
    assert seen["queued"] == ["FAILED", ["loopkeeper.RunnerClosedError"]]
    assert seen["deferred"] == ["READY", []]
    assert seen["over_max_pending"] == "OverloadedError"
    assert seen["after_shutdown"] == "RunnerClosedError"
    # The held task, and the deferred task's timer set-up, still waiting for the one slot.
    assert seen["cancelled"] == 2


@pytest.mark.loopkeeper(eager=True)
def test_run_after_under_the_eager_test_fixture_still_runs(
    loopkeeper_runner: loopkeeper.Runner, finished: WaitFinished
) -> None:
    """With loopkeeper.testing's eager mode on, a deferred task is still armed on the
    runner's loop (not on a throwaway eager loop, where its timer would never fire) and
    runs at its time."""
    run_after = timezone.now() + timedelta(milliseconds=50)
    done = finished(tasks.add.using(run_after=run_after).enqueue(4, 4))
    assert done.return_value == 8
    assert done.started_at is not None
    assert done.started_at >= run_after
