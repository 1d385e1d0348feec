"""System checks: the ``LOOPKEEPER`` settings, and the known traps of the process around us.

- ``loopkeeper.E001`` (error): a ``LOOPKEEPER`` key is unknown or its value is bad; the
  message names the key.  The app then applied none of the settings.
- ``loopkeeper.E002`` (error): the settings could not be applied because the default
  runner had already started (something submitted work before Django's apps were ready).
- ``loopkeeper.W001`` (warning): running under uWSGI without threads (``uwsgi.has_threads``
  false: uWSGI before 2.0.27 without ``--enable-threads``): loopkeeper's loop thread never runs.
- ``loopkeeper.W002`` (warning): CPython 3.12.0-3.12.2, which cannot start threads while
  the interpreter exits.

The checks are registered when the app is ready (``apps.LoopkeeperConfig.ready``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from django.apps import apps
from django.core import checks

from ._settings import read_settings

if TYPE_CHECKING:
    from django.apps import AppConfig

__all__ = ("check_python", "check_settings", "check_uwsgi", "python_warnings")


def check_settings(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[Any]:
    """``loopkeeper.E001`` for every bad key of ``LOOPKEEPER``, ``E002`` if not applied."""
    found: list[Any] = [
        checks.Error(message, hint=_SETTINGS_HINT, obj="settings.LOOPKEEPER", id="loopkeeper.E001")
        for message in read_settings().errors
    ]
    found.extend(
        checks.Error(
            f"LOOPKEEPER was not applied: {message}",
            hint="Nothing may submit work to loopkeeper before Django's apps are ready "
            "(module-level code in settings or in an app's models or apps modules).",
            obj="settings.LOOPKEEPER",
            id="loopkeeper.E002",
        )
        for message in _not_applied()
    )
    return found


def _not_applied() -> list[str]:
    """Why ``ready()`` could not apply the settings (set on the app config), if it could not."""
    reason = getattr(apps.get_app_config("loopkeeper"), "not_applied", None)
    return [reason] if isinstance(reason, str) else []


_SETTINGS_HINT = (
    "The keys are loopkeeper.configure()'s options upper-cased; see the README's "
    "Django section for each key's type and default."
)


def check_uwsgi(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[Any]:
    """``loopkeeper.W001`` when this process runs inside uWSGI without threads."""
    uwsgi = sys.modules.get("uwsgi")  # exists only inside a uWSGI worker
    if uwsgi is None or getattr(uwsgi, "has_threads", True):
        return []
    return [
        checks.Warning(
            "uWSGI runs without threads (uwsgi.has_threads is false): loopkeeper's loop "
            "thread and worker threads never run, so submitted work never starts.",
            hint="Start uWSGI with --enable-threads (or 'enable-threads = true' in its ini "
            "file), or use uWSGI 2.0.27 or later.",
            id="loopkeeper.W001",
        )
    ]


def python_warnings(version: tuple[int, int, int]) -> list[Any]:
    """``loopkeeper.W002`` for an interpreter ``version`` with the exit-time thread bug."""
    if (3, 12, 0) <= version <= (3, 12, 2):
        return [
            checks.Warning(
                f"Python {'.'.join(map(str, version))} cannot start threads while the "
                "interpreter exits ('can't create new thread at interpreter shutdown'): a "
                "task submitted during the exit drain that needs a new worker thread fails.",
                hint="Upgrade to Python 3.12.3 or later.",
                id="loopkeeper.W002",
            )
        ]
    return []


def check_python(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[Any]:
    """``loopkeeper.W002`` on CPython 3.12.0-3.12.2."""
    if sys.implementation.name != "cpython":
        return []
    major, minor, micro = sys.version_info[:3]
    return python_warnings((major, minor, micro))
