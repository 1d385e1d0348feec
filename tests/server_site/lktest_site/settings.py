"""Settings of the site the server tests run (tests/servers/): SQLite, loopkeeper's app.

Environment: ``LK_TEST_DIR`` (the database, the ack files; the current directory by
default), ``LK_SHUTDOWN_TIMEOUT`` (loopkeeper's ``shutdown_timeout``, 10 by default).
loopkeeper's lines go to stderr at INFO, and to ``DrainWatch``, which tells the jobs when
the drain has begun.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

TEST_DIR = Path(os.environ.get("LK_TEST_DIR", "."))
SHUTDOWN_TIMEOUT = float(os.environ.get("LK_SHUTDOWN_TIMEOUT", "10"))

SECRET_KEY = "only-for-the-loopkeeper-server-tests"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "lktest_site.urls"
WSGI_APPLICATION = "lktest_site.wsgi.application"
USE_TZ = True

INSTALLED_APPS = ["lktest_jobs"]
if importlib.util.find_spec("loopkeeper.contrib.django") is not None:
    INSTALLED_APPS.append("loopkeeper.contrib.django")
LOOPKEEPER = {"SHUTDOWN_TIMEOUT": SHUTDOWN_TIMEOUT}

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": TEST_DIR / "db.sqlite3",
        "OPTIONS": {"timeout": 20},  # several worker processes write at once
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(levelname)s %(name)s: %(message)s"}},
    "handlers": {
        "stderr": {"class": "logging.StreamHandler", "formatter": "plain"},
        "drain_watch": {"class": "lktest_jobs.drain.DrainWatch"},
    },
    "loggers": {
        "loopkeeper": {
            "handlers": ["stderr", "drain_watch"],
            "level": "INFO",
            "propagate": False,
        },
    },
}
