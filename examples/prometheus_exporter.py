"""Export loopkeeper's counters to Prometheus (``pip install prometheus-client``).

A collector reads ``runner.stats().as_dict()`` at every scrape, so the figures are exact
at that instant and nothing runs between scrapes.  Register it once at start-up::

    from prometheus_client import REGISTRY
    REGISTRY.register(LoopkeeperCollector())   # the default runner
    # then serve /metrics: prometheus_client.start_http_server(...), or a Django view

Metrics, each labelled with the runner's name:

- ``loopkeeper_tasks_submitted_total`` (counter): tasks accepted;
- ``loopkeeper_tasks_finished_total{state=...}`` (counter): tasks that ended ``succeeded``,
  ``failed``, ``cancelled`` or ``abandoned``;
- ``loopkeeper_tasks_rejected_total`` (counter): submits refused (closed or overloaded);
- ``loopkeeper_tasks_pending``, ``loopkeeper_tasks_running`` (gauges);
- ``loopkeeper_threads`` (gauge): worker threads running the runner's jobs;
- ``loopkeeper_loop_lag_seconds`` (gauge): how late the loop thread last ran a callback.

Run it to print one scrape after a few tasks::

    python examples/prometheus_exporter.py
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

import loopkeeper

FINAL_STATES = ("succeeded", "failed", "cancelled", "abandoned")


class LoopkeeperCollector(Collector):
    """Reads a runner's ``stats()`` at each scrape (default: the process's default runner,
    looked up at each scrape, so a forked worker reports its own)."""

    def __init__(self, runner: loopkeeper.Runner | None = None) -> None:
        self._runner = runner

    def collect(self) -> Iterator[Metric]:
        runner = self._runner if self._runner is not None else loopkeeper.get_runner()
        stats = runner.stats().as_dict()
        labels = ["runner"]
        submitted = CounterMetricFamily(
            "loopkeeper_tasks_submitted", "Tasks accepted by submit().", labels=labels
        )
        submitted.add_metric([runner.name], stats["submitted"])
        finished = CounterMetricFamily(
            "loopkeeper_tasks_finished",
            "Tasks that ended, by final state.",
            labels=[*labels, "state"],
        )
        for state in FINAL_STATES:
            finished.add_metric([runner.name, state], stats[state])
        rejected = CounterMetricFamily(
            "loopkeeper_tasks_rejected",
            "Submits refused: the runner was closed or overloaded.",
            labels=labels,
        )
        rejected.add_metric([runner.name], stats["rejected"])
        yield from (submitted, finished, rejected)
        for key, name, text in (
            ("pending", "loopkeeper_tasks_pending", "Tasks accepted, not yet running."),
            ("running", "loopkeeper_tasks_running", "Tasks running now."),
            ("threads", "loopkeeper_threads", "Worker threads running the runner's jobs."),
            ("loop_lag", "loopkeeper_loop_lag_seconds", "How late the loop last ran a callback."),
        ):
            gauge = GaugeMetricFamily(name, text, labels=labels)
            gauge.add_metric([runner.name], stats[key])
            yield gauge


def main() -> None:
    registry = CollectorRegistry()
    with loopkeeper.Runner(name="example") as runner:
        registry.register(LoopkeeperCollector(runner))
        for _ in range(3):
            runner.submit(asyncio.sleep, 0).result(timeout=5)
        sleeper = runner.submit(asyncio.sleep, 60)
        sleeper.cancel()
        with contextlib.suppress(concurrent.futures.CancelledError):
            sleeper.result(timeout=5)
        print(generate_latest(registry).decode())


if __name__ == "__main__":
    main()
