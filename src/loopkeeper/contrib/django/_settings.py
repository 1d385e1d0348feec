"""The ``LOOPKEEPER`` settings dict: which keys exist, their defaults, and validation.

Every keyword of ``loopkeeper.Runner`` (so every option ``loopkeeper.configure()`` takes)
is a key, upper-cased: ``SHUTDOWN_TIMEOUT``, ``MAX_PENDING``, ``MAX_CONCURRENCY``,
``MAX_THREADS``, ``WATCHDOG_THRESHOLD``, ``NAME`` and ``LOOP_FACTORY`` (a callable or its
dotted path).  ``STATUS_SHOW_NAMES`` belongs to the app itself (the status view).

Reading never raises: a bad value becomes an error message naming its key, which the
system check ``loopkeeper.E001`` reports (``manage.py check`` fails), and the app then
leaves the runner's options alone.  Values are validated by the core itself (one
throw-away ``Runner`` per key, which starts nothing), so the messages and rules are
exactly ``configure()``'s.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
from collections.abc import Mapping
from typing import Any, Final

from django.conf import settings
from django.utils.module_loading import import_string

import loopkeeper

__all__ = ("APP_DEFAULTS", "RUNNER_DEFAULTS", "Settings", "read_settings")

# Runner keywords that are not settings: ``hooks`` is the app's own business.
_NOT_SETTINGS: Final = frozenset({"hooks"})

RUNNER_DEFAULTS: Final[Mapping[str, object]] = {
    name.upper(): parameter.default
    for name, parameter in inspect.signature(loopkeeper.Runner).parameters.items()
    if parameter.kind is inspect.Parameter.KEYWORD_ONLY and name not in _NOT_SETTINGS
}
"""Each runner setting and its default (``Runner``'s own), e.g. ``{"MAX_PENDING": 10000}``."""

APP_DEFAULTS: Final[Mapping[str, object]] = {
    # True: the status view shows task and thread names to every request, not only to staff.
    "STATUS_SHOW_NAMES": False,
}


@dataclasses.dataclass(frozen=True)
class Settings:
    """The ``LOOPKEEPER`` dict, read and checked."""

    runner_options: dict[str, Any]  #: keyword arguments for configure(), only keys given
    status_show_names: bool
    errors: tuple[str, ...]  #: one message per bad key (empty: all good)


def read_settings() -> Settings:
    """Read ``settings.LOOPKEEPER`` (absent: all defaults).  Never raises."""
    raw = getattr(settings, "LOOPKEEPER", None)
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        return Settings(
            {},
            False,
            (f"LOOPKEEPER: expected a dict, got {type(raw).__name__} {raw!r}",),
        )
    errors: list[str] = []
    options: dict[str, Any] = {}
    show_names = False
    for key, value in raw.items():
        if key in RUNNER_DEFAULTS:
            option = key.lower()
            given: object = value
            if key == "LOOP_FACTORY" and isinstance(value, str):
                try:
                    given = import_string(value)
                except ImportError as exc:
                    errors.append(f"LOOPKEEPER['LOOP_FACTORY']: cannot import {value!r}: {exc}")
                    continue
            problem = _runner_option_problem(option, given)
            if problem is None:
                options[option] = given
            else:
                errors.append(f"LOOPKEEPER[{key!r}]: {problem}")
        elif key == "STATUS_SHOW_NAMES":
            if isinstance(value, bool):
                show_names = value
            else:
                errors.append(
                    f"LOOPKEEPER['STATUS_SHOW_NAMES']: expected True or False, "
                    f"got {type(value).__name__} {value!r}"
                )
        else:
            errors.append(_unknown_key(key))
    return Settings(options, show_names, tuple(errors))


def _runner_option_problem(option: str, value: object) -> str | None:
    """The core's own complaint about one option, or None if it accepts it."""
    try:
        options: dict[str, Any] = {option: value}
        loopkeeper.Runner(**options)  # validates; starts no thread
    except (TypeError, ValueError) as exc:
        message = str(exc)
        # The core names the keyword ("max_pending: expected ..."): the key says it already.
        prefix = f"{option}: "
        return message.removeprefix(prefix)
    return None


def _unknown_key(key: object) -> str:
    allowed = [*RUNNER_DEFAULTS, *APP_DEFAULTS]
    text = f"LOOPKEEPER: unknown key {key!r}; the keys are {', '.join(sorted(allowed))}"
    if isinstance(key, str):
        close = difflib.get_close_matches(key.upper(), allowed, n=1)
        if close:
            text += f" (did you mean {close[0]!r}?)"
    return text
