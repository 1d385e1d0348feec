"""The documentation cannot rot: its examples run, and its catalogue of log events is the code's.

Every ```python block of README.md and docs/*.md runs, page by page, in a fresh interpreter:
the blocks of one page share one namespace, in order (a later block may use what an earlier
one defined), and a failure's traceback names the page and line.  A block that cannot run
on its own is opted out, visibly, by the line just before its fence:

    <!-- not run: the reason -->

The reason is required, and opt-outs are counted: keep them few.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest

ROOT: Final = Path(__file__).resolve().parent.parent
PAGES: Final = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))
NOT_RUN: Final = re.compile(r"^\s*<!-- not run: (?P<reason>\S.*?) -->\s*$")
FENCE: Final = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w-]*)")
MAX_OPT_OUTS: Final = 6  # raise it only with a reason in the commit


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    code: str
    not_run: str | None  # the opt-out reason, if any


def blocks(page: Path) -> list[Block]:
    """The fenced code blocks of a page in the ```python language, in order."""
    found = []
    lines = page.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        fence = FENCE.match(lines[index])
        if fence is None:
            index += 1
            continue
        start, indent = index, len(fence["indent"])
        index += 1
        body = []
        while index < len(lines) and not lines[index].strip().startswith("```"):
            body.append(lines[index][indent:])
            index += 1
        index += 1  # the closing fence
        if fence["lang"] != "python":
            continue
        previous = lines[start - 1] if start else ""
        opt_out = NOT_RUN.match(previous)
        found.append(
            Block(page, start + 1, "\n".join(body) + "\n", opt_out["reason"] if opt_out else None)
        )
    return found


# Runs one page's blocks in order in the namespace of __main__ (so functions they define
# can be found by import path, as Django's Tasks framework does); compile() with the page's
# path and the block's line numbers, so a traceback points into the page.
CHILD: Final = """
import json, sys
import __main__
for block in json.load(sys.stdin):
    exec(compile("\\n" * block["line"] + block["code"], block["page"], "exec"), __main__.__dict__)
"""

# The Django page is read as in a configured project: this runs first, as manage.py would
# (an in-memory database, loopkeeper's app, and LoopkeeperBackend as the Tasks backend).
DJANGO_PROJECT: Final = """
import django
from django.conf import settings

settings.configure(
    SECRET_KEY="docs",
    INSTALLED_APPS=["loopkeeper.contrib.django"]
    + (["django_tasks"] if django.VERSION < (6, 0) else []),
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
    TASKS={"default": {"BACKEND": "loopkeeper.contrib.django.backends.LoopkeeperBackend"}},
    ROOT_URLCONF=[],
    USE_TZ=True,
)
django.setup()
"""
PRELUDES: Final = {"django.md": DJANGO_PROJECT}


def _pages_with_code() -> list[Path]:
    return [page for page in PAGES if any(b.not_run is None for b in blocks(page))]


