"""A signup, and the mails its tasks send."""

from __future__ import annotations

from django.db import models


class Signup(models.Model):
    email: models.CharField[str, str] = models.CharField(max_length=100)


class Mail(models.Model):
    to: models.CharField[str, str] = models.CharField(max_length=100)
    kind: models.CharField[str, str] = models.CharField(max_length=20)
