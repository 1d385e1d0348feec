"""Bad input is refused before anything is accepted; odd but valid input is accepted.

Every refusal is checked the same way: the exact exception type; a message that names
the parameter, what was passed (its type, never a value that could hold a secret) and
what is allowed; no counter moved (bad input is neither ``submitted`` nor ``rejected``);
no thread started; and no "coroutine ... was never awaited" warning for a coroutine that
was handed over and refused.  The tables below are the cases.  The default runner's
entry points (``loopkeeper.submit``, ``loopkeeper.shutdown``, ``loopkeeper.configure``)
are checked in child interpreters, because they change process-global state; the child
loads this very module, so it checks the same tables.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import functools
import gc
import inspect
import itertools
import json
import logging
import math
import os
import subprocess
import sys
import threading
import warnings
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, Final

import pytest

import loopkeeper

SRC: Final = Path(__file__).resolve().parents[1] / "src"

SubmitFn = Callable[..., object]
# Makes one bad call with the given submit function; appends what it created to the list,
# so that the test can inspect it (a coroutine's state) and then drop it.
Attempt = Callable[[SubmitFn, list[object]], object]


# -- things to submit -------------------------------------------------------------------------


async def _sleeper() -> None:
    """Suspends once.  The tests never start it, or drive it by hand."""
    await asyncio.sleep(0)


async def _returns_one() -> int:
    return 1


async def _async_noop() -> None:
    pass


def _sync_noop() -> None:
    pass


async def _agen(n: int = 1) -> AsyncIterator[int]:
    yield n


def _gen(n: int = 1) -> Iterator[int]:
    yield n


class _NotCallable:
    """An instance without ``__call__``."""


class _Streams:
    async def agen_method(self) -> AsyncIterator[int]:
        yield 1


class _AsyncGeneratorCallable:
    """An instance whose ``__call__`` is an async generator function."""

    async def __call__(self) -> AsyncIterator[int]:
        yield 1


def _suspended() -> Coroutine[Any, Any, None]:
    """A coroutine that ran to its first ``await`` and is suspended there."""
    coro = _sleeper()
    coro.send(None)
    return coro


def _finished() -> Coroutine[Any, Any, int]:
    """A coroutine that ran to its end."""
    coro = _returns_one()
    with contextlib.suppress(StopIteration):  # how a coroutine's return is reported
        coro.send(None)
    return coro


def _closed() -> Coroutine[Any, Any, None]:
    """A coroutine closed before it started."""
    coro = _sleeper()
    coro.close()
    return coro


def _submit(make: Callable[[], object], *args: object, **options: object) -> Attempt:
    """An attempt that submits a fresh ``make()`` with ``args`` and ``options``."""

    def attempt(submit: SubmitFn, keep: list[object]) -> object:
        func = make()
        keep.append(func)
        return submit(func, *args, **options)

    return attempt


def _submit_running_coroutine(submit: SubmitFn, keep: list[object]) -> object:
    """Submit a coroutine from inside itself, while it runs (``CORO_RUNNING``)."""
    box: list[Coroutine[Any, Any, object]] = []

    async def submits_itself() -> object:
        return submit(box[0])

    coro = submits_itself()
    box.append(coro)
    keep.append(coro)
    return coro.send(None)


# -- the tables -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BadTimeout:
    """A ``timeout`` value that every entry point taking one must refuse."""

    id: str
    value: object
    error: type[Exception]
    says: tuple[str, ...]  # the message contains each of these


BAD_TIMEOUTS: Final = (
    BadTimeout("negative", -1, ValueError, ("timeout:", "-1", ">= 0")),
    BadTimeout("negative-float", -0.5, ValueError, ("timeout:", "-0.5", ">= 0")),
    BadTimeout("nan", math.nan, ValueError, ("timeout:", "nan", ">= 0")),
    BadTimeout("minus-inf", -math.inf, ValueError, ("timeout:", "-inf", ">= 0")),
    BadTimeout("str", "1", TypeError, ("timeout:", "type str", "seconds")),
    BadTimeout("bool", True, TypeError, ("timeout:", "(bool)", "seconds")),
    BadTimeout("object", object(), TypeError, ("timeout:", "type object", "seconds")),
)
BAD_TIMEOUT_PARAMS: Final = [pytest.param(bad, id=bad.id) for bad in BAD_TIMEOUTS]


@dataclasses.dataclass(frozen=True)
class BadSubmit:
    """One bad call to ``submit`` and how it must be refused."""

    id: str
    attempt: Attempt
    error: type[Exception]
    says: tuple[str, ...]  # the message contains each of these
    hides: tuple[str, ...] = ()  # ... and none of these (values that may be secrets)
    coroutine_left: str | None = None  # the state the handed-over coroutine is left in


_FUNC = "submit(func=...)"
_ALLOWED = "async def"  # the list of what is allowed starts with "an async def function"

BAD_SUBMITS: Final = (
    # func is not something that can run
    BadSubmit("func-None", _submit(lambda: None), TypeError, (_FUNC, "(NoneType)", _ALLOWED)),
    BadSubmit("func-int", _submit(lambda: 42), TypeError, (_FUNC, "42 (int)", _ALLOWED)),
    BadSubmit("func-float", _submit(lambda: 1.5), TypeError, (_FUNC, "1.5 (float)", _ALLOWED)),
    BadSubmit("func-bool", _submit(lambda: True), TypeError, (_FUNC, "(bool)", _ALLOWED)),
    BadSubmit(
        "func-str",
        _submit(lambda: "s3cret-token"),
        TypeError,
        (_FUNC, "type str", _ALLOWED),
        hides=("s3cret",),
    ),
    BadSubmit(
        "func-bytes",
        _submit(lambda: b"s3cret-token"),
        TypeError,
        (_FUNC, "type bytes", _ALLOWED),
        hides=("s3cret",),
    ),
    BadSubmit("func-object", _submit(object), TypeError, (_FUNC, "type object", _ALLOWED)),
    BadSubmit(
        "func-non-callable-instance",
        _submit(_NotCallable),
        TypeError,
        (_FUNC, "type _NotCallable", _ALLOWED),
    ),
    # generators are not tasks
    BadSubmit(
        "func-async-generator-function",
        _submit(lambda: _agen),
        TypeError,
        (_FUNC, "'_agen'", "async generator function", _ALLOWED),
    ),
    BadSubmit(
        "func-async-generator-object",
        _submit(_agen),
        TypeError,
        (_FUNC, "'_agen'", "async generator object", _ALLOWED),
    ),
    BadSubmit(
        "func-bound-async-generator-method",
        _submit(lambda: _Streams().agen_method),
        TypeError,
        (_FUNC, "'_Streams.agen_method'", "async generator function", _ALLOWED),
    ),
    BadSubmit(
        "func-partial-of-async-generator-function",
        _submit(lambda: functools.partial(_agen, 1)),
        TypeError,
        (_FUNC, "'_agen'", "async generator function", _ALLOWED),
    ),
    BadSubmit(
        "func-generator-function",
        _submit(lambda: _gen),
        TypeError,
        (_FUNC, "'_gen'", "a generator function", _ALLOWED),
    ),
    BadSubmit(
        "func-generator-object",
        _submit(_gen),
        TypeError,
        (_FUNC, "'_gen'", "generator object", _ALLOWED),
    ),
    BadSubmit(
        "func-partial-of-generator-function",
        _submit(lambda: functools.partial(_gen, 1)),
        TypeError,
        (_FUNC, "'_gen'", "a generator function", _ALLOWED),
    ),
    # coroutine objects that are not fresh, or come with arguments
    BadSubmit(
        "coroutine-suspended",
        _submit(_suspended),
        ValueError,
        (_FUNC, "coroutine '_sleeper'", "already started", "fresh coroutine"),
        coroutine_left=inspect.CORO_SUSPENDED,  # it belongs to whoever started it
    ),
    BadSubmit(
        "coroutine-running",
        _submit_running_coroutine,
        ValueError,
        (_FUNC, "submits_itself'", "already started", "fresh coroutine"),
    ),
    BadSubmit(
        "coroutine-finished",
        _submit(_finished),
        ValueError,
        (_FUNC, "coroutine '_returns_one'", "finished", "fresh coroutine"),
    ),
    BadSubmit(
        "coroutine-closed",
        _submit(_closed),
        ValueError,
        (_FUNC, "coroutine '_sleeper'", "closed", "fresh coroutine"),
    ),
    BadSubmit(
        "coroutine-with-args",
        _submit(_sleeper, 1),
        TypeError,
        (_FUNC, "coroutine object '_sleeper'", "positional argument", "submit(async_fn, *args)"),
        coroutine_left=inspect.CORO_CLOSED,
    ),
    # name is not a str
    BadSubmit(
        "name-int", _submit(lambda: _async_noop, name=3), TypeError, ("name:", "3 (int)", "str")
    ),
    BadSubmit(
        "name-bytes",
        _submit(lambda: _async_noop, name=b"s3cret"),
        TypeError,
        ("name:", "type bytes", "str"),
        hides=("s3cret",),
    ),
    BadSubmit(
        "name-int-with-coroutine",
        _submit(_sleeper, name=3),
        TypeError,
        ("name:", "3 (int)", "str"),
        coroutine_left=inspect.CORO_CLOSED,
    ),
    # timeout is not a duration
    *(
        BadSubmit(
            f"timeout-{bad.id}",
            _submit(lambda: _async_noop, timeout=bad.value),
            bad.error,
            bad.says,
        )
        for bad in BAD_TIMEOUTS
    ),
    *(
        BadSubmit(
            f"timeout-{bad.id}-with-coroutine",
            _submit(_sleeper, timeout=bad.value),
            bad.error,
            bad.says,
            coroutine_left=inspect.CORO_CLOSED,
        )
        for bad in BAD_TIMEOUTS
    ),
)
BAD_SUBMIT_PARAMS: Final = [pytest.param(case, id=case.id) for case in BAD_SUBMITS]


@dataclasses.dataclass(frozen=True)
class BadOption:
    """Bad keyword arguments for ``Runner(...)`` (and ``loopkeeper.configure``)."""

    id: str
    options: dict[str, Any]
    error: type[Exception]
    says: tuple[str, ...]


def _limit_cases(param: str, *, none_allowed: bool) -> list[BadOption]:
    allowed = "a positive int or None" if none_allowed else "a positive int"
    cases = [
        BadOption(f"{param}-zero", {param: 0}, ValueError, (f"{param}:", "got 0", "positive")),
        BadOption(
            f"{param}-negative", {param: -1}, ValueError, (f"{param}:", "got -1", "positive")
        ),
        BadOption(f"{param}-str", {param: "10"}, TypeError, (f"{param}:", "type str", allowed)),
        BadOption(f"{param}-bool", {param: True}, TypeError, (f"{param}:", "(bool)", allowed)),
        BadOption(f"{param}-float", {param: 1.5}, TypeError, (f"{param}:", "(float)", allowed)),
        BadOption(f"{param}-whole-float", {param: 10.0}, TypeError, (f"{param}:", "(float)")),
    ]
    if not none_allowed:
        cases.append(
            BadOption(f"{param}-None", {param: None}, TypeError, (f"{param}:", "(NoneType)"))
        )
    return cases


_SHUTDOWN_TIMEOUT = "shutdown_timeout:"

BAD_OPTIONS: Final = (
    *_limit_cases("max_pending", none_allowed=False),
    *_limit_cases("max_concurrency", none_allowed=True),
    *_limit_cases("max_threads", none_allowed=False),
    BadOption(
        "shutdown_timeout-negative",
        {"shutdown_timeout": -1},
        ValueError,
        (_SHUTDOWN_TIMEOUT, "-1", ">= 0"),
    ),
    BadOption(
        "shutdown_timeout-nan",
        {"shutdown_timeout": math.nan},
        ValueError,
        (_SHUTDOWN_TIMEOUT, "nan"),
    ),
    BadOption(
        "shutdown_timeout-minus-inf",
        {"shutdown_timeout": -math.inf},
        ValueError,
        (_SHUTDOWN_TIMEOUT, "-inf"),
    ),
    BadOption(
        "shutdown_timeout-str",
        {"shutdown_timeout": "10"},
        TypeError,
        (_SHUTDOWN_TIMEOUT, "type str", "seconds"),
    ),
    BadOption(
        "shutdown_timeout-bool",
        {"shutdown_timeout": True},
        TypeError,
        (_SHUTDOWN_TIMEOUT, "(bool)", "seconds"),
    ),
    BadOption(
        "shutdown_timeout-None",
        {"shutdown_timeout": None},
        TypeError,
        (_SHUTDOWN_TIMEOUT, "(NoneType)", "seconds"),
    ),
    BadOption(
        "shutdown_timeout-object",
        {"shutdown_timeout": object()},
        TypeError,
        (_SHUTDOWN_TIMEOUT, "type object", "seconds"),
    ),
    BadOption("name-empty", {"name": ""}, ValueError, ("name:", "''", "non-empty str")),
    # None is not a runner name, so the message must not offer it
    BadOption("name-int", {"name": 3}, TypeError, ("name:", "3 (int)", "non-empty str")),
    BadOption("name-bytes", {"name": b"x"}, TypeError, ("name:", "type bytes", "non-empty str")),
    BadOption("name-None", {"name": None}, TypeError, ("name:", "None", "non-empty str")),
    BadOption(
        "watchdog_threshold-negative",
        {"watchdog_threshold": -1},
        ValueError,
        ("watchdog_threshold:", "-1"),
    ),
    BadOption(
        "watchdog_threshold-zero",
        {"watchdog_threshold": 0},
        ValueError,
        ("watchdog_threshold:", "got 0", "> 0"),
    ),
    BadOption(
        "watchdog_threshold-nan",
        {"watchdog_threshold": math.nan},
        ValueError,
        ("watchdog_threshold:", "nan"),
    ),
    BadOption(
        "watchdog_threshold-str",
        {"watchdog_threshold": "3"},
        TypeError,
        ("watchdog_threshold:", "type str", "seconds"),
    ),
    BadOption(
        "watchdog_threshold-bool",
        {"watchdog_threshold": True},
        TypeError,
        ("watchdog_threshold:", "(bool)", "seconds"),
    ),
    BadOption(
        "loop_factory-int",
        {"loop_factory": 42},
        TypeError,
        ("loop_factory:", "42 (int)", "callable"),
    ),
    BadOption(
        "loop_factory-str",
        {"loop_factory": "uvloop"},
        TypeError,
        ("loop_factory:", "type str", "callable"),
    ),
)
BAD_OPTION_PARAMS: Final = [pytest.param(case, id=case.id) for case in BAD_OPTIONS]
UNKNOWN_OPTION: Final = BadOption("unknown-keyword", {"bogus": 1}, TypeError, ("bogus",))


# -- checking a refusal -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Refusal:
    """What one bad call did (plain data, so a child interpreter can report it as JSON)."""

    error: str  # the qualified name of what it raised; "" if it raised nothing
    message: str
    coroutine_states: tuple[str, ...]  # of the coroutines it was handed, right after the call
    unawaited: tuple[str, ...]  # "never awaited" warnings when they were dropped


def _qualified(cls: type[BaseException]) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _never_awaited(caught: list[warnings.WarningMessage]) -> tuple[str, ...]:
    return tuple(
        str(w.message)
        for w in caught
        if issubclass(w.category, RuntimeWarning) and "never awaited" in str(w.message)
    )


def _collect_earlier_garbage() -> None:
    """Collect what earlier tests dropped, so that its warnings are not blamed on this one."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gc.collect()


