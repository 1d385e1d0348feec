"""Running the test site under a real server: start, probe, queue jobs, stop, read the rows.

The site (``tests/server_site/``: Django on SQLite, see ``lktest_jobs/jobs.py``) answers
``/queue?key=K`` by submitting two jobs, ``sync-K`` and ``async-K``, that each write a row
only after the test acknowledged the response (``ack-K``) and loopkeeper's drain has
begun.  ``Served.queue()`` sends that request, checks both rows are absent when the
response is in, then acknowledges.  After the stop, ``Served.rows()`` reads the database
with ``sqlite3`` (no Django in the test process).

Each server runs in a new session (``start_new_session``) with its output in a file;
every process a test started is ended by PID (and its group) in the fixture's teardown.
``LOOPKEEPER_SKIP_SERVERS=1`` skips these tests locally; with ``CI=true`` nothing skips.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest

ROOT: Final = Path(__file__).resolve().parents[2]
PROJECT: Final = Path(__file__).resolve().parents[1] / "server_site"
EXAMPLE: Final = ROOT / "examples" / "django_app"
START_DEADLINE: Final = 60.0  # seconds a server may take to answer its readiness probe
EXIT_DEADLINE: Final = 60.0  # seconds a server may take to exit once signalled
CI: Final = os.environ.get("CI") == "true"

# Python starts with SIGINT ignored if its parent ignored it (a CI step run in the
# background does): reset it before exec, so the server sees SIGINT as a shell user would.
LAUNCH: Final = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
)


def skip_unless_wanted() -> None:
    """Skip when ``LOOPKEEPER_SKIP_SERVERS=1``, except on CI, which runs every server test;
    skip on Windows (the servers and the stops are POSIX ones)."""
    if sys.platform == "win32":
        pytest.skip("needs POSIX servers and signals sent by PID")
    if os.environ.get("LOOPKEEPER_SKIP_SERVERS") == "1" and not CI:
        pytest.skip("LOOPKEEPER_SKIP_SERVERS=1: real-server tests skipped")


def require(package: str) -> None:
    if importlib.util.find_spec(package) is not None:
        return
    if CI:
        pytest.fail(f"{package} is not installed, and CI must run every server test")
    pytest.skip(f"{package} is not installed (it is in the dev dependency group)")


def python_m(*args: str) -> list[str]:
    """``python -m <args>`` with SIGINT restored to its default first."""
    return [sys.executable, "-c", LAUNCH, "-m", *args]


def python_script(*args: str) -> list[str]:
    """``python <script> <args>`` with SIGINT restored to its default first."""
    return [sys.executable, "-c", LAUNCH, *args]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(port: int, path: str, timeout: float = 30, *, method: str = "GET") -> str:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return str(response.read().decode())


def migrate(directory: Path, project: Path = PROJECT) -> None:
    """Create the site's SQLite database in ``directory``."""
    env = site_env(directory, project=project)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--verbosity", "0"],
        cwd=project,
        env=env,
        check=True,
        timeout=120,
    )


def site_env(
    directory: Path, extra: Mapping[str, str] | None = None, *, project: Path = PROJECT
) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONWARNINGS", None)
    env["PYTHONPATH"] = os.pathsep.join([str(project), str(ROOT / "src")])
    env["LK_TEST_DIR"] = str(directory)
    env["PYTHONUNBUFFERED"] = "1"
    env["XDG_RUNTIME_DIR"] = str(directory)  # gunicorn's control socket: one per test
    env.update(extra or {})
    return env


