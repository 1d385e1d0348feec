"""The project's app.  loopkeeper's own app (first in INSTALLED_APPS) applies LOOPKEEPER and
installs DjangoHooks on the default runner; nothing loopkeeper-specific happens here."""

from __future__ import annotations

from django.apps import AppConfig


class RecipeConfig(AppConfig):
    name = "recipe"