def _coroutine_states_then_close_started(objects: list[object]) -> tuple[str, ...]:
    """The states of the coroutines among ``objects``; then close the suspended ones (the
    test started them, so the test closes them).  Holds no reference once it returns."""
    states = tuple(inspect.getcoroutinestate(o) for o in objects if inspect.iscoroutine(o))
    for obj in objects:
        if inspect.iscoroutine(obj) and inspect.getcoroutinestate(obj) == inspect.CORO_SUSPENDED:
            obj.close()
    return states


def _refuse(attempt: Attempt, submit: SubmitFn) -> Refusal:
    """Make the bad call, then drop everything it created and record the warnings."""
    _collect_earlier_garbage()
    keep: list[object] = []
    error = message = ""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            attempt(submit, keep)
        except Exception as exc:  # noqa: BLE001  recorded, and compared with the table
            error, message = _qualified(type(exc)), str(exc)
        states = _coroutine_states_then_close_started(keep)
        keep.clear()  # a refused coroutine left unclosed warns now ...
        gc.collect()  # ... or here, if a reference cycle held it
    return Refusal(error, message, states, _never_awaited(caught))


def refuse(case: BadSubmit, submit: SubmitFn) -> Refusal:
    """Run one table case against ``submit``."""
    return _refuse(case.attempt, submit)


