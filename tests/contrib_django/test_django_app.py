"""The app: LOOPKEEPER settings, system checks, and the status view.

In-process on the session's settings (conftest.py); what needs a fresh Django (a bad
setting at ``django.setup()``, no thread started by ``ready()`` or the status view) runs
in a child interpreter.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.apps import apps
from django.contrib.auth.models import AnonymousUser, User
from django.core.checks import run_checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import Client, RequestFactory, override_settings
from django.urls import reverse

import loopkeeper
from loopkeeper.contrib.django import checks
from loopkeeper.contrib.django._settings import RUNNER_DEFAULTS
from loopkeeper.contrib.django.apps import LoopkeeperConfig
from loopkeeper.contrib.django.views import status

from .conftest import SESSION_LOOPKEEPER

SRC = Path(__file__).resolve().parents[2] / "src"

# -- settings ---------------------------------------------------------------------------------


def test_settings_are_applied_to_the_default_runner() -> None:
    """``ready()`` gave the session's LOOPKEEPER to the default runner."""
    runner = loopkeeper.get_runner()
    assert runner.max_concurrency == SESSION_LOOPKEEPER["MAX_CONCURRENCY"]
    assert runner.shutdown_timeout == SESSION_LOOPKEEPER["SHUTDOWN_TIMEOUT"]
    assert runner.max_pending == RUNNER_DEFAULTS["MAX_PENDING"]


def test_every_configure_option_is_a_setting_with_the_runners_default() -> None:
    """Each keyword ``configure()`` takes (but the app's own ``hooks``) is a key,
    upper-cased, defaulting to the Runner's default."""
    parameters = inspect.signature(loopkeeper.Runner).parameters
    assert set(RUNNER_DEFAULTS) == {name.upper() for name in parameters} - {"HOOKS"}
    assert RUNNER_DEFAULTS == {
        "NAME": "loopkeeper",
        "MAX_PENDING": 10_000,
        "MAX_CONCURRENCY": None,
        "MAX_THREADS": 40,
        "SHUTDOWN_TIMEOUT": 10.0,
        "LOOP_FACTORY": None,
        "WATCHDOG_THRESHOLD": 3.0,
    }


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ({"MAX_PENDING": -1}, "LOOPKEEPER['MAX_PENDING']: expected a positive int, got -1"),
        ({"MAX_PENDING": "10"}, "LOOPKEEPER['MAX_PENDING']: expected a positive int"),
        ({"MAX_PENDING": True}, "LOOPKEEPER['MAX_PENDING']: expected a positive int"),
        ({"MAX_THREADS": 0}, "LOOPKEEPER['MAX_THREADS']: expected a positive int, got 0"),
        ({"MAX_CONCURRENCY": 1.5}, "LOOPKEEPER['MAX_CONCURRENCY']: expected a positive int"),
        ({"SHUTDOWN_TIMEOUT": -1.0}, "LOOPKEEPER['SHUTDOWN_TIMEOUT']: expected a number"),
        ({"WATCHDOG_THRESHOLD": 0}, "LOOPKEEPER['WATCHDOG_THRESHOLD']: expected a number"),
        ({"NAME": ""}, "LOOPKEEPER['NAME']: expected a non-empty str"),
        ({"LOOP_FACTORY": 3}, "LOOPKEEPER['LOOP_FACTORY']: expected a callable or None"),
        ({"LOOP_FACTORY": "no_such_module.new_loop"}, "LOOPKEEPER['LOOP_FACTORY']: cannot import"),
        ({"STATUS_SHOW_NAMES": "yes"}, "LOOPKEEPER['STATUS_SHOW_NAMES']: expected True or False"),
        ({"MAX_PENDNG": 5}, "unknown key 'MAX_PENDNG'; the keys are"),
        ({"MAX_PENDNG": 5}, "(did you mean 'MAX_PENDING'?)"),
        ({1: 5}, "unknown key 1"),
        (["MAX_PENDING", 5], "LOOPKEEPER: expected a dict, got list"),
    ],
)
def test_bad_setting_fails_manage_check_naming_the_key(setting: object, expected: str) -> None:
    """A wrong type, a bad range or an unknown key is a system check error
    (loopkeeper.E001) whose message names the key: ``manage.py check`` fails."""
    with override_settings(LOOPKEEPER=setting):
        errors = checks.check_settings()
        assert [error.id for error in errors] == ["loopkeeper.E001"]
        assert expected in errors[0].msg
        with pytest.raises(SystemCheckError, match=r"loopkeeper\.E001"):
            call_command("check", verbosity=0)


def test_good_settings_pass_manage_check() -> None:
    """The session's settings and a full set of valid keys raise no check error."""
    call_command("check", verbosity=0)
    every_key = {
        "NAME": "site",
        "MAX_PENDING": 50_000,
        "MAX_CONCURRENCY": 8,
        "MAX_THREADS": 16,
        "SHUTDOWN_TIMEOUT": 25,
        "LOOP_FACTORY": "asyncio.new_event_loop",
        "WATCHDOG_THRESHOLD": None,
        "STATUS_SHOW_NAMES": True,
    }
    with override_settings(LOOPKEEPER=every_key):
        assert checks.check_settings() == []


