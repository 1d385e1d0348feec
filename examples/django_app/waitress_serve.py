"""Serve a WSGI app with waitress, stopping on SIGTERM as waitress stops on Ctrl-C.

waitress handles no SIGTERM, so ``docker stop``, systemd or Kubernetes would end the
process at once: no exit hook runs, and loopkeeper cannot drain.  On Ctrl-C waitress
closes, waits for the requests in progress and lets the interpreter exit, and then
loopkeeper's exit hook drains.  This script makes SIGTERM do the same; its arguments
are ``waitress-serve``'s::

    python waitress_serve.py --listen=127.0.0.1:8000 example_site.wsgi:application

(loopkeeper itself installs no signal handler: this one is yours to keep or adapt.)
"""

import signal
import sys
from types import FrameType

from waitress.runner import run


def stop(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)  # waitress's server loop stops on it as on KeyboardInterrupt


signal.signal(signal.SIGTERM, stop)
sys.exit(run(sys.argv) or 0)
