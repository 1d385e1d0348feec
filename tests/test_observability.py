"""Observability: the JSON-ready stats and the example Prometheus exporter that reads them."""

from __future__ import annotations

import asyncio
import importlib.util
import threading
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import pytest
from prometheus_client import CollectorRegistry, generate_latest

if TYPE_CHECKING:
    from loopkeeper import Runner

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "prometheus_exporter.py"
WAIT = 10.0


@pytest.fixture(scope="module")
def exporter() -> ModuleType:
    spec = importlib.util.spec_from_file_location("prometheus_exporter", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _scrape(registry: CollectorRegistry) -> dict[str, float]:
    """The exposition text as {'name{labels}': value}, comments left out."""
    text = generate_latest(registry).decode()
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def test_exporter_reports_the_runner_counters_at_each_scrape(
    exporter: ModuleType, runner: Runner
) -> None:
    """Each scrape reads the runner's stats at that instant: a running task shows in the
    running gauge, then, once it ends, in the finished counter with its state."""
    registry = CollectorRegistry()
    registry.register(exporter.LoopkeeperCollector(runner))
    started, release = threading.Event(), threading.Event()

    def hold() -> None:
        started.set()
        assert release.wait(WAIT)

    async def fail() -> None:
        raise ValueError("expected by this test")

    held = runner.submit(hold)
    assert started.wait(WAIT)
    runner.submit(fail).exception(WAIT)
    before = _scrape(registry)
    release.set()
    held.result(WAIT)
    runner.submit(asyncio.sleep, 0).result(WAIT)
    after = _scrape(registry)

    label = 'runner="test-runner"'
    assert before[f"loopkeeper_tasks_running{{{label}}}"] == 1
    assert before[f"loopkeeper_threads{{{label}}}"] == 1
    assert before[f'loopkeeper_tasks_finished_total{{{label},state="failed"}}'] == 1
    assert before[f'loopkeeper_tasks_finished_total{{{label},state="succeeded"}}'] == 0
    assert after[f"loopkeeper_tasks_running{{{label}}}"] == 0
    assert after[f'loopkeeper_tasks_finished_total{{{label},state="succeeded"}}'] == 2
    assert after[f"loopkeeper_tasks_submitted_total{{{label}}}"] == 3
    assert after[f"loopkeeper_tasks_rejected_total{{{label}}}"] == 0
    assert after[f"loopkeeper_loop_lag_seconds{{{label}}}"] >= 0


def test_exporter_without_a_runner_reads_the_default_runner(
    exporter: ModuleType, loopkeeper_runner: Runner
) -> None:
    """``LoopkeeperCollector()`` reads the default runner, looked up at each scrape."""
    registry = CollectorRegistry()
    registry.register(exporter.LoopkeeperCollector())
    loopkeeper_runner.submit(asyncio.sleep, 0).result(WAIT)
    assert _scrape(registry)['loopkeeper_tasks_submitted_total{runner="loopkeeper"}'] == 1


def test_exporter_example_runs(exporter: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    """``python examples/prometheus_exporter.py`` prints a scrape with its tasks counted."""
    exporter.main()
    out = capsys.readouterr().out
    assert 'loopkeeper_tasks_finished_total{runner="example",state="succeeded"} 3.0' in out
    assert 'loopkeeper_tasks_finished_total{runner="example",state="cancelled"} 1.0' in out