@pytest.mark.parametrize("page", _pages_with_code(), ids=lambda page: page.name)
def test_every_python_block_of_the_page_runs(page: Path, tmp_path: Path) -> None:
    """The page's ```python blocks run, in order, in a fresh interpreter, without an
    error, and the interpreter exits cleanly (loopkeeper's exit drain included)."""
    runnable = [
        {"page": str(b.page.relative_to(ROOT)), "line": b.line, "code": b.code}
        for b in blocks(page)
        if b.not_run is None
    ]
    if page.name in PRELUDES:
        runnable.insert(0, {"page": "<prelude>", "line": 0, "code": PRELUDES[page.name]})
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    result = subprocess.run(
        [sys.executable, "-c", CHILD],
        input=json.dumps(runnable),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"{page.name}:\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr


def test_opt_outs_are_few_and_give_a_reason() -> None:
    """Every block that does not run says why (the regex demands a reason), and there are
    at most MAX_OPT_OUTS of them in all."""
    opted_out = [b for page in PAGES for b in blocks(page) if b.not_run is not None]
    listing = "\n".join(f"{b.page.name}:{b.line}: {b.not_run}" for b in opted_out)
    assert len(opted_out) <= MAX_OPT_OUTS, listing
    for page in PAGES:
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            if "not run" in line and line.lstrip().startswith("<!--"):
                assert NOT_RUN.match(line), f"{page.name}:{number}: malformed opt-out {line!r}"


def test_the_block_parser_sees_fences_and_opt_outs(tmp_path: Path) -> None:
    """The parser finds python blocks (indented ones too), skips other languages, and
    reads an opt-out only from the line right before the fence."""
    page = tmp_path / "page.md"
    page.write_text(
        "text\n```python\nx = 1\n```\n```sh\nls\n```\n<!-- not run: needs a server -->\n"
        "```python\nserve()\n```\n- item\n\n    ```python\n    y = 2\n    ```\n"
    )
    found = blocks(page)
    assert [(b.line, b.code, b.not_run) for b in found] == [
        (2, "x = 1\n", None),
        (9, "serve()\n", "needs a server"),
        (14, "y = 2\n", None),
    ]


# -- the catalogue of log events ------------------------------------------------------------

SRC: Final = ROOT / "src" / "loopkeeper"
OBSERVABILITY: Final = ROOT / "docs" / "observability.md"
# The functions that emit an event: (name, fields they add to every line).  Calls to them
# inside their own definitions pass the event through and are not events themselves.
EMITTERS: Final = {
    "log": (),  # _logging.log
    "_log": (),  # contrib/asgi.py
    "_log_task": ("runner", "task_id", "task_name"),  # Runner._log_task
}
LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR")
# Modules whose emitter logs under a logger of its own (their log() / _log() say which).
LOGGERS: Final = {
    "asgi.py": "loopkeeper.asgi",
    "_drain.py": "loopkeeper.servers",
    "gunicorn.py": "loopkeeper.servers",  # through _drain.log
}


@dataclass(frozen=True)
class Event:
    name: str
    level: str
    logger: str
    fields: frozenset[str]  # "exc_info" means: with a traceback; all fields of all call sites


def _levels(node: ast.expr) -> list[str]:
    """The levels a level argument can be: ``_logging.INFO``, or ``A if cond else B`` of
    two such (in LEVELS order); [] for anything else."""
    if isinstance(node, ast.Attribute) and node.attr in LEVELS:
        return [node.attr]
    if isinstance(node, ast.IfExp):
        one, other = _levels(node.body), _levels(node.orelse)
        if one and other:
            return [level for level in LEVELS if level in one or level in other]
    return []


def events_in_code() -> dict[str, Event]:
    """Every event the code emits, read from the source: level, logger and fields."""
    found: dict[str, Event] = {}
    for path in sorted(SRC.rglob("*.py")):
        logger = LOGGERS.get(path.name, "loopkeeper")
        tree = ast.parse(path.read_text(encoding="utf-8"))
        wrappers = {
            id(call)
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef) and node.name in EMITTERS
            for call in ast.walk(node)
        }
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or id(node) in wrappers:
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name not in EMITTERS or not node.args:
                continue
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            level = node.args[0]
            if name == "log" and not _levels(level):
                continue  # some other .log() (a stdlib logger's, with a computed level)
            assert len(node.args) >= 2, f"{where}: an event needs a name"
            event = node.args[1]
            literal = isinstance(event, ast.Constant) and isinstance(event.value, str)
            assert literal, f"{where}: a literal event name, so the catalogue can list it"
            assert isinstance(event, ast.Constant)
            levels = _levels(level)
            assert levels, f"{where}: the level must be DEBUG/INFO/WARNING/ERROR, or a choice"
            fields = frozenset([*EMITTERS[name], *(k.arg for k in node.keywords if k.arg)])
            new = Event(str(event.value), "/".join(levels), logger, fields)
            old = found.setdefault(new.name, new)
            # One event from several places: one level and logger; the fields are all of
            # theirs (the catalogue says when an optional one is there).
            assert (old.level, old.logger) == (new.level, new.logger), (
                f"{where}: {new.name} is emitted at two levels or loggers: {old} and {new}"
            )
            found[new.name] = Event(new.name, new.level, logger, old.fields | new.fields)
    return found


