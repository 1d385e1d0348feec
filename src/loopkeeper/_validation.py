"""What ``submit()`` and the constructors accept, and the messages when they don't.

Every check runs before anything is accepted or counted.  Messages name the parameter,
show what was passed (its type, never its full value: arguments may hold secrets) and
say what is allowed.
"""

from __future__ import annotations

import enum
import functools
import inspect
import math
import threading
import types
from collections.abc import Callable
from typing import Any, Final

__all__ = (
    "ASYNC_FUNCTION",
    "COROUTINE",
    "SYNC",
    "Kind",
    "check_callable_option",
    "check_limit",
    "check_name",
    "check_optional_limit",
    "check_optional_seconds",
    "check_runner_name",
    "check_seconds",
    "classify",
    "close_if_coroutine",
    "default_name",
    "describe",
    "wait_seconds",
)

_ALLOWED_FUNC: Final = (
    "an async def function (or a functools.partial of one), a coroutine object, or a plain callable"
)


class Kind(enum.Enum):
    """How a submitted ``func`` runs."""

    ASYNC_FUNCTION = enum.auto()  # called with args on the loop
    COROUTINE = enum.auto()  # an unstarted coroutine object, awaited on the loop
    SYNC = enum.auto()  # called with args in a worker thread


# Plain module globals for the hot path (see TaskState's in _handles).
ASYNC_FUNCTION: Final = Kind.ASYNC_FUNCTION
COROUTINE: Final = Kind.COROUTINE
SYNC: Final = Kind.SYNC


def describe(value: object) -> str:
    """A short, secret-free description of what was passed: its type, plus a repr for
    values whose repr cannot hold a secret (None, bools, numbers)."""
    if value is None or isinstance(value, (bool, int, float)):
        return f"{value!r} ({type(value).__name__})"
    return f"an object of type {type(value).__qualname__}"


def _unwrap(func: object) -> object:
    while isinstance(func, functools.partial):
        func = func.func
    return func


def _is_async_callable(func: object) -> bool:
    if inspect.iscoroutinefunction(func):
        return True
    target = _unwrap(func)
    if inspect.iscoroutinefunction(target):
        return True
    # An instance whose __call__ is an async def method.
    if inspect.isroutine(target) or isinstance(target, type) or not callable(target):
        return False
    return inspect.iscoroutinefunction(type(target).__call__)


_NOT_PLAIN: Final = (
    inspect.CO_GENERATOR | inspect.CO_ASYNC_GENERATOR | inspect.CO_ITERABLE_COROUTINE
)


def classify(func: object, args: tuple[object, ...]) -> tuple[Kind, str]:
    """Decide how ``func`` runs and its default name, or raise ``TypeError``/``ValueError``.

    A coroutine object that is rejected is closed here (no "never awaited" warning),
    unless it was already started: then it belongs to whoever started it.
    """
    # Fast path for the common cases (a plain function, a bound method, a partial of
    # either): read the code flags once instead of asking inspect five questions, and
    # take the name from the same unwrapped function (default_name() would unwrap again).
    # Anything unusual (generators, inspect.markcoroutinefunction, callable objects,
    # partial subclasses) takes the full path.
    target = func
    while type(target) is functools.partial:
        target = target.func
    if type(target) is types.MethodType:
        target = target.__func__
    if type(target) is types.FunctionType:
        flags = target.__code__.co_flags
        if flags & inspect.CO_COROUTINE:
            return ASYNC_FUNCTION, target.__qualname__
        if not flags & _NOT_PLAIN and getattr(target, "_is_coroutine_marker", None) is None:
            return SYNC, target.__qualname__
    return _classify_slowly(func, args), default_name(func)


