"""SQLite (RECIPE_DB=sqlite) or the local PostgreSQL (RECIPE_DB=postgresql, RECIPE_PG_NAME)."""

from __future__ import annotations

import os

SECRET_KEY = "the-recipe-project"
DEBUG = False
ALLOWED_HOSTS = ["testserver"]
INSTALLED_APPS = ["loopkeeper.contrib.django", "recipe.apps.RecipeConfig"]
LOOPKEEPER = {"SHUTDOWN_TIMEOUT": 5}  # the fixture's runners take these options too
ROOT_URLCONF = "recipe.urls"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

DATABASES: dict[str, dict[str, object]]
if os.environ.get("RECIPE_DB", "sqlite") == "postgresql":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": os.environ["RECIPE_PG_NAME"],  # the test database is test_<NAME>
            "USER": "postgres",
            "HOST": "127.0.0.1",
            "PORT": "5432",
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": "recipe.sqlite3",
            # A file, not Django's default in-memory test database: there a write by one
            # thread makes the others fail at once ("database table is locked") instead
            # of waiting, so two background tasks writing together would fail at random.
            "TEST": {"NAME": "test_recipe.sqlite3"},
        }
    }
