"""The reliability suite's fixtures, its seed reporting, and its summary line.

Every run that includes ``tests/stress`` ends with one line such as::

    loopkeeper reliability (quick): stormed 10342 tasks in 5 storms (succeeded ..., failed
    ..., cancelled ..., abandoned ...; rejected ...); faults injected ...; bad inputs tried
    ...; soak 50000 tasks, RSS 41.2 -> 42.0 MiB (+0.8); lost: 0

"bad inputs tried" counts the passed bad-input cases of ``tests/test_validation.py`` in the
same run (tests named for bad input or a refusal; 0 when that file did not run).  A
failing test that recorded a seed shows it in a ``loopkeeper seed`` section with the
command that replays it.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, Final

import pytest

from ._support import LONG, Figures

_FIGURES: Final = pytest.StashKey[Figures]()


@pytest.fixture(scope="session")
def figures(request: pytest.FixtureRequest) -> Figures:
    """The session's figures, which the summary line prints."""
    stash = request.config.stash
    if _FIGURES not in stash:
        stash[_FIGURES] = Figures()
    return stash[_FIGURES]


@pytest.fixture
def seed_recorder(request: pytest.FixtureRequest) -> Callable[[int], None]:
    """``seed_recorder(seed)`` notes the seed the running test uses, so that its failure
    report says how to replay it."""

    def note(seed: int) -> None:
        request.node.user_properties.append(("seed", seed))

    return note


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        for name, value in item.user_properties:
            if name == "seed":
                replay = (
                    f"this run used seed {value}; replay it with\n"
                    f"  LOOPKEEPER_SEED={value} ./scripts/test {item.nodeid.split('[')[0]}"
                )
                report.sections.append(("loopkeeper seed", replay))
    return report


def _is_bad_input_case(nodeid: str) -> bool:
    """A case of ``tests/test_validation.py`` that feeds bad input (not one that checks
    that odd but valid input is accepted)."""
    path, _, rest = nodeid.partition("::")
    test = rest.split("[")[0]
    return path.endswith("test_validation.py") and ("bad" in test or "refuse" in test)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    figures = config.stash.get(_FIGURES, None)
    if figures is None:
        return
    stats = terminalreporter.stats
    bad_inputs = sum(
        1
        for report in stats.get("passed", [])
        if getattr(report, "when", "") == "call" and _is_bad_input_case(report.nodeid)
    )
    failed = sum(
        1
        for report in stats.get("failed", []) + stats.get("error", [])
        if "tests/stress/" in getattr(report, "nodeid", "")
    )
    terminalreporter.write_line(
        figures.line(
            size_name="long" if LONG else "quick", bad_inputs=bad_inputs, failed_tests=failed
        )
    )
