"""The README's first command, in the mode CI runs: ``./scripts/example --check``.

``scripts/example --check`` makes its own environment, then runs
``examples/django_app/check.py``; this test runs that same check with the test
environment's Python (which has Django), so the example is proved on every Python the
suite runs on without a second environment.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

from ._harness import EXAMPLE, ROOT, skip_unless_wanted


def test_example_check_queues_jobs_that_finish_after_the_response() -> None:
    """``check.py`` starts the example under ``runserver`` on a free port, queues one job
    of each kind with a POST, sees each finish after the response, stops the server with
    Ctrl-C and exits 0."""
    skip_unless_wanted()
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    env.pop("PYTHONWARNINGS", None)
    done = subprocess.run(
        [sys.executable, str(EXAMPLE / "check.py")],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "finished after the response; server stopped" in done.stdout, done.stdout


def test_scripts_example_runs_check_py_in_check_mode() -> None:
    """The script's ``--check`` mode is exactly ``check.py`` (what the test above runs)."""
    script = (ROOT / "scripts" / "example").read_text()
    assert 'exec "$python" examples/django_app/check.py' in script


def test_readme_gunicorn_recipe_is_the_config_the_gunicorn_tests_run() -> None:
    """The README's gunicorn recipe is ``examples/django_app/gunicorn.conf.py`` verbatim,
    the file ``test_gunicorn.py`` runs gunicorn with: copied as written, it is tested."""
    recipe = (EXAMPLE / "gunicorn.conf.py").read_text()
    readme = (ROOT / "README.md").read_text()
    assert f"```python\n{recipe}```" in readme


def test_every_row_of_the_readme_deployment_table_names_tests_that_exist() -> None:
    """Each row of the README's deployment table names the tests that prove it
    (``module::test``, ``asgi`` for ``tests/test_asgi_servers.py``), and each named test
    is defined there: a renamed test cannot leave a row unproved."""
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("| server, stopped with |") :].split("\n\n", 1)[0]
    rows = table.splitlines()[2:]
    assert len(rows) >= 17, rows
    modules = {"asgi": ROOT / "tests" / "test_asgi_servers.py"}
    for path in (ROOT / "tests" / "servers").glob("test_*.py"):
        modules[path.stem] = path
    for row in rows:
        proved_by = row.rstrip("|").rsplit("|", 1)[1]
        named = re.findall(r"`(\w+)::(\w+)", proved_by)
        assert named, f"no test named in the row: {row}"
        for module, test in named:
            assert f"def {test}(" in modules[module].read_text(), f"{module}::{test} missing"


def test_readme_waitress_recipe_is_the_script_the_waitress_tests_run() -> None:
    """The README's waitress recipe is the code of ``examples/django_app/waitress_serve.py``
    (after its docstring), the script ``test_single_process.py`` runs waitress with."""
    script = (EXAMPLE / "waitress_serve.py").read_text()
    code = script.split('"""\n', 1)[1].lstrip("\n")
    assert f"```python\n{code}```" in (ROOT / "README.md").read_text()