CATALOGUE_ROW: Final = re.compile(
    r"^\| `(?P<name>\w+)` \| (?P<level>[A-Z/]+) \| `(?P<logger>[\w.]+)` \| (?P<fields>[^|]*) \|"
)


def events_in_docs() -> dict[str, Event]:
    """The catalogue table of docs/observability.md."""
    found = {}
    for line in OBSERVABILITY.read_text(encoding="utf-8").splitlines():
        row = CATALOGUE_ROW.match(line)
        if row is None:
            continue
        fields = set(re.findall(r"`(\w+)`", row["fields"]))
        if "traceback" in row["fields"]:
            fields.add("exc_info")
        event = Event(row["name"], row["level"], row["logger"], frozenset(fields))
        assert event.name not in found, f"{event.name} is listed twice"
        found[event.name] = event
    return found


def test_the_event_catalogue_is_the_code() -> None:
    """docs/observability.md lists every event the code emits, with its level, logger and
    fields, and no other: a new, renamed or changed event fails here until documented."""
    code, docs = events_in_code(), events_in_docs()
    assert len(code) >= 20  # the reader above still finds the events
    assert sorted(docs) == sorted(code)
    for name, event in code.items():
        assert docs[name] == event, f"{name}: the code says {event}, the catalogue {docs[name]}"


def test_no_event_carries_arguments_or_results() -> None:
    """No event has a field that could carry a task's arguments or result."""
    for event in events_in_code().values():
        assert not event.fields & {"args", "kwargs", "result", "value", "arguments"}, event


def test_the_testing_page_examples_pass_under_pytest(pytester: pytest.Pytester) -> None:
    """The Testing page's examples (before its Django section, which the Django project's
    tests prove) are real tests: run by pytest with the plugin from its entry point, as a
    user's project runs them, every one passes."""
    page = ROOT / "docs" / "testing.md"
    django_at = page.read_text(encoding="utf-8").splitlines().index("## Django") + 1
    code = "\n".join(b.code for b in blocks(page) if b.not_run is None and b.line < django_at)
    pytester.makepyfile(test_page=code)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-v")
    result.assert_outcomes(passed=6)


def test_nothing_points_outside_the_repository() -> None:
    """No Markdown file of the repository links or refers to a path above its root (a
    reader of a fresh clone could not follow it): no ``](../`` link from the root, none
    that climbs out of ``docs/``, and no ``../shared`` anywhere."""
    skip = {".venvs", "site", ".git", "node_modules"}
    pages = [
        page
        for page in ROOT.rglob("*.md")
        if not skip & set(page.relative_to(ROOT).parts) and ".pytest_cache" not in page.parts
    ]
    assert len(pages) > 10
    for page in pages:
        text = page.read_text(encoding="utf-8")
        depth = len(page.relative_to(ROOT).parts) - 1  # how many ../ stay inside
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            climbs = len(re.findall(r"(?:^|/)\.\.(?=/)", target))
            assert climbs <= depth, f"{page.relative_to(ROOT)} links outside: {target}"
        assert "../shared" not in text, f"{page.relative_to(ROOT)} refers to ../shared"


def test_the_api_reference_covers_every_public_name() -> None:
    """docs/api.md has a ``::: loopkeeper.<name>`` entry for every name in
    ``loopkeeper.__all__``: a new public name fails here until it is in the reference."""
    import loopkeeper  # noqa: PLC0415  only this test needs it

    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^::: loopkeeper\.(\w+)$", text, flags=re.MULTILINE))
    assert set(loopkeeper.__all__) <= listed, set(loopkeeper.__all__) - listed
