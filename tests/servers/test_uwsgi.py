"""uWSGI (the ``pyuwsgi`` wheel: uWSGI 2.0 built as a Python extension, the same server
as the ``uwsgi`` binary): work queued by requests is written before each worker exits.

The site's app config calls ``loopkeeper.contrib.uwsgi.install()``, so each worker
drains in ``uwsgi.atexit``.  The app is loaded in the master before uWSGI forks its
workers (no ``--lazy-apps``), and it runs a loopkeeper job while it loads: each worker
must still get a runner of its own, although uWSGI forks without Python's at-fork hooks.

``pyuwsgi`` runs inside an interpreter that already has threads, so ``uwsgi.has_threads``
is always true there: the warning for a worker without ``--enable-threads`` is tested
with a stand-in ``uwsgi`` module in ``tests/test_server_hooks.py``.
"""

from __future__ import annotations

import shutil
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from ._harness import require

if TYPE_CHECKING:
    from .conftest import Serve

KEYS = ["k0", "k1", "k2", "k3"]


def uwsgi(*args: str) -> list[str]:
    require("pyuwsgi")
    script = shutil.which("uwsgi", path=str(Path(sys.executable).parent)) or "uwsgi"
    return [
        script,
        "--master",
        "--enable-threads",
        "--processes",
        "2",
        "--http-socket",
        "127.0.0.1:{port}",
        "--module",
        "lktest_site.wsgi:application",
        *args,
    ]


@pytest.mark.parametrize(
    ("args", "sig"),
    [
        pytest.param((), signal.SIGINT, id="SIGINT"),
        pytest.param(("--die-on-term",), signal.SIGTERM, id="die-on-term-SIGTERM"),
        pytest.param(
            ("--hook-master-start", "unix_signal:15 gracefully_kill_them_all"),
            signal.SIGTERM,
            id="graceful-SIGTERM",
        ),
    ],
)
def test_idle_workers_drain_in_uwsgi_atexit_each_with_a_runner_of_its_own(
    serve: Serve, args: tuple[str, ...], sig: signal.Signals
) -> None:
    """uWSGI ``--master --enable-threads --processes 2``, stopped while idle: each worker
    drains in ``uwsgi.atexit`` and writes its own jobs' rows (not the master, which used
    loopkeeper before the fork)."""
    served = serve(uwsgi(*args), name="uwsgi", LK_SUBMIT_AT_IMPORT="loop")
    served.wait_ready()
    for key in KEYS:
        served.queue(key)
    assert served.stop(sig) in (0, 30), served.text()  # 30: uWSGI's own exit code
    written = served.assert_all_written(KEYS)
    text = served.text()
    assert "server_drain_started runner='loopkeeper' hook='uwsgi atexit'" in text, text
    assert served.process.pid not in {pid for pid, _ in written.values()}, written
    assert "uwsgi_threads_disabled" not in text, text


def test_worker_reload_mercy_shorter_than_the_drain_kills_it_with_the_manifest_logged(
    serve: Serve,
) -> None:
    """The negative case: with ``--worker-reload-mercy 2`` the master SIGKILLs a worker
    still draining after 2 s.  The jobs are lost, and the drain's first line names them."""
    served = serve(uwsgi("--worker-reload-mercy", "2"), name="uwsgi")
    served.wait_ready()
    served.queue("lost", after=60)
    served.stop(signal.SIGINT)
    text = served.text()
    assert "shutdown_started runner='loopkeeper' unfinished=2" in text, text
    assert "'sync-lost'" in text, text
    assert "'async-lost'" in text, text
    assert served.rows() == {}