def test_settings_not_applied_once_the_runner_started_is_a_check_error() -> None:
    """If the default runner started before ``ready()`` (work submitted at import
    time), ``ready()`` does not crash: loopkeeper.E002 says the settings were not applied."""
    config = apps.get_app_config("loopkeeper")
    assert isinstance(config, LoopkeeperConfig)
    assert loopkeeper.submit(_answer).result(timeout=10) == 42  # the runner runs now
    try:
        config.ready()
        errors = checks.check_settings()
        assert [error.id for error in errors] == ["loopkeeper.E002"]
        assert "has already started" in errors[0].msg
    finally:
        config.not_applied = None


def _answer() -> int:
    return 42


# -- the traps ---------------------------------------------------------------------------------


@pytest.fixture
def fake_uwsgi() -> Iterator[types.SimpleNamespace]:
    """A ``uwsgi`` module as uWSGI injects it into its workers."""
    module = types.SimpleNamespace(has_threads=1)
    sys.modules["uwsgi"] = module  # type: ignore[assignment]
    try:
        yield module
    finally:
        del sys.modules["uwsgi"]


def test_uwsgi_without_threads_is_warned_about(fake_uwsgi: types.SimpleNamespace) -> None:
    """Inside uWSGI with ``has_threads`` false, loopkeeper.W001 says to enable threads."""
    fake_uwsgi.has_threads = 0
    warnings = checks.check_uwsgi()
    assert [warning.id for warning in warnings] == ["loopkeeper.W001"]
    assert "--enable-threads" in (warnings[0].hint or "")


def test_uwsgi_without_threads_is_logged_at_start_up(
    fake_uwsgi: types.SimpleNamespace, caplog: pytest.LogCaptureFixture
) -> None:
    """uWSGI never runs system checks, so ``ready()`` inside it logs W001 as a warning."""
    fake_uwsgi.has_threads = 0
    config = apps.get_app_config("loopkeeper")
    assert isinstance(config, LoopkeeperConfig)
    try:
        with caplog.at_level(logging.WARNING, logger="loopkeeper.django"):
            config.ready()
    finally:
        config.not_applied = None  # configure() refuses once the runner has started
    lines = [r.getMessage() for r in caplog.records if r.name == "loopkeeper.django"]
    assert len(lines) == 1
    assert "uwsgi.has_threads is false" in lines[0]
    assert "loopkeeper.W001" in lines[0]


def test_uwsgi_with_threads_or_no_uwsgi_is_fine(fake_uwsgi: types.SimpleNamespace) -> None:
    """With threads enabled there is no warning, nor outside uWSGI."""
    assert checks.check_uwsgi() == []
    del sys.modules["uwsgi"]
    try:
        assert checks.check_uwsgi() == []
    finally:
        sys.modules["uwsgi"] = fake_uwsgi  # type: ignore[assignment]


@pytest.mark.parametrize(
    ("version", "warned"),
    [
        ((3, 12, 0), True),
        ((3, 12, 1), True),
        ((3, 12, 2), True),
        ((3, 12, 3), False),
        ((3, 11, 7), False),
        ((3, 13, 0), False),
    ],
)
def test_python_3_12_0_to_3_12_2_is_warned_about(
    version: tuple[int, int, int], warned: bool
) -> None:
    """CPython 3.12.0-3.12.2 (no new threads during exit) gets loopkeeper.W002."""
    ids = [warning.id for warning in checks.python_warnings(version)]
    assert ids == (["loopkeeper.W002"] if warned else [])


def test_python_check_looks_at_this_interpreter() -> None:
    """The registered check reports exactly what this interpreter's version warrants."""
    major, minor, micro = sys.version_info[:3]
    expected = [w.id for w in checks.python_warnings((major, minor, micro))]
    assert [w.id for w in checks.check_python()] == expected
    all_ids = [message.id for message in _run_checks()]
    assert ("loopkeeper.W002" in all_ids) == bool(expected)


def _run_checks() -> list[Any]:
    return list(run_checks())


# -- the status view ---------------------------------------------------------------------------


def test_status_url_pattern_is_documented_one() -> None:
    """``include("loopkeeper.contrib.django.urls")`` under ``loopkeeper/`` serves the
    view at ``loopkeeper/status/``, URL name ``loopkeeper:status``."""
    assert reverse("loopkeeper:status") == "/loopkeeper/status/"


