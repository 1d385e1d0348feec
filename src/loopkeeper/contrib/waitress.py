"""waitress: stop on SIGTERM the way waitress stops on Ctrl-C, so loopkeeper drains.

waitress installs no SIGTERM handler, so SIGTERM (``docker stop``, systemd, Kubernetes)
ends the process at once: no exit hook runs and queued work is lost without a log line.
On Ctrl-C it closes its sockets, waits for the requests in progress and lets the
interpreter exit, so loopkeeper's exit hook drains.  Run waitress through this module
and SIGTERM does the same::

    python -m loopkeeper.contrib.waitress --listen=127.0.0.1:8000 mysite.wsgi:application

The arguments are ``waitress-serve``'s.  From your own script, call ``serve()`` instead
of ``waitress.serve()``.  The SIGTERM handler is installed only here, by your choice to
run waitress this way (waitress itself has none); loopkeeper installs no signal handler
on import.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence
from types import FrameType
from typing import Any

__all__ = ("main", "serve")


def _stop(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)  # waitress's server loop stops on it as on KeyboardInterrupt


def _stop_on_sigterm() -> None:
    signal.signal(signal.SIGTERM, _stop)


def serve(app: Any, **options: Any) -> None:
    """``waitress.serve(app, **options)``, stopping cleanly on SIGTERM too.  Main thread."""
    import waitress  # noqa: PLC0415  only for users who run waitress

    _stop_on_sigterm()
    waitress.serve(app, **options)


def main(argv: Sequence[str] | None = None) -> int:
    """``waitress-serve`` with ``argv`` (default: the command line), stopping cleanly on
    SIGTERM too.  Returns waitress's exit status."""
    from waitress.runner import run  # noqa: PLC0415  only for users who run waitress

    _stop_on_sigterm()
    args = list(sys.argv[1:] if argv is None else argv)
    status = run(["waitress-serve", *args])
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
