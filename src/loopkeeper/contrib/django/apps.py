"""The Django app: ``INSTALLED_APPS += ["loopkeeper.contrib.django"]``."""

from __future__ import annotations

import logging

from django.apps import AppConfig
from django.core import checks

import loopkeeper
from loopkeeper.contrib import runserver, uwsgi

from . import checks as loopkeeper_checks
from ._settings import read_settings
from .hygiene import DjangoHooks

__all__ = ("LoopkeeperConfig",)

# For the one start-up warning below.  Servers never run system checks, and the uWSGI
# trap only shows inside uWSGI, so it is logged there as well (Django's LOGGING sees it).
_stdlib = logging.getLogger("loopkeeper.django")


class LoopkeeperConfig(AppConfig):
    """Applies ``settings.LOOPKEEPER`` and ``DjangoHooks`` (database hygiene, the
    submitter's language and time zone, thread-sensitive ``sync_to_async`` on a thread of
    the task) to the default runner, and registers the checks.

    It also connects the server hooks: ``loopkeeper.contrib.runserver.connect()`` (drain
    before the autoreloader restarts) and ``loopkeeper.contrib.uwsgi.install()`` (drain in
    ``uwsgi.atexit``; nothing outside uWSGI).

    ``ready()`` starts no thread and submits nothing: Django runs it in the runserver
    reloader's parent and in a gunicorn ``--preload`` master, processes that never run
    work (the loop thread starts at the first submit, in the process that submits).
    It never raises for a bad setting either: it applies none of them, and the system
    check ``loopkeeper.E001`` names every bad key (``manage.py check`` fails).
    """

    name = "loopkeeper.contrib.django"
    label = "loopkeeper"
    verbose_name = "loopkeeper"

    #: Why the settings could not be applied (reported by ``loopkeeper.E002``), or None.
    not_applied: str | None = None

    def ready(self) -> None:
        checks.register(loopkeeper_checks.check_settings)
        checks.register(loopkeeper_checks.check_uwsgi, checks.Tags.compatibility)
        checks.register(loopkeeper_checks.check_python, checks.Tags.compatibility)
        for warning in loopkeeper_checks.check_uwsgi():
            _stdlib.warning("%s %s (%s)", warning.msg, warning.hint, warning.id)
        # Server hooks (neither starts a thread): drain before runserver's autoreloader
        # restarts the server, and in uwsgi.atexit under uWSGI (a no-op elsewhere).
        runserver.connect()
        uwsgi.install()
        read = read_settings()
        # With a bad setting (loopkeeper.E001 reports it) none of LOOPKEEPER is applied,
        # but the hooks are: database hygiene is not optional.
        options = {} if read.errors else read.runner_options
        try:
            loopkeeper.configure(hooks=DjangoHooks(), **options)
        except RuntimeError as exc:  # the default runner already started: options are fixed
            self.not_applied = str(exc)
