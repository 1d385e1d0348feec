"""loopkeeper.testing: the isolated default runner, drain(), adrain() and eager mode."""

from __future__ import annotations

import asyncio
import contextvars
import sys
import textwrap
import threading
from collections.abc import Callable

import pytest

import loopkeeper
import loopkeeper.testing
from loopkeeper import Runner, TaskState
from loopkeeper import _carry as loopkeeper_carry
from loopkeeper.testing import adrain, drain, isolated_runner

WAIT = 10.0


def test_isolated_runner_replaces_the_default_runner_and_puts_it_back() -> None:
    """Inside the block ``submit()`` and ``get_runner()`` use a fresh, started runner; after
    it, the previous default runner is the default again and the fresh one is closed."""
    before = loopkeeper.get_runner()
    with isolated_runner() as runner:
        assert loopkeeper.get_runner() is runner
        assert runner is not before
        handle = loopkeeper.submit(asyncio.sleep, 0, "done")
        assert handle.result(WAIT) == "done"
        assert runner.stats().succeeded == 1
    assert loopkeeper.get_runner() is before
    assert repr(runner) == "<Runner name='loopkeeper' closed>"


def test_configure_inside_an_isolated_test_is_refused() -> None:
    """The test's runner is started at once, so ``configure()`` raises instead of
    replacing it (and changing the options of every later test)."""
    with isolated_runner(), pytest.raises(RuntimeError, match="already started"):
        loopkeeper.configure(max_pending=5)


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"eager": 1}, TypeError, "eager: expected a bool, got int"),
        ({"expect_failed": -1}, ValueError, "expect_failed: expected an int >= 0, got -1"),
        ({"expect_failed": True}, ValueError, "expect_failed: expected an int >= 0, got True"),
    ],
)
def test_isolated_runner_refuses_bad_options(
    options: dict[str, object], error: type[Exception], match: str
) -> None:
    """Bad options raise before any runner is made or swapped in."""
    before = loopkeeper.get_runner()
    with pytest.raises(error, match=match), isolated_runner(**options):  # type: ignore[arg-type]
        pass
    assert loopkeeper.get_runner() is before


def test_loopkeeper_runner_fixture_is_the_default_runner(loopkeeper_runner: Runner) -> None:
    """The fixture is ``isolated_runner()``: the test's default runner."""
    assert loopkeeper.get_runner() is loopkeeper_runner


@pytest.mark.loopkeeper(expect_failed=1)
def test_marker_declares_an_expected_failure(loopkeeper_runner: Runner) -> None:
    """``@pytest.mark.loopkeeper(expect_failed=1)``: one failed task is what the test wants."""
    handle = loopkeeper.submit(_fail, name="doomed")
    assert isinstance(handle.exception(WAIT), ValueError)


def test_drain_waits_for_work_and_for_the_work_it_submits(runner: Runner) -> None:
    """``drain()`` returns once every task submitted before it, and every task those
    submitted before finishing, is done."""
    release = threading.Event()
    done: list[str] = []

    async def child() -> None:
        done.append("child")

    def parent() -> None:
        assert release.wait(WAIT)
        runner.submit(child)
        done.append("parent")

    runner.submit(parent)
    release.set()
    drain(WAIT, runner=runner)
    assert sorted(done) == ["child", "parent"]
    stats = runner.stats()
    assert (stats.succeeded, stats.pending, stats.running) == (2, 0, 0)


def test_drain_times_out_naming_what_is_unfinished(runner: Runner) -> None:
    """A task still unfinished at the deadline makes ``drain()`` raise ``TimeoutError``
    naming it; the task goes on."""
    release = threading.Event()
    handle = runner.submit(release.wait, WAIT, name="stuck-job")
    with pytest.raises(TimeoutError, match=rf"{handle.id} 'stuck-job' \((PENDING|RUNNING)\)"):
        drain(0.01, runner=runner)
    release.set()
    assert handle.result(WAIT) is True


def test_drain_on_the_loop_thread_is_refused(runner: Runner) -> None:
    """On the loop thread ``drain()`` would deadlock: it raises and says to use adrain()."""

    async def drains() -> None:
        drain(runner=runner)

    error = runner.submit(drains).exception(WAIT)
    assert isinstance(error, RuntimeError)
    assert "adrain()" in str(error)


