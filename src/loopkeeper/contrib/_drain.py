"""What every server hook shares: drain the default runner once, and check a server's timeout.

Owns nothing but two functions and the ``loopkeeper.servers`` logger.  Each server module
(``gunicorn``, ``uwsgi``, Django's ``runserver`` support) calls ``drain()`` from the hook
that server runs as a worker ends, on that worker's main thread.  The drain is the default
runner's own ``shutdown()``: the first call drains and reports, every later one (the
interpreter-exit hook, another server hook) gets the same report, so a worker drains once
and logs one report whichever hooks run.

A server may interrupt the hook: gunicorn's SIGABRT handler raises ``SystemExit`` in the
main thread when its ``timeout`` expires, a second Ctrl-C raises ``KeyboardInterrupt``.
The runner's shutdown then skips to its report (what is unfinished is abandoned and named
in ``shutdown_incomplete``), and ``drain()`` swallows the interruption: the worker is
ending anyway, and a hook that raised would replace the server's own exit with a
traceback.
"""

from __future__ import annotations

import functools
import logging
from typing import Final

import loopkeeper

from ._core import log_to

__all__ = ("GRACE", "drain", "log", "needed_seconds")

GRACE: Final = 1.0  # seconds Runner.shutdown() gives cancelled work after its timeout

# One line to ``loopkeeper.servers``, written the way every loopkeeper logger writes.
log: Final = functools.partial(log_to, "loopkeeper.servers")


def needed_seconds() -> float:
    """How long the default runner's drain may take: its ``shutdown_timeout`` plus the
    grace.  Starts nothing."""
    return loopkeeper.get_runner().shutdown_timeout + GRACE


def drain(hook: str) -> loopkeeper.ShutdownReport | None:
    """Drain the default runner now, from a server's exit hook.  Never raises.

    ``hook`` names the server hook in the log line.  A runner that never accepted a task
    is left alone (None): nothing to drain, and a later submit at exit still works.  Called
    on the runner's own loop thread (a server's C signal handler can run anywhere), it
    cannot wait for the drain: it logs ``server_drain_failed`` and returns None.
    """
    runner = loopkeeper.get_runner()
    try:
        stats = runner.stats()
        if stats.submitted == 0:
            return None
        log(
            logging.INFO,
            "server_drain_started",
            runner=runner.name,
            hook=hook,
            unfinished=stats.pending + stats.running,
        )
        return runner.shutdown()
    except RuntimeError as exc:  # called on the runner's own loop thread: it cannot wait
        log(logging.ERROR, "server_drain_failed", runner=runner.name, hook=hook, error=str(exc))
        return None  # the interpreter-exit hook still drains, from the main thread
    except (SystemExit, KeyboardInterrupt) as exc:
        log(
            logging.WARNING, "server_drain_interrupted", runner=runner.name, hook=hook, by=repr(exc)
        )
        # The report exists if the interruption came inside shutdown(); otherwise this
        # abandons what is left at once and reports it.
        return runner.shutdown(0.0, cancel_remaining=False)
