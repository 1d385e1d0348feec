"""Settings for the engines test project.  Only ``TASKS["default"]`` depends on the engine.

Environment (set by ``tests/django_engines/test_engines.py``):
``LK_ENGINE``: ``loopkeeper``, ``database``, ``rq`` or ``handoff`` (LoopkeeperBackend
handing off to ``database`` at shutdown); ``LK_ENGINES_DB``: the PostgreSQL
database (created and dropped by the test); ``LK_ENGINES_QUEUE``: the queue name, unique to
the test run so that workers of other runs on the same Redis never take its tasks.
"""

from __future__ import annotations

import getpass
import os
from typing import Any

ENGINE = os.environ["LK_ENGINE"]
QUEUE = os.environ["LK_ENGINES_QUEUE"]

SECRET_KEY = "engines-test-only"
DEBUG = False
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
ALLOWED_HOSTS: list[str] = []

# Each engine's app is installed once, whichever engine is in use (as a project that may
# switch would have it): loopkeeper's applies LOOPKEEPER, django_tasks_db owns the queue
# table, django_rq the RQ connections.
INSTALLED_APPS = ["loopkeeper.contrib.django", "django_tasks_db", "django_rq", "enginesite"]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": "127.0.0.1",
        "PORT": 5432,
        "NAME": os.environ["LK_ENGINES_DB"],
        "USER": os.environ.get("PGUSER") or getpass.getuser(),
    }
}

# @task() puts a task on "default"; the test sends its runs to QUEUE (.using(queue_name=...)).
QUEUES = ["default", QUEUE]

_REDIS = {"HOST": "127.0.0.1", "PORT": 6379, "DB": int(os.environ.get("LK_ENGINES_REDIS_DB", "0"))}
RQ_QUEUES = dict.fromkeys(QUEUES, _REDIS)

BACKENDS: dict[str, dict[str, Any]] = {
    "loopkeeper": {"BACKEND": "loopkeeper.contrib.django.backends.LoopkeeperBackend"},
    "database": {"BACKEND": "django_tasks_db.DatabaseBackend"},
    "rq": {"BACKEND": "django_tasks_rq.RQBackend"},
    # In this process, and what its shutdown could not run goes to "durable".
    "handoff": {
        "BACKEND": "loopkeeper.contrib.django.backends.LoopkeeperBackend",
        "OPTIONS": {"HANDOFF": "durable"},
    },
}

TASKS = {"default": {**BACKENDS[ENGINE], "QUEUES": QUEUES}}
if ENGINE == "handoff":  # LK_HANDOFF_TO: the durable engine, "database" (default) or "rq"
    TASKS["durable"] = {**BACKENDS[os.environ.get("LK_HANDOFF_TO", "database")], "QUEUES": QUEUES}
    # Two at a time, and a drain too short for them all: the rest is handed off.
    LOOPKEEPER = {"MAX_CONCURRENCY": 2, "SHUTDOWN_TIMEOUT": 1}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["stderr"], "level": "WARNING"},
}