@pytest.mark.anyio
async def test_adrain_waits_without_blocking_the_awaiting_loop(runner: Runner) -> None:
    """``await adrain()`` from an async test returns once the work is done, and the test's
    loop keeps running meanwhile."""
    release = threading.Event()
    handle = runner.submit(release.wait, WAIT)
    waiting = asyncio.ensure_future(adrain(WAIT, runner=runner))
    await asyncio.sleep(0)  # the loop runs while adrain waits
    assert not waiting.done()
    release.set()
    await waiting
    assert handle.state is TaskState.SUCCEEDED


def test_adrain_inside_a_task_does_not_wait_for_itself(runner: Runner) -> None:
    """A task that awaits ``adrain()`` waits for the other tasks, not for itself."""
    release = threading.Event()
    other = runner.submit(release.wait, WAIT)

    async def drains() -> str:
        release.set()
        await adrain(WAIT, runner=runner)
        return "drained"

    assert runner.submit(drains).result(WAIT) == "drained"
    assert other.state is TaskState.SUCCEEDED


@pytest.mark.loopkeeper(eager=True)
def test_eager_runs_sync_work_in_the_calling_thread(loopkeeper_runner: Runner) -> None:
    """Eager mode: a sync callable has run, in the submitting thread, when submit returns;
    the handle is a real task of the test's runner, counted and settled."""
    ran_in: list[threading.Thread] = []

    def job() -> int:
        ran_in.append(threading.current_thread())
        return 7

    handle = loopkeeper.submit(job)
    assert ran_in == [threading.current_thread()]
    assert handle.state is TaskState.SUCCEEDED
    assert handle.result(0) == 7
    assert loopkeeper_runner.stats().succeeded == 1


@pytest.mark.loopkeeper(eager=True)
def test_eager_thread_sensitive_sync_to_async_comes_back_to_the_submitting_thread(
    loopkeeper_runner: Runner,
) -> None:
    """With asgiref imported (as Django does), an async task runs through
    ``async_to_sync``: its thread-sensitive ``sync_to_async`` calls run in the thread
    that submitted it, where a Django test's database connection lives."""
    from asgiref.sync import sync_to_async  # noqa: PLC0415  the import is the premise

    async def task() -> threading.Thread:
        return await sync_to_async(threading.current_thread)()

    assert loopkeeper.submit(task).result(0) is threading.current_thread()


@pytest.mark.loopkeeper(eager=True)
def test_eager_without_asgiref_runs_coroutines_on_a_fresh_loop(
    loopkeeper_runner: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without asgiref, an eager coroutine runs on a new event loop in the calling thread:
    not the runner's loop."""
    monkeypatch.delitem(sys.modules, "asgiref.sync", raising=False)

    async def where() -> tuple[threading.Thread, asyncio.AbstractEventLoop]:
        return threading.current_thread(), asyncio.get_running_loop()

    thread, loop = loopkeeper.submit(where()).result(0)
    assert thread is threading.current_thread()
    assert loop is not loopkeeper_runner._loop_thread.loop


@pytest.mark.loopkeeper(eager=True, expect_failed=1)
def test_eager_failure_is_the_task_outcome_not_an_exception_of_submit(
    loopkeeper_runner: Runner,
) -> None:
    """As Django's ImmediateBackend does, a failing eager task does not raise from
    ``submit()``: the handle is FAILED and holds the exception."""
    handle = loopkeeper.submit(_fail, name="eager-fail")
    assert handle.state is TaskState.FAILED
    assert isinstance(handle.exception(0), ValueError)


@pytest.mark.loopkeeper(eager=True)
@pytest.mark.anyio
async def test_eager_inside_a_running_loop_uses_a_loop_of_its_own(
    loopkeeper_runner: Runner,
) -> None:
    """From async code (this test's loop is running), an eager coroutine runs to its end
    on a helper thread's loop, and so does one it submits in turn."""
    inner_done: list[bool] = []

    async def inner() -> None:
        inner_done.append(True)

    async def outer() -> str:
        loopkeeper.submit(inner)
        return "outer"

    handle = loopkeeper.submit(outer)
    assert handle.result(0) == "outer"
    assert inner_done == [True]
    assert loopkeeper_runner.stats().succeeded == 2


@pytest.mark.loopkeeper(eager=True)
def test_eager_refuses_bad_input_before_running_anything(loopkeeper_runner: Runner) -> None:
    """Bad input raises as ``submit()`` always does, and nothing is counted."""
    with pytest.raises(TypeError, match="NoneType"):
        loopkeeper.submit(None)  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="timeout"):
        loopkeeper.submit(print, timeout=-1)
    assert loopkeeper_runner.stats().submitted == 0