def _says(message: str, says: tuple[str, ...], hides: tuple[str, ...] = ()) -> None:
    for text in says:
        assert text in message, f"{text!r} missing from the message {message!r}"
    for text in hides:
        assert text not in message, f"{text!r} leaked into the message {message!r}"


def _check_refusal(case: BadSubmit, refusal: Refusal) -> None:
    assert refusal.error == _qualified(case.error), refusal.message
    _says(refusal.message, case.says, case.hides)
    if case.coroutine_left is not None:
        assert refusal.coroutine_states[:1] == (case.coroutine_left,)
    assert refusal.unawaited == ()


def _counters(stats: loopkeeper.RunnerStats) -> loopkeeper.RunnerStats:
    """The counters only: the loop lag and busy workers change on their own."""
    return dataclasses.replace(stats, loop_lag=0.0, threads=0)


def _threads_of(runner: loopkeeper.Runner) -> list[str]:
    """Names of live threads that belong to ``runner`` (its loop thread and workers)."""
    return [
        t.name
        for t in threading.enumerate()
        if t.name == runner.name or t.name.startswith(f"{runner.name}-")
    ]


# -- fixtures ---------------------------------------------------------------------------------

_NUMBERS = itertools.count(1)


@pytest.fixture
def make_runner() -> Iterator[Callable[..., loopkeeper.Runner]]:
    """Makes runners with unique names (so their threads can be told apart), shut down clean."""
    made: list[loopkeeper.Runner] = []

    def make(**options: Any) -> loopkeeper.Runner:
        options = {"name": f"validation-{next(_NUMBERS)}", "shutdown_timeout": 5, **options}
        runner = loopkeeper.Runner(**options)
        made.append(runner)
        return runner

    yield make
    for runner in made:
        report = runner.shutdown(timeout=5)
        assert report.clean, f"test left work behind: {report!r}"


