"""Installs loopkeeper's Django hooks on the default runner, as docs/django.md says."""

from __future__ import annotations

from django.apps import AppConfig

import loopkeeper


class RecipeConfig(AppConfig):
    name = "recipe"

    def ready(self) -> None:
        from loopkeeper.contrib.django.hygiene import DjangoHooks  # noqa: PLC0415  after setup

        loopkeeper.configure(hooks=DjangoHooks())
