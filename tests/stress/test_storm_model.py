"""A model of one runner, driven by hypothesis through short sequences of operations.

Where the storm throws thousands of tasks at the runner and checks the totals, this test
checks every step against an exact model and shrinks a failure to the shortest sequence:
which submits are refused (``OverloadedError`` exactly when ``max_pending`` tasks are
unfinished, ``RunnerClosedError`` exactly after shutdown), that ``max_concurrency`` slots
pass to the oldest waiting task in FIFO order when a task ends or a waiting one is
cancelled, what cancel() returns in each state, and that the counters match after every
step.  Orderings such as "cancel the waiting task, then release the running one, with one
slot" are where a loop of random work rarely looks.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import threading
import time
from typing import Any, Final

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
)

import loopkeeper
from loopkeeper import OverloadedError, Runner, RunnerClosedError, TaskHandle, TaskState

from ._support import TIMEOUT, Figures, Gate, assert_counts_add_up, size

WAIT: Final = 30.0
# Seconds a task may take to reach the state the model says: milliseconds in practice; every
# failing example hypothesis tries while shrinking waits this long.
SETTLE: Final = 3.0
OUTCOMES: Final = {
    "value": None,
    "ValueError": ValueError,
    "SystemExit": SystemExit,
    "KeyboardInterrupt": KeyboardInterrupt,
}

_figures: list[Figures] = []  # the session's figures, for the machine (set by the test)


@dataclasses.dataclass
class Parked:
    """A task that runs until its gate opens (or it is cancelled)."""

    handle: TaskHandle[Any]
    gate: Gate
    kind: str  # "async" or "sync"
    released: bool = False  # its gate is open: it ends once it holds a slot
    final: TaskState | None = None  # what the model expects once it has ended


async def _parked(gate: Gate) -> str:
    await gate.opened()
    return "released"


def _sync_parked(gate: Gate) -> str:
    while not gate.wait(0.002):
        loopkeeper.check_cancelled()
    return "released"


async def _immediate(outcome: str) -> str:
    await asyncio.sleep(0)
    exc = OUTCOMES[outcome]
    if exc is not None:
        raise exc(outcome)
    return outcome


_RANK: Final = {TaskState.PENDING: 0, TaskState.RUNNING: 1}  # any final state: 2


class RunnerModel(RuleBasedStateMachine):
    """The runner's observable state, step by step."""

    parked = Bundle("parked")

    def __init__(self) -> None:
        super().__init__()
        self.runner: Runner | None = None
        self.max_pending = 0
        self.max_concurrency: int | None = None
        self.live: list[Parked] = []  # unfinished, in submission order
        self.everything: list[Parked] = []
        self.immediate: list[TaskHandle[Any]] = []
        self.submitted = 0
        self.rejected = 0
        self.closed = False

    @property
    def r(self) -> Runner:
        assert self.runner is not None
        return self.runner

    @initialize(max_pending=st.integers(1, 6), max_concurrency=st.none() | st.integers(1, 2))
    def start(self, max_pending: int, max_concurrency: int | None) -> None:
        self.max_pending, self.max_concurrency = max_pending, max_concurrency
        self.runner = Runner(
            name="model",
            max_pending=max_pending,
            max_concurrency=max_concurrency,
            watchdog_threshold=None,
        )

    def _refusal(self) -> type[Exception] | None:
        if self.closed:
            return RunnerClosedError
        if len(self.live) >= self.max_pending:
            return OverloadedError
        return None

    def _submit_parked(self, kind: str) -> Any:
        gate = Gate()
        refusal = self._refusal()
        func = _parked if kind == "async" else _sync_parked
        if refusal is not None:
            with pytest.raises(refusal):
                self.r.submit(func, gate)
            self.rejected += 1
            return multiple()  # nothing to add to the bundle
        handle = self.r.submit(func, gate)
        self.submitted += 1
        task = Parked(handle, gate, kind)
        self.live.append(task)
        self.everything.append(task)
        return task

    @rule(target=parked)
    def submit_parked_async(self) -> Any:
        """Refused exactly when the model says so; otherwise unfinished until released."""
        return self._submit_parked("async")

    @rule(target=parked)
    def submit_parked_sync(self) -> Any:
        """The same for a sync task, whose worker thread checks for cancellation."""
        return self._submit_parked("sync")

    @precondition(
        lambda self: self.max_concurrency is None or len(self.live) < self.max_concurrency
    )
    @rule(outcome=st.sampled_from(sorted(OUTCOMES)))
    def submit_immediate(self, outcome: str) -> None:
        """A task that ends at once, by its own outcome, while a slot is free."""
        refusal = self._refusal()
        if refusal is not None:
            with pytest.raises(refusal):
                self.r.submit(_immediate, outcome)
            self.rejected += 1
            return
        handle = self.r.submit(_immediate, outcome)
        self.submitted += 1
        self.immediate.append(handle)
        exc = handle.exception(WAIT)
        expected = OUTCOMES[outcome]
        if expected is None:
            assert exc is None
            assert handle.result(0) == outcome
            assert handle.state is TaskState.SUCCEEDED
        else:
            assert type(exc) is expected
            assert handle.state is TaskState.FAILED

    @rule(task=parked)
    def release(self, task: Parked) -> None:
        """Opening a task's gate ends it as soon as it holds a slot; a task that has ended
        stays as it was."""
        task.gate.open()
        task.released = True
        if task.final is not None:
            assert task.handle.state is task.final
        self._slots_pass_on()

    @rule(task=consumes(parked))
    def cancel(self, task: Parked) -> None:
        """cancel() is True until the task ends; a cancelled task ends CANCELLED, and its
        slot (if it held one) passes on."""
        returned = task.handle.cancel()
        if task.final is not None:
            assert returned is False
            assert task.handle.state is task.final
            return
        assert returned is True
        with pytest.raises(concurrent.futures.CancelledError):
            task.handle.result(SETTLE)
        assert task.handle.state is TaskState.CANCELLED
        task.final = TaskState.CANCELLED
        self.live.remove(task)
        self._slots_pass_on()

    def _slots_pass_on(self) -> None:
        """A released task that holds a slot ends, and its slot goes to the next one."""
        while True:
            limit = self.max_concurrency
            holding = self.live if limit is None else self.live[:limit]
            ending = [t for t in holding if t.released]
            if not ending:
                return
            for task in ending:
                assert task.handle.result(SETTLE) == "released"
                task.final = TaskState.SUCCEEDED
                self.live.remove(task)

    @invariant()
    def slots_go_to_the_oldest_unfinished_tasks(self) -> None:
        """The oldest unfinished tasks hold the slots and run; the rest wait PENDING.

        States only move forward, so a task found further on than the model says is a
        failure at once; one not there yet gets ``SETTLE`` seconds to arrive.
        """
        if self.runner is None:
            return
        limit = self.max_concurrency
        running = len(self.live) if limit is None else min(limit, len(self.live))
        expected = [_RANK[TaskState.RUNNING]] * running + [_RANK[TaskState.PENDING]] * (
            len(self.live) - running
        )
        deadline = time.monotonic() + SETTLE
        pause = threading.Event()
        while True:
            have = [_RANK.get(t.handle.state, 2) for t in self.live]
            if any(h > e for h, e in zip(have, expected, strict=True)):
                pytest.fail(f"a task ran out of turn: {self._describe(expected)}")
            if have == expected:
                return
            if time.monotonic() > deadline:
                pytest.fail(f"no task took the free slot: {self._describe(expected)}")
            pause.wait(0.001)

    def _describe(self, expected: list[int]) -> str:
        names = {0: "PENDING", 1: "RUNNING"}
        return (
            f"max_concurrency={self.max_concurrency}: expected "
            f"{[names[e] for e in expected]}, have {[t.handle.state.name for t in self.live]}"
        )

    @precondition(lambda self: not self.closed)
    @rule(timeout=st.sampled_from([0.0, 0.01]))
    def shutdown(self, timeout: float) -> None:
        """Shutdown cancels what is unfinished (all of it cooperates) and says so.  A task
        already released but still waiting for a slot may get one as the shutdown cancels
        the slot holders, and finish first: it is then counted as completed."""
        report = self.r.shutdown(timeout)
        assert report.abandoned == ()
        finished = 0
        for task in self.live:
            state = task.handle.state
            if task.released and state is TaskState.SUCCEEDED:
                finished += 1
            else:
                assert state is TaskState.CANCELLED, (task, report)
            task.final = state
        assert (report.completed, report.cancelled) == (finished, len(self.live) - finished), report
        self.live.clear()
        self.closed = True
        assert self.r.shutdown(timeout) is report

    @invariant()
    def counters_match_the_model(self) -> None:
        if self.runner is None:
            return
        stats = self.runner.stats()
        assert stats.submitted == self.submitted, stats
        assert stats.rejected == self.rejected, stats
        assert stats.pending + stats.running == len(self.live), stats
        assert_counts_add_up(stats)
        if self.max_concurrency is not None:
            assert stats.running <= self.max_concurrency, stats

    def teardown(self) -> None:
        if self.runner is None:
            return
        for task in self.everything:
            task.gate.open()
        report = self.runner.shutdown(WAIT)
        assert report.abandoned == (), report
        if _figures:
            _figures[0].faults += sum(t.final is TaskState.CANCELLED for t in self.everything)
            _figures[0].add_tasks(
                [*(t.handle for t in self.everything), *self.immediate],
                rejected=self.rejected,
                faults=0,
            )


RunnerModel.TestCase.settings = settings(
    max_examples=size(100, 2_000),
    stateful_step_count=size(30, 60),
    deadline=None,
    database=None,  # no .hypothesis/ directory in the checkout
    print_blob=True,  # a failure prints the @reproduce_failure line that replays it
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.mark.timeout(TIMEOUT)
def test_runner_matches_its_model_step_by_step(figures: Figures) -> None:
    """Any sequence of submits (parked or immediate, async or sync, with outcomes of every
    kind), releases, cancels and a shutdown, on a runner with a small ``max_pending`` and
    maybe a ``max_concurrency``, keeps refusals, slot order, cancel() results, final states
    and counters exactly as the model predicts."""
    _figures[:] = [figures]
    figures.storms += 1
    try:
        RunnerModel.TestCase().runTest()
    finally:
        _figures.clear()
