"""``./scripts/example --check``: start the example under ``runserver``, queue jobs with
one request, check that they finish after the response, stop the server.  Exit 0 when
all is well; on failure, print why and the server's output, exit 1.

Run from anywhere with the example's environment (``tests/test_example.py`` runs it with
the test environment).  Uses a fresh database in a temporary directory, a free port on
127.0.0.1, and stops the server with Ctrl-C (SIGINT) by its PID.
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEADLINE = 60.0  # seconds for the server to start, and for the jobs to finish


class CheckFailed(Exception):
    pass


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(
    opener: urllib.request.OpenerDirector, url: str, server: subprocess.Popen[bytes]
) -> None:
    deadline = time.monotonic() + DEADLINE
    while True:
        if server.poll() is not None:
            raise CheckFailed(f"the server exited with {server.returncode}")
        try:
            opener.open(url, timeout=5).read()  # also sets the CSRF cookie
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if time.monotonic() > deadline:
                raise CheckFailed(f"no answer from {url} within {DEADLINE}s") from None
            time.sleep(0.2)
        else:
            return


def _check(url: str, server: subprocess.Popen[bytes]) -> list[dict[str, Any]]:
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    _wait_ready(opener, url, server)
    token = next(str(cookie.value) for cookie in jar if cookie.name == "csrftoken")
    request = urllib.request.Request(
        url + "queue",
        method="POST",
        headers={"Accept": "application/json", "X-CSRFToken": token, "Referer": url},
    )
    batch = json.load(opener.open(request, timeout=30))["batch"]
    deadline = time.monotonic() + DEADLINE
    while True:
        answer = json.load(opener.open(f"{url}jobs.json?batch={batch}", timeout=30))
        jobs: list[dict[str, Any]] = answer["jobs"]
        if jobs and all(job["state"] == "done" for job in jobs):
            break
        if time.monotonic() > deadline:
            raise CheckFailed(f"jobs not finished within {DEADLINE}s: {jobs}")
        time.sleep(0.2)
    kinds = sorted(job["kind"] for job in jobs)
    if kinds != ["async", "blocking", "task"]:
        raise CheckFailed(f"expected an async, a blocking and a Tasks-framework job: {jobs}")
    for job in jobs:
        responded = datetime.fromisoformat(job["responded_at"])
        finished = datetime.fromisoformat(job["finished_at"])
        if not finished > responded:
            raise CheckFailed(f"the {job['kind']} job finished before the response: {job}")
    status = json.load(opener.open(f"{url}loopkeeper/status/", timeout=30))
    if status.get("stats", {}).get("succeeded", 0) < len(jobs):
        raise CheckFailed(f"the status view does not count the jobs: {status}")
    print(f"runner stats: {answer['stats']}")
    return jobs


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="loopkeeper-example-") as data:
        env = dict(os.environ, EXAMPLE_DATA_DIR=data, PYTHONUNBUFFERED="1")
        manage = [sys.executable, str(HERE / "manage.py")]
        subprocess.run([*manage, "migrate", "--verbosity", "0"], env=env, check=True, cwd=HERE)
        port = _free_port()
        url = f"http://127.0.0.1:{port}/"
        log = Path(data) / "server.log"
        with log.open("wb") as sink:
            server = subprocess.Popen(
                [*manage, "runserver", "--noreload", f"127.0.0.1:{port}"],
                env=env,
                cwd=HERE,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        try:
            jobs = _check(url, server)
            server.send_signal(signal.SIGINT)
            status = server.wait(DEADLINE)
            if status != 0:
                raise CheckFailed(f"the server exited with {status} after Ctrl-C")
        except (CheckFailed, OSError, subprocess.SubprocessError) as exc:
            print(f"check failed: {exc}\n--- server output ---\n{log.read_text()}", file=sys.stderr)
            return 1
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
        kinds = ", ".join(job["kind"] for job in jobs)
        print(f"ok: {len(jobs)} jobs ({kinds}) finished after the response; server stopped")
        return 0


if __name__ == "__main__":
    sys.exit(main())