def _classify_slowly(func: object, args: tuple[object, ...]) -> Kind:
    if inspect.iscoroutine(func):
        state = inspect.getcoroutinestate(func)
        if state != inspect.CORO_CREATED:
            what = "closed or finished" if state == inspect.CORO_CLOSED else "already started"
            raise ValueError(
                f"submit(func=...): the coroutine {func.__qualname__!r} is {what} "
                f"(state {state}); pass a fresh coroutine object, or the async function "
                "itself so loopkeeper can call it"
            )
        if args:
            func.close()
            raise TypeError(
                f"submit(func=...): got a coroutine object {func.__qualname__!r} and "
                f"{len(args)} positional argument(s); arguments are allowed only with a "
                "function: submit(async_fn, *args) or submit(async_fn(*args))"
            )
        return COROUTINE
    if inspect.isasyncgen(func) or inspect.isgenerator(func):
        raise TypeError(
            f"submit(func=...): got a {'async ' if inspect.isasyncgen(func) else ''}generator "
            f"object {func.__qualname__!r}; generators are not tasks. Allowed: {_ALLOWED_FUNC}"
        )
    if not callable(func):
        raise TypeError(
            f"submit(func=...): got {describe(func)}, which is not callable. "
            f"Allowed: {_ALLOWED_FUNC}"
        )
    target = _unwrap(func)
    if not inspect.isroutine(target) and not isinstance(target, type):
        target = type(target).__call__  # an instance (callable, checked above): its __call__
    if inspect.isasyncgenfunction(target) or inspect.isgeneratorfunction(target):
        kind = "an async generator" if inspect.isasyncgenfunction(target) else "a generator"
        raise TypeError(
            f"submit(func=...): {getattr(target, '__qualname__', '?')!r} is {kind} function; "
            f"its result cannot be awaited as one task. Allowed: {_ALLOWED_FUNC}"
        )
    if _is_async_callable(func):
        return ASYNC_FUNCTION
    return SYNC


def default_name(func: object) -> str:
    """The task's name when none is given: the function's qualified name, never its args."""
    target = _unwrap(func)
    if type(target) is types.FunctionType:
        return target.__qualname__
    name = getattr(target, "__qualname__", None)
    if isinstance(name, str):
        return name
    return type(target).__qualname__


def check_name(name: object, *, param: str = "name") -> str | None:
    if name is None or isinstance(name, str):
        return name
    raise TypeError(f"{param}: expected a str or None, got {describe(name)}")


def check_runner_name(name: object, *, param: str = "name") -> str:
    """A runner's name: a non-empty str (it names threads and log lines)."""
    if not isinstance(name, str):
        raise TypeError(f"{param}: expected a non-empty str, got {describe(name)}")
    if not name:
        raise ValueError(f"{param}: expected a non-empty str, got ''")
    return name


def check_optional_seconds(value: object, *, param: str) -> float | None:
    """A duration in seconds: a real number >= 0 (``inf`` means no limit), or None."""
    if value is None:
        return None
    return check_seconds(value, param=param, allowed="a number of seconds >= 0 or None")


def check_seconds(value: object, *, param: str, allowed: str = "a number of seconds >= 0") -> float:
    """A duration in seconds: a real number >= 0 (``inf`` means no limit)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{param}: expected {allowed}, got {describe(value)}")
    try:
        seconds = float(value)
    except OverflowError:  # an int too large for a float
        raise ValueError(f"{param}: expected a number of seconds >= 0, got {value!r}") from None
    if math.isnan(seconds) or seconds < 0:
        raise ValueError(f"{param}: expected a number of seconds >= 0, got {value!r}")
    return seconds


def wait_seconds(seconds: float | None) -> float | None:
    """A validated duration as the ``timeout`` of a blocking wait: None for "no limit",
    which is also what any duration beyond ``threading.TIMEOUT_MAX`` (~292 years) means."""
    if seconds is None or seconds >= threading.TIMEOUT_MAX:
        return None
    return seconds


def check_optional_limit(value: object, *, param: str) -> int | None:
    """A positive whole number, or None for "no limit"."""
    if value is None:
        return None
    return check_limit(value, param=param, allowed="a positive int or None")


def check_limit(value: object, *, param: str, allowed: str = "a positive int") -> int:
    """A positive whole number (a count limit)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{param}: expected {allowed}, got {describe(value)}")
    if value <= 0:
        raise ValueError(f"{param}: expected a positive int, got {value!r}")
    return value


def check_callable_option(value: object, *, param: str) -> Callable[..., Any] | None:
    if value is None or callable(value):
        return value
    raise TypeError(f"{param}: expected a callable or None, got {describe(value)}")


def close_if_coroutine(func: object) -> None:
    """Close a never-started coroutine that will not run (no "never awaited" warning)."""
    if inspect.iscoroutine(func) and inspect.getcoroutinestate(func) == inspect.CORO_CREATED:
        func.close()