def test_status_gives_anonymous_requests_counts_only() -> None:
    """Anonymous requests get the runner's counters, no task or thread names."""
    response = Client().get("/loopkeeper/status/")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert "no-cache" in response["Cache-Control"]
    body = response.json()
    assert set(body) == {"runner", "stats"}
    assert body["runner"] == loopkeeper.get_runner().name
    stats = body["stats"]
    assert set(stats) == {
        "submitted",
        "pending",
        "running",
        "succeeded",
        "failed",
        "cancelled",
        "abandoned",
        "rejected",
        "threads",
        "loop_lag",
    }
    assert stats["submitted"] == sum(
        stats[k] for k in ("pending", "running", "succeeded", "failed", "cancelled", "abandoned")
    )


def test_status_refuses_other_methods() -> None:
    """Only GET and HEAD are answered."""
    assert Client().post("/loopkeeper/status/").status_code == 405


@pytest.fixture
def named_job_running() -> Iterator[str]:
    """A sync job named with an id runs (blocked) on a worker thread of the default runner."""
    entered, release = threading.Event(), threading.Event()

    def job() -> None:
        entered.set()
        release.wait(10)

    handle = loopkeeper.submit(job, name="welcome-mail-user-42")
    assert entered.wait(10), "job never started"
    try:
        yield handle.name
    finally:
        release.set()
        handle.result(timeout=10)


def _staff_request() -> Any:
    request = RequestFactory().get("/loopkeeper/status/")
    request.user = User(username="ops", is_staff=True)
    return request


def test_status_names_threads_and_tasks_to_staff_only(named_job_running: str) -> None:
    """Staff get each tracked thread with its task's name; others do not see names."""
    response = status(_staff_request())
    detail = json.loads(response.content)["threads_detail"]
    assert named_job_running in [thread["task_name"] for thread in detail]
    assert all(thread["name"].startswith("loopkeeper-worker-") for thread in detail)

    anonymous = RequestFactory().get("/loopkeeper/status/")
    anonymous.user = AnonymousUser()
    body = json.loads(status(anonymous).content)
    assert "threads_detail" not in body
    assert named_job_running not in json.dumps(body)
    assert body["stats"]["threads"] >= 1


def test_status_shows_names_to_all_when_the_setting_says_so(named_job_running: str) -> None:
    """``STATUS_SHOW_NAMES`` True shows the names to every request."""
    with override_settings(LOOPKEEPER={**SESSION_LOOPKEEPER, "STATUS_SHOW_NAMES": True}):
        body = Client().get("/loopkeeper/status/").json()
    assert named_job_running in [thread["task_name"] for thread in body["threads_detail"]]


# -- a fresh Django ------------------------------------------------------------------------------

_FRESH_DJANGO = """
import json, sys, threading
import django
from django.conf import settings

settings.configure(
    SECRET_KEY="x",
    INSTALLED_APPS=["loopkeeper.contrib.django"],
    ROOT_URLCONF="lk_fresh_urls",
    ALLOWED_HOSTS=["testserver"],
    LOOPKEEPER=json.loads(sys.argv[1]),
)
django.setup()  # must not raise, whatever LOOPKEEPER holds
import loopkeeper
from django.core.checks import run_checks
from django.core.management import call_command
from django.test import Client

after_setup = threading.active_count()
runner = loopkeeper.get_runner()
response = Client().get("/loopkeeper/status/")
try:
    call_command("check", verbosity=0)
    check = "passed"
except Exception as exc:
    check = str(exc)
print(json.dumps({
    "threads_after_setup": after_setup,
    "threads_after_status": threading.active_count(),
    "runner": repr(runner),
    "max_pending": runner.max_pending,
    "status": response.status_code,
    "check": check,
}))
"""


def _fresh_django(tmp_path: Path, loopkeeper_setting: dict[str, object]) -> dict[str, Any]:
    (tmp_path / "lk_fresh_urls.py").write_text(
        textwrap.dedent("""
            from django.urls import include, path
            urlpatterns = [path("loopkeeper/", include("loopkeeper.contrib.django.urls"))]
        """)
    )
    path = os.pathsep.join([str(SRC), str(tmp_path)])
    proc = subprocess.run(
        [sys.executable, "-c", _FRESH_DJANGO, json.dumps(loopkeeper_setting)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": path},
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_fresh_django_with_bad_settings_starts_fine_and_fails_check(tmp_path: Path) -> None:
    """In a fresh process, bad LOOPKEEPER values never crash ``django.setup()``: the
    runner keeps its defaults, ``ready()`` and the status view start no thread (the
    runner stays idle), and ``manage.py check`` fails naming every bad key."""
    seen = _fresh_django(tmp_path, {"MAX_PENDING": -5, "SHUTDOWN_TIMEOUT": "soon", "BOGUS": 1})
    assert seen["threads_after_setup"] == 1
    assert seen["threads_after_status"] == 1
    assert "idle" in seen["runner"]
    assert seen["max_pending"] == RUNNER_DEFAULTS["MAX_PENDING"]
    assert seen["status"] == 200
    for key in ("MAX_PENDING", "SHUTDOWN_TIMEOUT", "BOGUS"):
        assert key in seen["check"]
    assert seen["check"].count("loopkeeper.E001") == 3