@dataclass
class ServerProcess:
    """A server process a test started, its port and its combined output (the ASGI server
    tests use it too)."""

    process: subprocess.Popen[bytes]
    port: int
    output: Path

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def wait_ready(self) -> None:
        """Poll ``/health`` until the server answers; fail if it died or took too long."""
        deadline = time.monotonic() + START_DEADLINE
        while True:
            if self.process.poll() is not None:
                pytest.fail(f"server exited with {self.process.returncode}:\n{self.text()}")
            try:
                get(self.port, "/health")  # a probe that timed out and was retried counts twice
            except urllib.error.HTTPError:
                return  # it answered, if only with an error status
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            else:
                return
            if time.monotonic() > deadline:
                pytest.fail(f"server not ready after {START_DEADLINE}s:\n{self.text()}")
            time.sleep(0.1)

    def stop(self, sig: signal.Signals) -> int:
        """Send ``sig`` to the server's main process; wait for it to exit."""
        self.process.send_signal(sig)
        return self.wait_exit()

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the server's main process; do not wait."""
        self.process.send_signal(sig)

    def wait_exit(self) -> int:
        try:
            return self.process.wait(EXIT_DEADLINE)
        except subprocess.TimeoutExpired:
            pytest.fail(f"server still running {EXIT_DEADLINE}s after the stop:\n{self.text()}")


@dataclass
class Served(ServerProcess):
    """A server process serving the site: its port, its output and its database, and a
    Unix socket path (``{stats}`` in the command) for a server's stats server: a path,
    not a second TCP port, which another server started meanwhile could take."""

    directory: Path
    stats: Path

    def queue(self, key: str, after: float = 0.3) -> int:
        """Queue ``sync-<key>`` and ``async-<key>``; check neither row exists once the
        response is in; acknowledge.  Returns the pid that served the request."""
        answer = get(self.port, f"/queue?key={key}&after={after}")
        assert answer.startswith(f"queued {key} pid="), answer
        written = self.rows()
        assert f"sync-{key}" not in written, "the sync job finished before the response"
        assert f"async-{key}" not in written, "the async job finished before the response"
        (self.directory / f"ack-{key}").touch()
        return int(answer.rsplit("=", 1)[1])

    def rows(self) -> dict[str, tuple[int, bool]]:
        """Each written row: key -> (pid, written during the drain)."""
        with contextlib.closing(sqlite3.connect(self.directory / "db.sqlite3", timeout=30)) as db:
            found = db.execute("SELECT key, pid, during_drain FROM lktest_jobs_row").fetchall()
        return {key: (pid, bool(during)) for key, pid, during in found}

    def wait_for(
        self, text: str, deadline: float = 60.0, *, count: int = 1, fail: bool = True
    ) -> bool:
        """Wait until the output contains ``text`` (``count`` times); fail if the server
        exits first, or after ``deadline`` seconds (with ``fail=False``: return False)."""
        limit = time.monotonic() + deadline
        while self.text().count(text) < count:
            if self.process.poll() is not None and self.text().count(text) < count:
                pytest.fail(f"server exited before logging {text!r}:\n{self.text()}")
            if time.monotonic() > limit:
                if not fail:
                    return False
                pytest.fail(f"{text!r} not logged within {deadline}s:\n{self.text()}")
            time.sleep(0.05)
        return True

    def assert_all_written(self, keys: list[str]) -> dict[str, tuple[int, bool]]:
        """Every job of ``keys`` wrote its row, during loopkeeper's drain."""
        written = self.rows()
        text = self.text()
        for key in keys:
            for kind in ("sync", "async"):
                assert f"{kind}-{key}" in written, f"{kind}-{key} lost:\n{text}"
                assert written[f"{kind}-{key}"][1], f"{kind}-{key} finished before the drain"
        return written


def start(
    command: list[str],
    directory: Path,
    *,
    name: str,
    env: Mapping[str, str] | None = None,
    project: Path = PROJECT,
) -> Served:
    """Start ``command`` (which serves the site on the port ``{port}`` stands for;
    ``{stats}`` is a Unix socket path in ``directory``)."""
    port = free_port()
    stats = directory / f"{name}.stats"
    output = directory / f"{name}.log"
    with output.open("wb") as sink:
        process = subprocess.Popen(
            [part.format(port=port, stats=stats) for part in command],
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=site_env(directory, env, project=project),
            cwd=project,
            start_new_session=True,  # its workers too can be ended as one group
        )
    return Served(process, port, output, directory, stats)


def end(process: subprocess.Popen[bytes]) -> None:
    """Stop a server the test started, and every process of its group, whatever its state."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    # Workers left behind by a master that died: the new session's group is this test's.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