class Latch:
    """A sync job that holds its worker thread until released (10 s at most)."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.released = threading.Event()

    def job(self) -> bool:
        self.started.set()
        return self.released.wait(10)

    def wait_started(self) -> None:
        assert self.started.wait(5), "the job never started"


@pytest.fixture
def latch() -> Iterator[Latch]:
    """A latch released at teardown, before the runners (requested earlier) shut down."""
    latch = Latch()
    yield latch
    latch.released.set()


# -- submit: bad input ------------------------------------------------------------------------


def test_never_awaited_detector_sees_a_dropped_coroutine() -> None:
    """The warning check used below can fail: an unclosed, dropped coroutine is caught."""

    def drop_a_fresh_coroutine(submit: SubmitFn, keep: list[object]) -> object:
        keep.append(_sleeper())
        raise TypeError("refused without closing it")

    refusal = _refuse(drop_a_fresh_coroutine, print)
    assert refusal.coroutine_states == (inspect.CORO_CREATED,)
    assert len(refusal.unawaited) == 1
    assert "_sleeper" in refusal.unawaited[0]


@pytest.mark.parametrize("case", BAD_SUBMIT_PARAMS)
def test_bad_submit_is_refused_before_anything_is_accepted(
    case: BadSubmit, make_runner: Callable[..., loopkeeper.Runner]
) -> None:
    """Bad input to a fresh runner raises the documented error, counts nothing, starts no
    thread, and leaves no never-awaited coroutine behind."""
    runner = make_runner()
    before = runner.stats()
    _check_refusal(case, refuse(case, runner.submit))
    assert runner.stats() == before
    assert _threads_of(runner) == []


@pytest.mark.parametrize("case", BAD_SUBMIT_PARAMS)
def test_bad_submit_leaves_a_busy_runner_unchanged(
    case: BadSubmit, runner: loopkeeper.Runner
) -> None:
    """On a runner that has run work, bad input is refused the same way and counts nothing."""
    assert runner.submit(_returns_one).result(timeout=5) == 1
    before = _counters(runner.stats())
    _check_refusal(case, refuse(case, runner.submit))
    assert _counters(runner.stats()) == before


@pytest.mark.parametrize("situation", ["shut-down", "overloaded"])
@pytest.mark.parametrize(
    "case",
    [p for p in BAD_SUBMIT_PARAMS if p.id in {"func-None", "coroutine-with-args", "name-int"}],
)
def test_bad_input_to_a_refusing_runner_is_bad_input_not_a_rejection(
    case: BadSubmit,
    situation: str,
    make_runner: Callable[..., loopkeeper.Runner],
    latch: Latch,
) -> None:
    """A runner that refuses work anyway still reports bad input as TypeError/ValueError,
    and does not count it as rejected."""
    runner = make_runner(max_pending=1)
    if situation == "shut-down":
        runner.shutdown(timeout=5)
    else:
        runner.submit(latch.job)
        latch.wait_started()
    before = _counters(runner.stats())
    _check_refusal(case, refuse(case, runner.submit))
    assert _counters(runner.stats()) == before


def test_instance_with_async_generator_call_is_refused_like_an_async_generator_function(
    make_runner: Callable[..., loopkeeper.Runner],
) -> None:
    """An object whose ``__call__`` is an async generator function is refused like the
    function itself (an instance with an async def ``__call__`` counts as an async
    function), not run as a sync callable that "succeeds" with an async generator
    object nobody iterates."""
    runner = make_runner()
    case = BadSubmit(
        "func-instance-with-async-generator-call",
        _submit(_AsyncGeneratorCallable),
        TypeError,
        (_FUNC, "async generator", _ALLOWED),
    )
    _check_refusal(case, refuse(case, runner.submit))
    assert runner.stats().submitted == 0


def test_timeout_too_large_for_a_float_is_refused_as_bad_input(
    make_runner: Callable[..., loopkeeper.Runner],
) -> None:
    """An int timeout that no float can hold is bad input: ValueError naming ``timeout``,
    nothing counted (not an OverflowError escaping from inside the check)."""
    runner = make_runner()
    case = BadSubmit(
        "timeout-int-beyond-float",
        _submit(_sleeper, timeout=10**400),
        ValueError,
        ("timeout:",),
        coroutine_left=inspect.CORO_CLOSED,
    )
    _check_refusal(case, refuse(case, runner.submit))
    assert runner.stats().submitted == 0


# -- submit: refused work that was valid ------------------------------------------------------

REFUSABLE: Final = [
    pytest.param(_sleeper, id="coroutine"),
    pytest.param(lambda: _async_noop, id="async-function"),
    pytest.param(lambda: _sync_noop, id="sync-function"),
]


@pytest.mark.parametrize("make", REFUSABLE)
def test_submit_after_shutdown_is_rejected_counted_and_closes_the_coroutine(
    make: Callable[[], object], runner: loopkeeper.Runner
) -> None:
    """After shutdown, submit raises RunnerClosedError naming the runner and the shutdown,
    counts one rejection (not a submission), and closes a coroutine it was handed."""
    assert runner.submit(_returns_one).result(timeout=5) == 1
    assert runner.shutdown(timeout=5).clean
    before = runner.stats()
    refusal = _refuse(_submit(make), runner.submit)
    assert refusal.error == _qualified(loopkeeper.RunnerClosedError)
    _says(refusal.message, (repr(runner.name), "shutdown"))
    assert refusal.coroutine_states in {(), (inspect.CORO_CLOSED,)}
    assert refusal.unawaited == ()
    after = runner.stats()
    assert after.rejected == before.rejected + 1
    assert after.submitted == before.submitted


@pytest.mark.parametrize("make", REFUSABLE)
def test_submit_over_max_pending_is_rejected_counted_and_closes_the_coroutine(
    make: Callable[[], object], make_runner: Callable[..., loopkeeper.Runner], latch: Latch
) -> None:
    """With max_pending unfinished tasks, submit raises OverloadedError, counts one
    rejection, closes a coroutine it was handed; once the work ends, submit works again."""
    runner = make_runner(max_pending=1)
    held = runner.submit(latch.job)
    latch.wait_started()
    before = runner.stats()
    refusal = _refuse(_submit(make), runner.submit)
    assert refusal.error == _qualified(loopkeeper.OverloadedError)
    _says(refusal.message, (repr(runner.name), "max_pending=1"))
    assert refusal.coroutine_states in {(), (inspect.CORO_CLOSED,)}
    assert refusal.unawaited == ()
    after = runner.stats()
    assert after.rejected == before.rejected + 1
    assert after.submitted == before.submitted == 1
    latch.released.set()
    assert held.result(timeout=5) is True
    assert runner.submit(_returns_one).result(timeout=5) == 1


# -- submit: odd but valid input is accepted --------------------------------------------------


class _Ran:
    """What the accepted callables return: a value, and the thread that computed it."""

    def __init__(self, value: int) -> None:
        self.value = value
        self.thread = threading.current_thread().name


async def _ran_async(value: int) -> _Ran:
    return _Ran(value)


async def _ran_async_keyword(*, value: int) -> _Ran:
    return _Ran(value)


async def _ran_async_sum(a: int, b: int) -> _Ran:
    return _Ran(a + b)


def _ran_sync(value: int) -> _Ran:
    return _Ran(value)


class _AsyncCallable:
    async def __call__(self, value: int) -> _Ran:
        return _Ran(value)


class _Service:
    async def async_method(self, value: int) -> _Ran:
        return _Ran(value)

    def sync_method(self, value: int) -> _Ran:
        return _Ran(value)


@dataclasses.dataclass(frozen=True)
class Accepted:
    """Valid input: it must be accepted, run where promised, and end SUCCEEDED with 7."""

    id: str
    make: Callable[[], tuple[Any, tuple[Any, ...]]]  # (func, args), fresh each time
    runs_on: str  # "loop": on the loop thread; "worker": in a worker thread
    name: str  # the task's name
    options: dict[str, Any] = dataclasses.field(default_factory=dict)


ACCEPTED: Final = (
    Accepted("async-function", lambda: (_ran_async, (7,)), "loop", "_ran_async"),
    Accepted("coroutine-object", lambda: (_ran_async(7), ()), "loop", "_ran_async"),
    Accepted(
        "partial-of-async-function",
        lambda: (functools.partial(_ran_async, 7), ()),
        "loop",
        "_ran_async",
    ),
    Accepted(
        "partial-with-keyword-arguments",
        lambda: (functools.partial(_ran_async_keyword, value=7), ()),
        "loop",
        "_ran_async_keyword",
    ),
    Accepted(
        "nested-partial-of-async-function",
        lambda: (functools.partial(functools.partial(_ran_async_sum, 3), 4), ()),
        "loop",
        "_ran_async_sum",
    ),
    Accepted(
        "instance-with-async-call", lambda: (_AsyncCallable(), (7,)), "loop", "_AsyncCallable"
    ),
    Accepted(
        "partial-of-instance-with-async-call",
        lambda: (functools.partial(_AsyncCallable(), 7), ()),
        "loop",
        "_AsyncCallable",
    ),
    Accepted(
        "bound-async-method",
        lambda: (_Service().async_method, (7,)),
        "loop",
        "_Service.async_method",
    ),
    Accepted("sync-function", lambda: (_ran_sync, (7,)), "worker", "_ran_sync"),
    Accepted("class", lambda: (_Ran, (7,)), "worker", "_Ran"),
    Accepted(
        "bound-sync-method",
        lambda: (_Service().sync_method, (7,)),
        "worker",
        "_Service.sync_method",
    ),
    # The lambda runs in a worker; the coroutine it returns is awaited on the loop.
    Accepted(
        "lambda-returning-a-coroutine",
        lambda: (lambda: _ran_async(7), ()),
        "loop",
        "<lambda>.<locals>.<lambda>",
    ),
    Accepted("given-name", lambda: (_ran_async, (7,)), "loop", "custom", {"name": "custom"}),
    Accepted("timeout-int", lambda: (_ran_async, (7,)), "loop", "_ran_async", {"timeout": 30}),
    Accepted(
        "timeout-inf", lambda: (_ran_async, (7,)), "loop", "_ran_async", {"timeout": math.inf}
    ),
    Accepted(
        "timeout-beyond-TIMEOUT_MAX",
        lambda: (_ran_async, (7,)),
        "loop",
        "_ran_async",
        {"timeout": threading.TIMEOUT_MAX * 4},
    ),
    # A task that never awaits finishes in its first step, before a 0 s timer can fire.
    Accepted(
        "timeout-zero-without-awaiting",
        lambda: (_ran_async, (7,)),
        "loop",
        "_ran_async",
        {"timeout": 0},
    ),
)


@pytest.mark.parametrize("case", [pytest.param(case, id=case.id) for case in ACCEPTED])
def test_valid_edge_input_is_accepted_and_runs_where_promised(
    case: Accepted, runner: loopkeeper.Runner
) -> None:
    """Async callables of every shape run on the loop thread, plain callables in a worker
    thread (a coroutine they return is awaited on the loop); each is counted once."""
    before = runner.stats()
    func, args = case.make()
    handle = runner.submit(func, *args, **case.options)
    ran = handle.result(timeout=10)
    assert isinstance(ran, _Ran)
    assert ran.value == 7
    if case.runs_on == "loop":
        assert ran.thread == runner.name
    else:
        assert ran.thread.startswith(f"{runner.name}-worker-")
    assert handle.state is loopkeeper.TaskState.SUCCEEDED
    assert handle.name == case.name
    after = runner.stats()
    assert after.submitted == before.submitted + 1
    assert after.succeeded == before.succeeded + 1


async def _sleep_long() -> None:
    await asyncio.sleep(60)


def test_timeout_zero_fails_an_awaiting_task_with_task_timeout_error(
    runner: loopkeeper.Runner,
) -> None:
    """timeout=0 is accepted, and a task that awaits anything ends FAILED with
    TaskTimeoutError (a TimeoutError)."""
    handle = runner.submit(_sleep_long, timeout=0)
    error = handle.exception(timeout=10)
    assert isinstance(error, loopkeeper.TaskTimeoutError)
    assert handle.state is loopkeeper.TaskState.FAILED
    with pytest.raises(loopkeeper.TaskTimeoutError):
        handle.result(timeout=0)
    assert runner.stats().failed == 1


async def _wait_for_release(started: threading.Event, box: list[asyncio.Future[int]]) -> int:
    future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    box.append(future)
    started.set()
    return await future


async def _release(box: list[asyncio.Future[int]], value: int) -> None:
    box[0].set_result(value)


def test_timeout_inf_means_no_timeout(runner: loopkeeper.Runner) -> None:
    """timeout=float('inf') is accepted and sets no deadline: the task waits across loop
    iterations until another task releases it, and succeeds."""
    started = threading.Event()
    box: list[asyncio.Future[int]] = []
    handle = runner.submit(_wait_for_release, started, box, timeout=math.inf)
    assert started.wait(5), "the task never started"
    runner.submit(_release, box, 5).result(timeout=5)
    assert handle.result(timeout=5) == 5


def test_wait_timeout_beyond_timeout_max_waits_like_no_timeout(
    runner: loopkeeper.Runner, latch: Latch
) -> None:
    """result(timeout=t) with a finite t larger than threading.TIMEOUT_MAX passes
    validation, so it must wait like a long timeout (not raise OverflowError)."""
    handle = runner.submit(latch.job)
    latch.wait_started()
    waiting = threading.Event()
    outcome: list[object] = []

    def wait() -> None:
        waiting.set()
        try:
            outcome.append(handle.result(timeout=threading.TIMEOUT_MAX * 4))
        except BaseException as exc:  # noqa: BLE001  handed to the test thread
            outcome.append(exc)

    waiter = threading.Thread(target=wait, name="validation-waiter")
    waiter.start()
    try:
        assert waiting.wait(5)
        latch.released.set()
    finally:
        latch.released.set()
        waiter.join(10)
    assert outcome == [True]


class _EventSeen(logging.Handler):
    """Sets ``seen`` when loopkeeper logs the event named ``event``."""

    def __init__(self, event: str) -> None:
        super().__init__(logging.DEBUG)
        self.event = event
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "event", None) == self.event:
            self.seen.set()


def test_shutdown_timeout_beyond_timeout_max_waits_for_the_work(
    make_runner: Callable[..., loopkeeper.Runner], latch: Latch
) -> None:
    """shutdown(timeout=t) with a finite t larger than threading.TIMEOUT_MAX passes
    validation, so it must wait for the work and report it completed (not raise
    OverflowError half-way, with the runner closed and no report)."""
    runner = make_runner()
    handle = runner.submit(latch.job)
    latch.wait_started()
    started = _EventSeen("shutdown_started")
    logger = logging.getLogger("loopkeeper")
    logger.addHandler(started)
    outcome: list[object] = []

    def shut_down() -> None:
        try:
            outcome.append(runner.shutdown(timeout=threading.TIMEOUT_MAX * 4))
        except BaseException as exc:  # noqa: BLE001  handed to the test thread
            outcome.append(exc)

    closer = threading.Thread(target=shut_down, name="validation-closer")
    closer.start()
    try:
        assert started.seen.wait(5), "shutdown never logged shutdown_started"
    finally:
        logger.removeHandler(started)
        latch.released.set()
        closer.join(10)
    assert len(outcome) == 1
    report = outcome[0]
    assert isinstance(report, loopkeeper.ShutdownReport), report
    assert report.clean
    assert report.completed == 1
    assert handle.result(timeout=0) is True


def test_wait_timeout_edges_on_a_finished_handle(runner: loopkeeper.Runner) -> None:
    """On a finished task, result() and exception() accept timeout=0, inf and None."""
    handle = runner.submit(_returns_one)
    assert handle.result(timeout=5) == 1
    for timeout in (0, 0.0, math.inf, None):
        assert handle.result(timeout=timeout) == 1
        assert handle.exception(timeout=timeout) is None


# -- Runner(...) options ----------------------------------------------------------------------


@pytest.mark.parametrize("case", BAD_OPTION_PARAMS)
def test_bad_runner_option_is_refused_with_a_message_naming_it(case: BadOption) -> None:
    """Runner(...) refuses a bad option with the exact error, names the option, what was
    passed and what is allowed, and starts no thread."""
    before = set(threading.enumerate())
    with pytest.raises(case.error) as excinfo:
        loopkeeper.Runner(**case.options)
    assert type(excinfo.value) is case.error
    _says(str(excinfo.value), case.says)
    assert set(threading.enumerate()) - before == set()


@pytest.mark.parametrize(
    ("options", "kept"),
    [
        pytest.param(
            {"max_concurrency": None}, {"max_concurrency": None}, id="max_concurrency-None"
        ),
        pytest.param({"max_concurrency": 1}, {"max_concurrency": 1}, id="max_concurrency-one"),
        pytest.param({"max_pending": 1}, {"max_pending": 1}, id="max_pending-one"),
        pytest.param({"max_threads": 1}, {"max_threads": 1}, id="max_threads-one"),
        pytest.param(
            {"shutdown_timeout": 0}, {"shutdown_timeout": 0.0}, id="shutdown_timeout-zero"
        ),
        pytest.param({"shutdown_timeout": 7}, {"shutdown_timeout": 7.0}, id="shutdown_timeout-int"),
        pytest.param(
            {"shutdown_timeout": math.inf},
            {"shutdown_timeout": math.inf},
            id="shutdown_timeout-inf",
        ),
        pytest.param({"name": "x"}, {"name": "x"}, id="name-one-char"),
        pytest.param({"watchdog_threshold": None}, {"watchdog_threshold": None}, id="watchdog-off"),
        pytest.param(
            {"watchdog_threshold": 0.5}, {"watchdog_threshold": 0.5}, id="watchdog_threshold-float"
        ),
        pytest.param({"loop_factory": asyncio.new_event_loop}, {}, id="loop_factory-function"),
    ],
)
def test_valid_edge_runner_options_are_accepted_and_work(
    options: dict[str, Any],
    kept: dict[str, object],
    make_runner: Callable[..., loopkeeper.Runner],
) -> None:
    """Edge values that are allowed construct a runner that keeps them, starts no thread
    until used, and runs work."""
    runner = make_runner(**options)
    for attribute, value in kept.items():
        assert getattr(runner, attribute) == value
    assert _threads_of(runner) == []
    assert runner.submit(_ran_async, 7).result(timeout=5).value == 7


# -- shutdown(timeout=...) --------------------------------------------------------------------


@pytest.mark.parametrize("bad", BAD_TIMEOUT_PARAMS)
def test_bad_shutdown_timeout_raises_before_anything_changes(
    bad: BadTimeout, runner: loopkeeper.Runner, latch: Latch
) -> None:
    """shutdown(timeout=bad) raises at once; the runner stays open, running work goes on,
    and a later submit succeeds."""
    held = runner.submit(latch.job)
    latch.wait_started()
    before = _counters(runner.stats())
    with pytest.raises(bad.error) as excinfo:
        runner.shutdown(timeout=bad.value)  # type: ignore[arg-type]
    assert type(excinfo.value) is bad.error
    _says(str(excinfo.value), bad.says)
    assert _counters(runner.stats()) == before
    assert held.state is loopkeeper.TaskState.RUNNING
    assert runner.submit(_returns_one).result(timeout=5) == 1
    latch.released.set()
    assert held.result(timeout=5) is True


@pytest.mark.anyio
@pytest.mark.parametrize("bad", BAD_TIMEOUT_PARAMS)
async def test_bad_ashutdown_timeout_raises_before_anything_changes(
    bad: BadTimeout, runner: loopkeeper.Runner, latch: Latch
) -> None:
    """await ashutdown(timeout=bad) raises like shutdown(); the runner stays open."""
    held = runner.submit(latch.job)
    latch.wait_started()
    with pytest.raises(bad.error) as excinfo:
        await runner.ashutdown(timeout=bad.value)  # type: ignore[arg-type]
    _says(str(excinfo.value), bad.says)
    assert held.state is loopkeeper.TaskState.RUNNING
    assert await runner.submit(_returns_one) == 1
    latch.released.set()
    assert await held is True


# -- handle.result / handle.exception (timeout=...) -------------------------------------------


@pytest.mark.parametrize("method", ["result", "exception"])
@pytest.mark.parametrize("bad", BAD_TIMEOUT_PARAMS)
def test_bad_wait_timeout_is_refused_without_waiting(
    bad: BadTimeout, method: str, runner: loopkeeper.Runner, latch: Latch
) -> None:
    """result()/exception() refuse a bad timeout at once, whether or not the task is done,
    and the task is not affected."""
    handle = runner.submit(latch.job)
    latch.wait_started()
    wait = handle.result if method == "result" else handle.exception
    with pytest.raises(bad.error) as excinfo:
        wait(timeout=bad.value)  # type: ignore[arg-type]
    _says(str(excinfo.value), bad.says)
    assert handle.state is loopkeeper.TaskState.RUNNING
    latch.released.set()
    assert handle.result(timeout=5) is True
    with pytest.raises(bad.error):
        wait(timeout=bad.value)  # type: ignore[arg-type]


# -- cancel(non-handle) ------------------------------------------------------------------------


class _LooksLikeAHandle:
    """Has ``cancel()`` like a handle or a future, but is neither."""

    def __init__(self) -> None:
        self.cancel_calls = 0

    def cancel(self, msg: object = None) -> bool:
        self.cancel_calls += 1
        return True


NOT_HANDLES: Final = [
    pytest.param(lambda: None, "NoneType", id="None"),
    pytest.param(lambda: 1, "int", id="int"),
    pytest.param(lambda: "1", "str", id="str"),
    pytest.param(object, "object", id="object"),
    pytest.param(concurrent.futures.Future, "Future", id="concurrent-future"),
    pytest.param(_LooksLikeAHandle, "_LooksLikeAHandle", id="look-alike"),
]


@pytest.mark.parametrize("via", ["loopkeeper.cancel", "Runner.cancel"])
@pytest.mark.parametrize(("make", "type_name"), NOT_HANDLES)
def test_cancel_refuses_anything_but_a_task_handle(
    make: Callable[[], Any], type_name: str, via: str, runner: loopkeeper.Runner
) -> None:
    """cancel(obj) raises TypeError naming what it got and what it needs, and touches
    neither the object (no duck typing) nor the runner's counters."""
    obj = make()
    cancel = loopkeeper.cancel if via == "loopkeeper.cancel" else runner.cancel
    before = _counters(runner.stats())
    with pytest.raises(TypeError) as excinfo:
        cancel(obj)
    assert type(excinfo.value) is TypeError
    _says(str(excinfo.value), ("cancel(handle=...)", f"type {type_name}", "TaskHandle"))
    assert getattr(obj, "cancel_calls", 0) == 0
    if isinstance(obj, concurrent.futures.Future):
        assert not obj.cancelled()
    assert _counters(runner.stats()) == before


