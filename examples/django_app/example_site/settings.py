"""Settings of loopkeeper's example project: SQLite next to this file, loopkeeper's app.

``./scripts/example`` runs it with ``runserver``; ``gunicorn.conf.py`` beside
``manage.py`` is the README's gunicorn recipe.
"""

from __future__ import annotations

import os
from pathlib import Path

import django

BASE_DIR = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("EXAMPLE_DATA_DIR", BASE_DIR))

SECRET_KEY = "loopkeeper-example-not-secret"  # an example: never deploy with this key
DEBUG = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "example_site.urls"
WSGI_APPLICATION = "example_site.wsgi.application"
USE_TZ = True
TIME_ZONE = "UTC"

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "loopkeeper.contrib.django",  # LOOPKEEPER settings, DB hygiene, status view, server hooks
    "example_jobs",
]
if django.VERSION < (6, 0):
    INSTALLED_APPS.append("django_tasks")  # the Tasks framework's backport, on Django 5.2
LOOPKEEPER = {"SHUTDOWN_TIMEOUT": 10}

# Django's Tasks framework with loopkeeper's backend: @task functions run on this process's
# loopkeeper runner (example_jobs/tasks.py).
TASKS = {"default": {"BACKEND": "loopkeeper.contrib.django.backends.LoopkeeperBackend"}}

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": []},
    }
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": DATA_DIR / "db.sqlite3",
        "OPTIONS": {"timeout": 20},
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {"loopkeeper": {"handlers": ["stderr"], "level": "INFO", "propagate": False}},
}
