"""The core's private helpers that ``loopkeeper.contrib`` shares on purpose, in one place.

Everything else contrib needs comes from the public ``loopkeeper`` API.  These are not
public because an application has no use for them, but an adapter must not copy them:
``log_to`` writes a line the way every loopkeeper logger does (structlog or the stdlib,
fields as text, never raising because of logging), and ``check_optional_seconds`` and
``describe`` check an option and word its error as the core's own options do.
"""

from __future__ import annotations

from .._logging import log_to
from .._validation import check_optional_seconds, describe

__all__ = ("check_optional_seconds", "describe", "log_to")