# -- the default runner, in child interpreters ------------------------------------------------


def _default_runner_child() -> None:
    """Child: every bad submit through loopkeeper.submit and through an explicit Runner,
    then bad loopkeeper.shutdown timeouts, then one good submit; prints JSON."""
    explicit = loopkeeper.Runner(name="explicit")
    cases = {
        case.id: [
            dataclasses.asdict(refuse(case, loopkeeper.submit)),
            dataclasses.asdict(refuse(case, explicit.submit)),
        ]
        for case in BAD_SUBMITS
    }
    stats = dataclasses.asdict(loopkeeper.get_runner().stats())
    threads = [t.name for t in threading.enumerate()]
    shutdowns: dict[str, list[str]] = {}
    for bad in BAD_TIMEOUTS:
        try:
            loopkeeper.shutdown(timeout=bad.value)  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001  reported to the parent
            shutdowns[bad.id] = [_qualified(type(exc)), str(exc)]
        else:
            shutdowns[bad.id] = ["", ""]
    after = loopkeeper.submit(_returns_one).result(timeout=5)
    result = {
        "cases": cases,
        "stats": stats,
        "threads": threads,
        "shutdowns": shutdowns,
        "submit_after_bad_shutdowns": after,
    }
    print(json.dumps(result))


_CONFIGURED: Final = {"name": "configured", "max_pending": 7, "shutdown_timeout": 3.0}


