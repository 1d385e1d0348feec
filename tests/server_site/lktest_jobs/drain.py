"""Tells the jobs when loopkeeper's drain has begun: a log handler (configured in
``LOGGING``) that sets ``DRAIN_BEGAN`` on the ``shutdown_started`` line."""

from __future__ import annotations

import logging
import threading

DRAIN_BEGAN = threading.Event()


class DrainWatch(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("shutdown_started"):
            DRAIN_BEGAN.set()
