"""Log lines: the only module that touches structlog or the stdlib ``logging``.

When the application configured structlog (``structlog.is_configured()``), events go
through its processors as ``event`` plus key-value fields.  When it did not, they go to
the stdlib logger ``loopkeeper`` (so Django's ``LOGGING``, pytest's ``caplog`` and any
handler see them) with the fields rendered into the message text, so that even Python's
last-resort handler (warnings and errors to stderr) shows the task's id and name.  The
library never configures structlog or logging and adds no handler.

Event names are stable snake_case identifiers, subject then past participle.  Fields
are task ids, names, states, counts and durations: never a task's arguments or result.
"""

from __future__ import annotations

import logging
import sys
import traceback
from typing import Any, Final

import structlog

__all__ = ("DEBUG", "ERROR", "INFO", "WARNING", "debug_enabled", "log", "log_to")

DEBUG: Final = logging.DEBUG
INFO: Final = logging.INFO
WARNING: Final = logging.WARNING
ERROR: Final = logging.ERROR

_METHOD: Final = {DEBUG: "debug", INFO: "info", WARNING: "warning", ERROR: "error"}
_stdlib: Final = logging.getLogger("loopkeeper")


_is_configured: Final = structlog.is_configured
_stdlib_enabled_for: Final = _stdlib.isEnabledFor


def debug_enabled() -> bool:
    """Cheap check before building a DEBUG line on a hot path."""
    return _is_configured() or _stdlib_enabled_for(DEBUG)


def log(level: int, event: str, /, *, exc_info: BaseException | None = None, **fields: Any) -> None:
    """Emit one event to the ``loopkeeper`` logger.  Any thread; never raises because of
    logging itself.

    A logging filter, handler or structlog processor that raises costs its line only: the
    failure is printed to stderr, as the stdlib's ``Handler.handleError`` does, and the
    caller's bookkeeping goes on.  (A ``KeyboardInterrupt`` or ``SystemExit`` still
    propagates: those are not logging failures.)
    """
    _emit(_stdlib, "loopkeeper", level, event, exc_info, fields)


def log_to(
    logger: str,
    level: int,
    event: str,
    /,
    *,
    exc_info: BaseException | None = None,
    **fields: Any,
) -> None:
    """``log()`` to another logger of loopkeeper's: contrib's ``loopkeeper.asgi`` and
    ``loopkeeper.servers``.  Shared with ``loopkeeper.contrib`` on purpose, so that every
    loopkeeper line reads the same and never raises because of logging."""
    stdlib = _LOGGERS.get(logger)
    if stdlib is None:
        stdlib = _LOGGERS.setdefault(logger, logging.getLogger(logger))
    _emit(stdlib, logger, level, event, exc_info, fields)


_LOGGERS: dict[str, logging.Logger] = {}  # by name: getLogger() takes a lock every call


def _emit(
    stdlib: logging.Logger,
    name: str,
    level: int,
    event: str,
    exc_info: BaseException | None,
    fields: dict[str, Any],
) -> None:
    """The one way a line is written (``log()`` and ``log_to()`` call it: the caller of
    those is two frames up, which ``stacklevel`` names as the line's origin)."""
    try:
        if structlog.is_configured():
            method = getattr(structlog.get_logger(name), _METHOD[level])
            if exc_info is not None:
                method(event, exc_info=exc_info, **fields)
            else:
                method(event, **fields)
            return
        if not stdlib.isEnabledFor(level):
            return
        text = " ".join([event, *(f"{key}={value!r}" for key, value in fields.items())])
        stdlib.log(
            level,
            text,
            exc_info=(type(exc_info), exc_info, exc_info.__traceback__) if exc_info else None,
            extra={"event": event, "loopkeeper": fields},
            stacklevel=3,
        )
    except Exception:  # noqa: BLE001  a broken handler, filter or processor must not break us
        _report_failure(event)


def _report_failure(event: str) -> None:
    """What the stdlib does when a handler fails: a traceback on stderr, if anywhere."""
    stderr = sys.stderr
    if not logging.raiseExceptions or stderr is None:
        return
    try:
        stderr.write(f"--- loopkeeper: logging the event {event!r} failed ---\n")
        traceback.print_exc(file=stderr)
    except (OSError, ValueError):  # stderr is broken or closed: nothing is left to tell
        return
