"""Single-process servers: waitress, uvicorn (Django's ASGI handler) and ``runserver``.

Each serves the test site; the jobs its requests queue write their rows only once
loopkeeper's drain has begun (see ``_harness``), so every row proves the drain waited.
"""

from __future__ import annotations

import itertools
import os
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ._harness import EXAMPLE, get, python_m, python_script, require

if TYPE_CHECKING:
    from .conftest import Serve


KEYS = ["k0", "k1"]


def waitress() -> list[str]:
    require("waitress")
    return python_script(
        str(EXAMPLE / "waitress_serve.py"),
        "--listen=127.0.0.1:{port}",
        "lktest_site.wsgi:application",
    )


def runserver(*args: str) -> list[str]:
    require("django")
    return python_script("manage.py", "runserver", *args, "127.0.0.1:{port}")


def test_waitress_through_the_sigterm_script_drains_on_sigterm_and_on_sigint(
    serve: Serve,
) -> None:
    """``examples/django_app/waitress_serve.py``, two servers side by side: SIGTERM stops
    waitress as Ctrl-C (SIGINT) does (it closes, then the interpreter exits), so in both
    the exit hook drains every job."""
    servers = {
        sig: serve(waitress(), name=f"waitress-{sig.name}")
        for sig in (signal.SIGTERM, signal.SIGINT)
    }
    for sig, served in servers.items():
        served.wait_ready()
        for key in KEYS:
            served.queue(f"{sig.name}-{key}")
    for sig, served in servers.items():
        served.signal(sig)
    for sig, served in servers.items():
        assert served.wait_exit() == 0, served.text()
        served.assert_all_written([f"{sig.name}-{key}" for key in KEYS])


def test_plain_waitress_sigterm_loses_the_work_without_a_line(serve: Serve) -> None:
    """Why the script exists: plain ``waitress-serve`` has no SIGTERM handler, so the
    process dies of the signal, no exit hook runs and the jobs are lost silently.  If
    waitress changes this, this test fails and the README's table needs a new row."""
    require("waitress")
    served = serve(
        python_m("waitress", "--listen=127.0.0.1:{port}", "lktest_site.wsgi:application"),
        name="waitress",
    )
    served.wait_ready()
    served.queue("lost", after=60)
    assert served.stop(signal.SIGTERM) == -signal.SIGTERM, served.text()
    assert "shutdown_started" not in served.text()
    assert served.rows() == {}


def test_waitress_killed_during_the_drain_leaves_the_manifest_in_the_log(serve: Serve) -> None:
    """The negative case: a SIGKILL after the drain began (a process manager's kill
    timeout shorter than the drain) loses the jobs, and the drain's first line names them."""
    served = serve(waitress(), name="waitress")
    served.wait_ready()
    served.queue("lost", after=60)
    served.process.send_signal(signal.SIGTERM)
    served.wait_for("shutdown_started")
    assert served.stop(signal.SIGKILL) == -signal.SIGKILL
    text = served.text()
    assert "shutdown_started runner='loopkeeper' unfinished=2" in text, text
    assert "'sync-lost'" in text, text
    assert "'async-lost'" in text, text
    assert served.rows() == {}


def test_uvicorn_django_asgi_in_lifespan_middleware_drains_on_sigterm(serve: Serve) -> None:
    """uvicorn serving Django's ASGI handler wrapped in ``LifespanMiddleware``: on
    SIGTERM the middleware drains the jobs on ``lifespan.shutdown`` (uvicorn runs no exit
    hook after it), sync and async alike."""
    require("uvicorn")
    served = serve(
        python_m(
            "uvicorn", "lktest_site.asgi:application", "--host", "127.0.0.1", "--port", "{port}"
        ),
        name="uvicorn",
    )
    served.wait_ready()
    for key in KEYS:
        served.queue(key)
    assert served.stop(signal.SIGTERM) == -signal.SIGTERM, served.text()
    served.assert_all_written(KEYS)
    text = served.text()
    assert text.index("shutdown_completed") < text.index("Finished server process"), text


def test_runserver_noreload_drains_on_ctrl_c(serve: Serve) -> None:
    """``runserver --noreload`` stopped with Ctrl-C (SIGINT): Django exits normally and
    loopkeeper's exit hook drains every job."""
    served = serve(runserver("--noreload"), name="runserver")
    served.wait_ready()
    for key in KEYS:
        served.queue(key)
    assert served.stop(signal.SIGINT) == 0, served.text()
    served.assert_all_written(KEYS)


def test_runserver_noreload_sigterm_runs_no_hook_and_loses_the_work(serve: Serve) -> None:
    """Documented, not fixed: SIGTERM to ``runserver --noreload`` ends the process by
    Python's default action (Django handles no SIGTERM there), so no hook runs and the
    jobs are lost without a line.  If Django changes this, the README's table must too."""
    served = serve(runserver("--noreload"), name="runserver")
    served.wait_ready()
    served.queue("lost", after=60)
    assert served.stop(signal.SIGTERM) == -signal.SIGTERM, served.text()
    assert "shutdown_started" not in served.text()
    assert served.rows() == {}


def test_runserver_reload_after_a_code_change_drains_before_the_new_server_starts(
    serve_copy: Serve, site_copy: Path
) -> None:
    """A code change makes the autoreloader restart its child: loopkeeper's
    ``file_changed`` receiver drains first (``shutdown_started`` names the jobs), the old
    child keeps answering meanwhile without a traceback, every row is written, and the
    new child serves afterwards."""
    served = serve_copy(runserver(), name="runserver")
    served.wait_ready()
    for key in KEYS:
        served.queue(key, after=1.0)
    views = site_copy / "lktest_jobs" / "views.py"
    original = views.read_text()
    hook = "server_drain_started runner='loopkeeper' hook='runserver reload'"
    deadline = time.monotonic() + 60
    # The reloader compares each file's mtime with the one it saw on its previous pass
    # (every second), and it may first see views.py only after a change: change it again
    # until the drain begins.
    for change in itertools.count(1):
        views.write_text(f"{original}\n# changed by the test ({change})\n")
        if served.wait_for(hook, deadline=1.0, fail=False):
            break
        assert time.monotonic() < deadline, f"no reload within 60 s:\n{served.text()}"
    assert get(served.port, "/health") == "ok"  # the old child answers during the drain
    served.wait_for("development server at http://", count=2)  # the new child
    served.wait_ready()
    served.assert_all_written(KEYS)
    assert served.stop(signal.SIGINT) == 0, served.text()
    text = served.text()
    assert "shutdown_started runner='loopkeeper' unfinished=4" in text, text
    assert text.count("shutdown_started") == 1, text
    assert "Traceback" not in text, text


def test_runserver_ctrl_c_with_autoreload_kills_the_drain_but_logs_the_manifest(
    serve: Serve,
) -> None:
    """Documented, not fixed: on Ctrl-C (SIGINT to the whole process group, as a terminal
    sends it) the autoreloader's parent gives its child 0.25 s, then SIGKILL.  The drain
    has begun by then, and its first line names the jobs that are lost."""
    served = serve(runserver(), name="runserver")
    served.wait_ready()
    served.queue("lost", after=60)
    os.killpg(served.process.pid, signal.SIGINT)
    served.wait_exit()
    text = served.text()
    assert "shutdown_started runner='loopkeeper' unfinished=2" in text, text
    assert "'sync-lost'" in text, text
    assert "'async-lost'" in text, text
    assert served.rows() == {}
