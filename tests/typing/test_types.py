"""The public types, pinned with ``assert_type``.

``mypy --strict`` is the real check here: a call whose type drifts is a type error, and
each deliberately wrong call below carries a ``type: ignore[code]`` that
``warn_unused_ignores`` (part of ``--strict``) reports as unused the day mypy stops
flagging it.  pytest runs the same calls against a real runner, so the pinned lines are
live code and not only annotations.  The default runner is process-global, so its
entry points are only type-checked (under ``TYPE_CHECKING``), never run here.
"""

from __future__ import annotations

import functools
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

import pytest
from typing_extensions import assert_type

import loopkeeper
from loopkeeper import Runner, RunnerStats, ShutdownReport, TaskHandle, TaskInfo, TaskState


async def double(value: int) -> int:
    return value * 2


async def greet() -> str:
    return "hello"


def encode(text: str) -> bytes:
    return text.encode()


def start_greeting() -> Coroutine[Any, Any, str]:
    """A plain function that returns a coroutine: run in a worker, awaited on the loop."""
    return greet()


class Doubler:
    async def __call__(self, value: int) -> int:
        return value * 2


def test_submit_types_the_handle_by_what_was_submitted(runner: Runner) -> None:
    """An async function, a coroutine object, a sync function, a partial, an object with
    async ``__call__`` and a function returning a coroutine each give ``TaskHandle[result]``."""
    by_async_function = runner.submit(double, 21)
    assert_type(by_async_function, TaskHandle[int])
    by_coroutine = runner.submit(greet())
    assert_type(by_coroutine, TaskHandle[str])
    by_sync_function = runner.submit(encode, "x")
    assert_type(by_sync_function, TaskHandle[bytes])
    by_partial = runner.submit(functools.partial(double, 21))
    assert_type(by_partial, TaskHandle[int])
    by_async_callable = runner.submit(Doubler(), 21)
    assert_type(by_async_callable, TaskHandle[int])
    by_sync_returning_coroutine = runner.submit(start_greeting)
    assert_type(by_sync_returning_coroutine, TaskHandle[str])
    with_options = runner.submit(double, 21, name="double", timeout=5.0)
    assert_type(with_options, TaskHandle[int])

    assert by_async_function.result(timeout=5) == 42
    assert by_coroutine.result(timeout=5) == "hello"
    assert by_sync_function.result(timeout=5) == b"x"
    assert by_partial.result(timeout=5) == 42
    assert by_async_callable.result(timeout=5) == 42
    assert by_sync_returning_coroutine.result(timeout=5) == "hello"
    assert with_options.result(timeout=5) == 42


def test_handle_and_runner_methods_have_their_documented_types(runner: Runner) -> None:
    """``result()`` gives the task's type; the rest of the handle and runner API has the
    types DESIGN.md names."""
    handle = runner.submit(double, 21)
    assert_type(handle.result(timeout=5), int)
    assert_type(handle.result(), int)  # done by now: returns at once
    assert_type(handle.exception(timeout=5), BaseException | None)
    assert_type(handle.id, int)
    assert_type(handle.name, str)
    assert_type(handle.state, TaskState)
    assert_type(handle.done(), bool)
    assert_type(handle.cancelled(), bool)
    assert_type(handle.cancel(), bool)
    assert_type(runner.cancel(handle), bool)
    assert_type(loopkeeper.cancel(handle), bool)
    seen: list[TaskHandle[int]] = []
    handle.add_done_callback(seen.append)
    assert seen == [handle]

    stats = runner.stats()
    assert_type(stats, RunnerStats)
    assert_type(stats.submitted, int)
    assert_type(stats.loop_lag, float)
    assert stats.succeeded == 1

    report = runner.shutdown()
    assert_type(report, ShutdownReport)
    assert_type(report.abandoned, tuple[TaskInfo, ...])
    assert_type(report.clean, bool)
    assert_type(report.duration, float)
    assert report.clean


@pytest.mark.anyio
async def test_awaiting_a_handle_gives_the_task_type(runner: Runner) -> None:
    """``await handle`` gives the task's result type; ``await runner.ashutdown()`` the
    report."""
    value = await runner.submit(double, 21)
    assert_type(value, int)
    assert value == 42
    text = await runner.submit(greet())
    assert_type(text, str)
    assert text == "hello"
    report = await runner.ashutdown()
    assert_type(report, ShutdownReport)
    assert report.clean


if TYPE_CHECKING:  # only type-checked: see the module docstring

    def default_runner_has_the_same_types() -> None:
        assert_type(loopkeeper.submit(double, 21), TaskHandle[int])
        assert_type(loopkeeper.submit(greet()), TaskHandle[str])
        assert_type(loopkeeper.submit(encode, "x"), TaskHandle[bytes])
        assert_type(loopkeeper.submit(functools.partial(double, 21)), TaskHandle[int])
        assert_type(loopkeeper.submit(double, 21, name="d", timeout=1.0), TaskHandle[int])
        assert_type(loopkeeper.get_runner(), Runner)
        assert_type(loopkeeper.shutdown(), ShutdownReport)
        assert_type(loopkeeper.shutdown(5.0, cancel_remaining=False), ShutdownReport)
        loopkeeper.configure(max_pending=100, shutdown_timeout=25.0)

    def wrong_calls_are_type_errors(runner: Runner, handle: TaskHandle[int]) -> None:
        runner.submit(double, "21")  # type: ignore[arg-type]
        runner.submit(encode, 21)  # type: ignore[arg-type]
        runner.submit(double)  # type: ignore[call-arg, arg-type]
        runner.submit(greet(), 1)  # type: ignore[call-overload]
        runner.submit(double, 21, name=3)  # type: ignore[call-overload]
        runner.submit(double, 21, timeout="5")  # type: ignore[call-overload]
        loopkeeper.submit(double, "21")  # type: ignore[arg-type]
        loopkeeper.cancel(21)  # type: ignore[arg-type]
        runner.cancel("handle")  # type: ignore[arg-type]
        _wrong: str = handle.result()  # type: ignore[assignment]
        loopkeeper.Runner(max_pending="10")  # type: ignore[arg-type]
        loopkeeper.Runner("name")  # type: ignore[call-arg]