def _fail() -> None:
    raise ValueError("expected in this test")


INNER_TESTS = """
import asyncio
import pytest
import loopkeeper

def boom():
    raise ValueError("boom")

def test_unexpected_failure(loopkeeper_runner):
    loopkeeper.submit(boom, name="boom-task").exception(10)

@pytest.mark.loopkeeper(expect_failed=1)
def test_expected_failure_that_never_came(loopkeeper_runner):
    loopkeeper.submit(asyncio.sleep, 0).result(10)

def test_work_left_unfinished(loopkeeper_runner):
    loopkeeper.submit(asyncio.sleep, 3600, name="forever")

def test_without_the_fixture():
    assert "loopkeeper_runner" not in globals()
"""


def test_plugin_fails_tests_whose_tasks_failed_or_were_left_unfinished(
    pytester: pytest.Pytester,
) -> None:
    """Through the entry point, as users get it: an unexpected failure, a missing expected
    failure and work the shutdown had to cancel each fail their test (at teardown, naming
    the tasks); a test that does not request the fixture is untouched."""
    pytester.makeconftest("import loopkeeper\nloopkeeper.configure(shutdown_timeout=0.1)\n")
    pytester.makepyfile(test_inner=textwrap.dedent(INNER_TESTS))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=4, errors=3)
    result.stdout.fnmatch_lines(
        [
            "E*AssertionError: 1 task(s) failed, 0 expected (1 'boom-task': ValueError('boom'))*",
            "E*AssertionError: 0 task(s) failed, 1 expected*",
            "E*AssertionError: the shutdown at the end of the test was not clean*cancelled=1*",
        ]
    )


REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="none")


class _RequestIdHooks(loopkeeper.Hooks):
    def capture(self) -> Callable[[], object]:
        request_id = REQUEST_ID.get()
        return lambda: REQUEST_ID.set(request_id)


def test_eager_carries_what_the_hooks_capture(monkeypatch: pytest.MonkeyPatch) -> None:
    """An eager task gets what the runner's hooks captured at submit (as the Django hooks
    carry the language and time zone), in a fresh context of its own: the submitter's
    context is not shared, and what the task sets does not leak back."""
    monkeypatch.setattr(loopkeeper.testing, "default_options", lambda: {"hooks": _RequestIdHooks()})

    def job() -> str:
        seen = REQUEST_ID.get()
        REQUEST_ID.set("changed-by-the-task")
        return seen

    token = REQUEST_ID.set("req-7")
    try:
        with isolated_runner(eager=True) as runner:
            assert runner.hooks is not None
            assert loopkeeper.submit(job).result(0) == "req-7"
        assert REQUEST_ID.get() == "req-7"
    finally:
        REQUEST_ID.reset(token)


MARKER_MISUSE = """
import pytest

@pytest.mark.loopkeeper(True)
def test_positional(loopkeeper_runner):
    pass

@pytest.mark.loopkeeper(eagr=True)
def test_misspelt(loopkeeper_runner):
    pass
"""


def test_marker_misuse_is_refused_naming_what_was_given(pytester: pytest.Pytester) -> None:
    """A positional argument or an unknown keyword in ``@pytest.mark.loopkeeper`` fails
    the test at setup with a TypeError naming it and the two options allowed."""
    pytester.makepyfile(test_marker=MARKER_MISUSE)
    result = pytester.runpytest("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(
        [
            (
                "*TypeError: @pytest.mark.loopkeeper takes the keyword arguments eager= and"
                " expect_failed= only; got True"
            ),
            "*TypeError: *only; got eagr",
        ]
    )


def test_eager_carries_what_carry_names_and_knows_its_task(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A variable named by ``loopkeeper.carry()`` has the submitter's value in an eager
    task, and a ``drain()`` inside the eager task does not wait for the task itself."""
    monkeypatch.setattr(
        loopkeeper.testing, "carried", lambda: loopkeeper_carry.Carried((REQUEST_ID,), frozenset())
    )

    def job() -> str:
        drain(WAIT)  # its own handle is RUNNING meanwhile: it must not wait for it
        return REQUEST_ID.get()

    token = REQUEST_ID.set("req-8")
    try:
        with isolated_runner(eager=True):
            assert loopkeeper.submit(job).result(0) == "req-8"
    finally:
        REQUEST_ID.reset(token)
