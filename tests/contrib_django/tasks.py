"""Task functions of the in-process Django tests (tasks must be module-level functions)."""

from __future__ import annotations

import threading
from typing import Any

from django.utils import timezone, translation

from loopkeeper.contrib.django._tasks_compat import TaskContext, task

# Gates a test opens for the ``block`` task, by name; and what ``record`` saw, in order.
gates: dict[str, threading.Event] = {}
blocked: dict[str, threading.Event] = {}
recorded: list[str] = []
_lock = threading.Lock()


def gate(name: str) -> tuple[threading.Event, threading.Event]:
    """``(entered, release)`` of the ``block`` task called with ``name``."""
    with _lock:
        return blocked.setdefault(name, threading.Event()), gates.setdefault(
            name, threading.Event()
        )


@task
def noop(*args: Any, **kwargs: Any) -> None:
    return None


@task
async def anoop(*args: Any, **kwargs: Any) -> None:
    return None


@task
def add(a: int, b: int) -> int:
    return a + b


@task
async def aadd(a: int, b: int) -> int:
    return a + b


_FAILURES: dict[str, type[BaseException]] = {
    "ValueError": ValueError,
    "SystemExit": SystemExit,
    "KeyboardInterrupt": KeyboardInterrupt,
}


@task
def fail(kind: str, message: str) -> None:
    raise _FAILURES[kind](message)


@task
async def afail(kind: str, message: str) -> None:
    raise _FAILURES[kind](message)


@task
def not_json() -> object:
    return object()


@task(takes_context=True)
def context_info(context: TaskContext[Any, Any]) -> list[object]:
    return [context.task_result.id, context.attempt]


@task
def record(label: str) -> None:
    with _lock:
        recorded.append(label)


@task
def block(name: str) -> None:
    entered, release = gate(name)
    entered.set()
    if not release.wait(10):
        raise TimeoutError(f"gate {name!r} was never opened")


@task
def locale_now() -> list[str]:
    return [translation.get_language(), timezone.get_current_timezone_name()]


@task
async def alocale_now() -> list[str]:
    return [translation.get_language(), timezone.get_current_timezone_name()]