def _options_of(runner: loopkeeper.Runner) -> list[object]:
    return [
        runner.name,
        runner.max_pending,
        runner.max_concurrency,
        runner.max_threads,
        runner.shutdown_timeout,
    ]


def _configure_child() -> None:
    """Child: configure, then every bad configure; then one more good one; prints JSON."""
    loopkeeper.configure(**_CONFIGURED)
    first = loopkeeper.get_runner()
    outcomes = {}
    for case in (*BAD_OPTIONS, UNKNOWN_OPTION):
        try:
            loopkeeper.configure(**case.options)
        except Exception as exc:  # noqa: BLE001  reported to the parent
            error, message = _qualified(type(exc)), str(exc)
        else:
            error = message = ""
        runner = loopkeeper.get_runner()
        outcomes[case.id] = {
            "error": error,
            "message": message,
            "same_runner": runner is first,
            "options": _options_of(runner),
        }
    loopkeeper.configure(max_threads=2)
    result = {
        "outcomes": outcomes,
        "after_good_configure": _options_of(loopkeeper.get_runner()),
        "threads": [t.name for t in threading.enumerate()],
    }
    print(json.dumps(result))


def _run_child(function: str) -> dict[str, Any]:
    """Run ``function`` of this module in a fresh interpreter; return the JSON it prints."""
    code = "\n".join(
        [
            "import importlib.util, sys",
            "spec = importlib.util.spec_from_file_location('validation_cases', sys.argv[1])",
            "module = importlib.util.module_from_spec(spec)",
            "sys.modules[spec.name] = module",
            "spec.loader.exec_module(module)",
            f"module.{function}()",
        ]
    )
    path = os.pathsep.join([str(SRC), *filter(None, [os.environ.get("PYTHONPATH")])])
    proc = subprocess.run(
        [sys.executable, "-c", code, str(Path(__file__).resolve())],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": path},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout.splitlines()[-1])
    return result


@pytest.fixture(scope="module")
def default_runner_child() -> dict[str, Any]:
    return _run_child("_default_runner_child")


@pytest.fixture(scope="module")
def configure_child() -> dict[str, Any]:
    return _run_child("_configure_child")


def _refusal_from_json(data: dict[str, Any]) -> Refusal:
    return Refusal(
        error=data["error"],
        message=data["message"],
        coroutine_states=tuple(data["coroutine_states"]),
        unawaited=tuple(data["unawaited"]),
    )


@pytest.mark.parametrize("case", BAD_SUBMIT_PARAMS)
def test_default_submit_refuses_bad_input_like_runner_submit(
    case: BadSubmit, default_runner_child: dict[str, Any]
) -> None:
    """loopkeeper.submit refuses each bad input exactly as Runner.submit does."""
    by_default, by_runner = (_refusal_from_json(d) for d in default_runner_child["cases"][case.id])
    _check_refusal(case, by_default)
    assert by_default == by_runner


def test_default_runner_counts_nothing_and_starts_no_thread_for_bad_input(
    default_runner_child: dict[str, Any],
) -> None:
    """After every bad submit, the default runner has counted nothing and no thread exists."""
    stats = default_runner_child["stats"]
    assert {key: value for key, value in stats.items() if key != "loop_lag"} == dict.fromkeys(
        [
            "submitted",
            "pending",
            "running",
            "succeeded",
            "failed",
            "cancelled",
            "abandoned",
            "rejected",
            "threads",
        ],
        0,
    )
    assert default_runner_child["threads"] == ["MainThread"]


@pytest.mark.parametrize("bad", BAD_TIMEOUT_PARAMS)
def test_default_shutdown_refuses_a_bad_timeout_and_stays_open(
    bad: BadTimeout, default_runner_child: dict[str, Any]
) -> None:
    """loopkeeper.shutdown(timeout=bad) raises the documented error and closes nothing:
    a submit afterwards still runs."""
    error, message = default_runner_child["shutdowns"][bad.id]
    assert error == _qualified(bad.error), message
    _says(message, bad.says)
    assert default_runner_child["submit_after_bad_shutdowns"] == 1


@pytest.mark.parametrize(
    "case", [*BAD_OPTION_PARAMS, pytest.param(UNKNOWN_OPTION, id=UNKNOWN_OPTION.id)]
)
def test_configure_refuses_a_bad_option_and_keeps_the_previous_ones(
    case: BadOption, configure_child: dict[str, Any]
) -> None:
    """configure(bad) raises the error Runner(bad) raises, and the options set before stay
    in force (the same default runner, unchanged)."""
    outcome = configure_child["outcomes"][case.id]
    assert outcome["error"] == _qualified(case.error), outcome["message"]
    _says(outcome["message"], case.says)
    assert outcome["same_runner"] is True
    assert outcome["options"] == ["configured", 7, None, 40, 3.0]


def test_configure_still_merges_options_after_refusals(configure_child: dict[str, Any]) -> None:
    """A good configure after refused ones keeps the earlier options and starts no thread."""
    assert configure_child["after_good_configure"] == ["configured", 7, None, 2, 3.0]
    assert configure_child["threads"] == ["MainThread"]
