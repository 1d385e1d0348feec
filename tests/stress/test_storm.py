"""Storm: many threads, every kind of task and outcome, and a shutdown at a random moment.

The promise under test: every submit either returns a handle or raises
``RunnerClosedError``/``OverloadedError``; every accepted task ends SUCCEEDED, FAILED,
CANCELLED or ABANDONED, with the outcome its code asked for, logged once, and counted once
(``stats()`` adds up exactly); an ABANDONED one is named in the report and its log line;
a second asyncio loop in another thread that awaits a handle sees the same outcome.

Each storm is seeded (``random.Random(seed)`` decides every plan, delay and option); the
seed is printed with any failure, and ``LOOPKEEPER_SEED=N`` replays it.  Besides the fixed
seeds, each run tries one fresh seed.

The last test races readers against the settling of each task: a handle read the instant
``done()`` turns True must already hold its whole outcome.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import enum
import os
import queue
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any, Final

import pytest

import loopkeeper
from loopkeeper import (
    OverloadedError,
    Runner,
    RunnerClosedError,
    TaskAbandonedError,
    TaskHandle,
    TaskState,
    TaskTimeoutError,
)

from ._support import (
    TIMEOUT,
    EventLog,
    Figures,
    Gate,
    assert_counts_add_up,
    capture_events,
    size,
)

WAIT: Final = 60.0  # seconds any one wait of the harness may take before the test fails
SUBMITTERS: Final = size(16, 32)
OPS_PER_SUBMITTER: Final = size(300, 2_000)
RAISED: Final = (ValueError, SystemExit, KeyboardInterrupt)


class Op(enum.Enum):
    """What a planned task does, and so which outcomes it may have."""

    ASYNC_OK = "async def returning its value"
    COROUTINE_OK = "coroutine object returning its value"
    SYNC_OK = "sync callable returning its value"
    SYNC_RETURNS_COROUTINE = "sync callable returning a coroutine"
    ASYNC_RAISES = "async def raising"
    SYNC_RAISES = "sync callable raising"
    ASYNC_TIMEOUT = "async def outliving its timeout="
    SYNC_TIMEOUT = "sync callable outliving its timeout=, checking for cancellation"
    ASYNC_CANCELLED = "async def cancelled midway by another thread"
    SYNC_CANCELLED = "sync callable cancelled midway by another thread"
    NESTED_ASYNC = "async def submitting a child task and awaiting it"
    NESTED_SYNC = "sync callable submitting a child task and waiting for it"
    TO_THREAD = "async def using asyncio.to_thread"
    RUN_IN_THREAD = "async def using loopkeeper.run_in_thread"
    STUBBORN_ASYNC = "async def that swallows every cancellation (only some storms)"
    STUBBORN_SYNC = "sync callable that never checks for cancellation (only some storms)"


WEIGHTS: Final = {
    Op.ASYNC_OK: 4,
    Op.COROUTINE_OK: 1,
    Op.SYNC_OK: 2,
    Op.SYNC_RETURNS_COROUTINE: 1,
    Op.ASYNC_RAISES: 2,
    Op.SYNC_RAISES: 1,
    Op.ASYNC_TIMEOUT: 1,
    Op.SYNC_TIMEOUT: 1,
    Op.ASYNC_CANCELLED: 2,
    Op.SYNC_CANCELLED: 1,
    Op.NESTED_ASYNC: 1,
    Op.NESTED_SYNC: 1,
    Op.TO_THREAD: 1,
    Op.RUN_IN_THREAD: 1,
}
STUBBORN: Final = frozenset({Op.STUBBORN_ASYNC, Op.STUBBORN_SYNC})
RETURNS_VALUE: Final = frozenset(
    {
        Op.ASYNC_OK,
        Op.COROUTINE_OK,
        Op.SYNC_OK,
        Op.SYNC_RETURNS_COROUTINE,
        Op.NESTED_ASYNC,
        Op.NESTED_SYNC,
        Op.TO_THREAD,
        Op.RUN_IN_THREAD,
    }
)
NESTED: Final = frozenset({Op.NESTED_ASYNC, Op.NESTED_SYNC})
PARKED: Final = frozenset(
    {Op.ASYNC_TIMEOUT, Op.SYNC_TIMEOUT, Op.ASYNC_CANCELLED, Op.SYNC_CANCELLED}
)


@dataclasses.dataclass
class Planned:
    """One task a submitter will submit, and what became of it."""

    op: Op
    value: int
    raised: BaseException | None = None  # the very exception an *_RAISES task raises
    timeout: float | None = None
    cancel_after: float | None = None  # a canceller thread cancels it this late
    watched: bool = False  # a second asyncio loop awaits it too
    handle: TaskHandle[Any] | None = None
    cancel_returned: bool | None = None
    child: Planned | None = None  # the task a NESTED_* task submitted
    child_refused: type[BaseException] | None = None

    @property
    def name(self) -> str:
        return f"{self.op.name.lower()}-{self.value}"


@dataclasses.dataclass(frozen=True)
class Options:
    """The runner's options and the shutdown a seed chose."""

    max_pending: int
    shutdown_at: int  # the number of finished submits after which shutdown starts
    shutdown_timeout: float
    cancel_remaining: bool
    via_ashutdown: bool  # shut down from the second loop with ashutdown()
    pause: float  # how often a submitter pauses for a millisecond (0: one burst)
    stubborn: bool  # some tasks ignore cancellation: the shutdown must abandon them


def _plan(rng: random.Random, first_value: int, count: int, stubborn: bool) -> list[Planned]:
    ops, weights = list(WEIGHTS), list(WEIGHTS.values())
    plans = []
    for value in range(first_value, first_value + count):
        op = rng.choices(ops, weights)[0]
        if stubborn and rng.random() < 0.005:
            op = rng.choice(sorted(STUBBORN, key=lambda op: op.name))
        plan = Planned(op, value, watched=rng.random() < 0.25)
        if op in (Op.ASYNC_RAISES, Op.SYNC_RAISES):
            plan.raised = rng.choice(RAISED)(f"planned failure {value}")
        elif op in (Op.ASYNC_TIMEOUT, Op.SYNC_TIMEOUT):
            plan.timeout = rng.choice((0.0, 0.001, 0.005))
        elif op in (Op.ASYNC_CANCELLED, Op.SYNC_CANCELLED) or rng.random() < 0.05:
            plan.cancel_after = rng.choice((0.0, 0.0, 0.001, 0.003))  # or cancel a done task
        plans.append(plan)
    return plans


class Storm:
    """One seeded storm: a runner, submitters, cancellers, a second loop, a shutdown."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        rng = random.Random(seed)
        total = SUBMITTERS * OPS_PER_SUBMITTER
        stubborn = rng.random() < 0.4
        self.options = Options(
            max_pending=rng.choice((1_000, 100_000, 100_000)),
            # A quarter of the storms shut down after the last submit (past the end).
            shutdown_at=rng.randrange(total // 3, total * 5 // 4),
            # Stubborn tasks never end by themselves: a long drain would wait it out.
            shutdown_timeout=rng.choice((0.0, 0.01, 0.1) if stubborn else (0.0, 0.1, 5.0, WAIT)),
            cancel_remaining=rng.random() < 0.85,
            via_ashutdown=rng.random() < 0.25,
            pause=rng.choice((0.0, 0.02, 0.2)),
            stubborn=stubborn,
        )
        self.runner = Runner(name=f"storm-{seed}", max_pending=self.options.max_pending)
        self.plans = [
            _plan(random.Random(rng.random()), i * OPS_PER_SUBMITTER, OPS_PER_SUBMITTER, stubborn)
            for i in range(SUBMITTERS)
        ]
        self.submit_delays = [random.Random(rng.random()) for _ in range(SUBMITTERS)]
        self.gate = Gate()  # parked tasks wait for it; opened only after the shutdown
        self.lock = threading.Lock()  # guards the fields below
        self.errors: list[str] = []  # anything the harness did not expect, as text
        self.refused: Counter[type[BaseException]] = Counter()
        self.children: list[Planned] = []
        self.submits_done = 0
        self.shutdown_now = threading.Event()
        self.cancels: queue.SimpleQueue[tuple[float, Planned] | None] = queue.SimpleQueue()
        self.report: loopkeeper.ShutdownReport | None = None
        self.foreign = asyncio.new_event_loop()  # the second loop, in a thread of its own
        self.watches: list[tuple[Planned, concurrent.futures.Future[tuple[str, Any]]]] = []

    # -- the tasks -----------------------------------------------------------------

    async def ok(self, value: int) -> int:
        await asyncio.sleep(0)
        return value

    def sync_ok(self, value: int) -> int:
        return value

    def sync_returns_coroutine(self, value: int) -> Coroutine[Any, Any, int]:
        return self.ok(value)

    async def raises(self, exc: BaseException) -> None:
        await asyncio.sleep(0)
        raise exc

    def sync_raises(self, exc: BaseException) -> None:
        raise exc

    async def parked(self, value: int) -> int:
        await self.gate.opened()
        return value

    def sync_parked(self, value: int) -> int:
        while not self.gate.wait(0.002):
            loopkeeper.check_cancelled()
        return value

    async def stubborn(self, value: int) -> int:
        while True:
            try:
                await self.gate.opened()
            except asyncio.CancelledError:
                continue  # the fault: it swallows every cancellation
            return value

    def sync_stubborn(self, value: int) -> int:
        self.gate.wait(WAIT)  # the fault: it never calls check_cancelled()
        return value

    def _submit_child(self, parent: Planned) -> TaskHandle[int] | None:
        child = Planned(Op.ASYNC_OK, -parent.value)
        try:
            handle = self.runner.submit(self.ok, child.value, name=child.name)
        except (RunnerClosedError, OverloadedError) as exc:
            parent.child_refused = type(exc)
            with self.lock:
                self.refused[type(exc)] += 1
            raise
        child.handle = handle
        parent.child = child
        with self.lock:
            self.children.append(child)
        return handle

    async def nested(self, parent: Planned) -> int:
        handle = self._submit_child(parent)
        assert handle is not None
        return -(await handle)

    def nested_sync(self, parent: Planned) -> int:
        handle = self._submit_child(parent)
        assert handle is not None
        return -handle.result(WAIT)

    async def to_thread(self, value: int) -> int:
        return await asyncio.to_thread(self.sync_ok, value)

    async def in_thread(self, value: int) -> int:
        return await loopkeeper.run_in_thread(self.sync_ok, value)

    def _call(self, plan: Planned) -> TaskHandle[Any]:
        submit, op, v, name = self.runner.submit, plan.op, plan.value, plan.name
        if op is Op.ASYNC_OK:
            return submit(self.ok, v, name=name)
        if op is Op.COROUTINE_OK:
            return submit(self.ok(v), name=name)
        if op is Op.SYNC_OK:
            return submit(self.sync_ok, v, name=name)
        if op is Op.SYNC_RETURNS_COROUTINE:
            return submit(self.sync_returns_coroutine, v, name=name)
        if op is Op.ASYNC_RAISES:
            assert plan.raised is not None
            return submit(self.raises, plan.raised, name=name)
        if op is Op.SYNC_RAISES:
            assert plan.raised is not None
            return submit(self.sync_raises, plan.raised, name=name)
        if op in (Op.ASYNC_TIMEOUT, Op.ASYNC_CANCELLED):
            return submit(self.parked, v, name=name, timeout=plan.timeout)
        if op in (Op.SYNC_TIMEOUT, Op.SYNC_CANCELLED):
            return submit(self.sync_parked, v, name=name, timeout=plan.timeout)
        if op is Op.NESTED_ASYNC:
            return submit(self.nested, plan, name=name)
        if op is Op.NESTED_SYNC:
            return submit(self.nested_sync, plan, name=name)
        if op is Op.TO_THREAD:
            return submit(self.to_thread, v, name=name)
        if op is Op.STUBBORN_ASYNC:
            return submit(self.stubborn, v, name=name)
        if op is Op.STUBBORN_SYNC:
            return submit(self.sync_stubborn, v, name=name)
        return submit(self.in_thread, v, name=name)

    # -- the harness's threads -----------------------------------------------------

    def submitter(self, index: int, start: threading.Barrier) -> None:
        start.wait(WAIT)
        pace = self.submit_delays[index]
        for plan in self.plans[index]:
            try:
                plan.handle = self._call(plan)
            except (RunnerClosedError, OverloadedError) as exc:
                with self.lock:
                    self.refused[type(exc)] += 1
            except BaseException as exc:  # noqa: BLE001  reported by the test
                with self.lock:
                    self.errors.append(f"submit of {plan.name} raised {exc!r}")
            else:
                if plan.cancel_after is not None:
                    self.cancels.put((time.monotonic() + plan.cancel_after, plan))
                if plan.watched:
                    self.watch(plan)
            with self.lock:
                self.submits_done += 1
                if self.submits_done == self.options.shutdown_at:
                    self.shutdown_now.set()
            if pace.random() < self.options.pause:  # let the loop catch up a little
                time.sleep(0.001)

    def canceller(self) -> None:
        while (item := self.cancels.get()) is not None:
            due, plan = item
            time.sleep(max(0.0, due - time.monotonic()))  # the moment the seed chose
            assert plan.handle is not None
            try:
                plan.cancel_returned = plan.handle.cancel(f"storm cancels {plan.name}")
            except BaseException as exc:  # noqa: BLE001  reported by the test
                with self.lock:
                    self.errors.append(f"cancel of {plan.name} raised {exc!r}")

    def shutter(self) -> None:
        assert self.shutdown_now.wait(WAIT), "the storm never reached its shutdown point"
        options = self.options
        try:
            if options.via_ashutdown:
                self.report = asyncio.run_coroutine_threadsafe(
                    self.runner.ashutdown(
                        options.shutdown_timeout, cancel_remaining=options.cancel_remaining
                    ),
                    self.foreign,
                ).result(WAIT)
            else:
                self.report = self.runner.shutdown(
                    options.shutdown_timeout, cancel_remaining=options.cancel_remaining
                )
        except BaseException as exc:  # noqa: BLE001  reported by the test
            with self.lock:
                self.errors.append(f"shutdown raised {exc!r}")

    def watch(self, plan: Planned) -> None:
        """Have the second loop await the handle, and keep what it saw."""
        handle = plan.handle
        assert handle is not None

        async def await_it() -> tuple[str, Any]:
            try:
                return ("value", await handle)
            except asyncio.CancelledError:
                return ("cancelled", None)
            except TaskAbandonedError:
                return ("abandoned", None)
            except BaseException as exc:  # noqa: BLE001  what the task raised, compared later
                return ("raised", exc)

        future = asyncio.run_coroutine_threadsafe(await_it(), self.foreign)
        with self.lock:
            self.watches.append((plan, future))

    # -- the run and the checks ----------------------------------------------------

    def run(self) -> None:
        foreign = threading.Thread(target=self.foreign.run_forever, name="storm-second-loop")
        foreign.start()
        start = threading.Barrier(SUBMITTERS)
        submitters = [
            threading.Thread(target=self.submitter, args=(i, start), name=f"storm-submitter-{i}")
            for i in range(SUBMITTERS)
        ]
        cancellers = [threading.Thread(target=self.canceller) for _ in range(2)]
        shutter = threading.Thread(target=self.shutter, name="storm-shutdown")
        try:
            for thread in [*cancellers, shutter, *submitters]:
                thread.start()
            for thread in submitters:
                thread.join(WAIT)
            self.shutdown_now.set()  # the seed put the shutdown past the last submit
            shutter.join(WAIT)
            for _ in cancellers:
                self.cancels.put(None)
            for thread in cancellers:
                thread.join(WAIT)
            assert not any(t.is_alive() for t in [*submitters, shutter, *cancellers]), (
                "a harness thread is stuck"
            )
        finally:
            self.shutdown_now.set()
            self.gate.open()  # what was left running may end now
            with contextlib.suppress(RuntimeError):  # already closed
                self.runner.shutdown(WAIT)
            # Every handle is final now, but the second loop learns it a few iterations
            # later: stopping it before its watches return would leave them pending.
            with self.lock:
                watched = [future for _, future in self.watches]
            concurrent.futures.wait(watched, timeout=WAIT)
            self.foreign.call_soon_threadsafe(self.foreign.stop)
            foreign.join(WAIT)
            self.foreign.close()

    def accepted(self) -> list[Planned]:
        with self.lock:
            children = list(self.children)
        return [p for plans in self.plans for p in plans if p.handle is not None] + children

    def faults(self) -> int:
        """Faults the seed injected: raises, timeouts, cancels, and the shutdown."""
        plans = [p for plans in self.plans for p in plans]
        return 1 + sum(
            p.raised is not None
            or p.timeout is not None
            or p.cancel_after is not None
            or p.op in STUBBORN
            for p in plans
        )


def _check_outcome(plan: Planned, report: loopkeeper.ShutdownReport) -> str | None:
    """Why the task's outcome is not one its plan allows, or None if it is."""
    handle = plan.handle
    assert handle is not None
    state = handle.state
    if state is TaskState.SUCCEEDED:
        if plan.op not in RETURNS_VALUE:
            return f"{plan.name} SUCCEEDED, but it never returns"
        value = handle.result(0)
        return None if value == plan.value else f"{plan.name} returned {value!r}"
    if state is TaskState.FAILED:
        exc = handle.exception(0)
        if plan.raised is not None:
            return None if exc is plan.raised else f"{plan.name} failed with {exc!r}"
        if plan.timeout is not None:
            if isinstance(exc, TaskTimeoutError) and exc.task_id == handle.id:
                return None
            return f"{plan.name} failed with {exc!r}, not its timeout"
        if plan.op in NESTED:
            if plan.child_refused is not None and isinstance(exc, plan.child_refused):
                return None  # its child was refused: shutdown or overload
            child = plan.child.handle if plan.child is not None else None
            child_state = child.state if child is not None else None
            if child_state is TaskState.CANCELLED and isinstance(
                exc, concurrent.futures.CancelledError
            ):
                return None  # the child was cancelled: its result() raised that
            if child_state is TaskState.ABANDONED and isinstance(exc, TaskAbandonedError):
                return None
        return f"{plan.name} FAILED with {exc!r}"
    if state is TaskState.CANCELLED:
        if plan.cancel_returned or report.cancelled:
            return None  # our cancel() said True, or the shutdown cancelled tasks
        child = plan.child.handle if plan.child is not None else None
        if child is not None and child.state is TaskState.CANCELLED:
            return None  # awaiting a cancelled child raises CancelledError, as in asyncio
        return f"{plan.name} CANCELLED, but nobody cancelled it"
    if state is TaskState.ABANDONED:
        if any(info.id == handle.id for info in report.abandoned):
            return None
        return f"{plan.name} ABANDONED, but not named in {report!r}"
    return f"{plan.name} is not final: {state!r}"


def _check_logs(plan: Planned, events: Counter[tuple[str, int]], report_text: str) -> str | None:
    """Each ending is logged once: a failure, a timeout, a cancellation, an abandonment."""
    handle = plan.handle
    assert handle is not None
    state, task_id = handle.state, handle.id
    failed = events[("task_failed", task_id)] + events[("task_timed_out", task_id)]
    cancelled = events[("task_cancelled", task_id)]
    expected = {
        TaskState.SUCCEEDED: (0, 0),
        TaskState.FAILED: (1, 0),
        TaskState.CANCELLED: (0, 1),
        TaskState.ABANDONED: (0, 0),
    }[state]
    if (failed, cancelled) != expected:
        return f"{plan.name} {state.name}: logged failed={failed} cancelled={cancelled} times"
    if state is TaskState.ABANDONED and f"{task_id} {handle.name!r}" not in report_text:
        return f"{plan.name} ABANDONED, but no shutdown_incomplete line names it"
    return None


def _quiet_stats(storm: Storm) -> tuple[loopkeeper.RunnerStats, int]:
    """The runner's counters and the harness's refusal count, read when they agree (WAIT
    at most).  Work left running may refuse more later: compare these two, not a re-read."""
    deadline = time.monotonic() + WAIT
    pause = threading.Event()
    while True:
        with storm.lock:
            refused = sum(storm.refused.values())
        stats = storm.runner.stats()
        if stats.rejected == refused or time.monotonic() > deadline:
            return stats, refused
        pause.wait(0.01)


def _check(storm: Storm, tap: EventLog) -> None:
    seed = storm.seed
    assert storm.errors == [], f"seed {seed}: {storm.errors[:10]}"
    report = storm.report
    assert report is not None, f"seed {seed}: no shutdown report"
    accepted = storm.accepted()
    handles = [p.handle for p in accepted if p.handle is not None]

    # Nothing accepted is left unfinished once shutdown has returned.
    unfinished = [h for h in handles if not h.done()]
    assert unfinished == [], f"seed {seed}: {len(unfinished)} unfinished, e.g. {unfinished[:5]}"

    # The counters are exact, refusals included.  Work that the shutdown left running
    # (cancel_remaining=False) may still try to submit children, refused now: compare the
    # refusals once both sides have seen them all.
    stats, refused = _quiet_stats(storm)
    states = Counter(h.state for h in handles)
    assert stats.submitted == len(handles), f"seed {seed}: {stats}"
    assert stats.rejected == refused, f"seed {seed}: {stats}, {refused} refusals seen"
    assert (stats.pending, stats.running) == (0, 0), f"seed {seed}: {stats}"
    assert_counts_add_up(stats, f"seed {seed}:")
    assert (stats.succeeded, stats.failed, stats.cancelled, stats.abandoned) == (
        states[TaskState.SUCCEEDED],
        states[TaskState.FAILED],
        states[TaskState.CANCELLED],
        states[TaskState.ABANDONED],
    ), f"seed {seed}: {stats} vs {states}"
    assert report.cancelled <= states[TaskState.CANCELLED], f"seed {seed}: {report!r}"
    assert {i.id for i in report.abandoned} == {
        h.id for h in handles if h.state is TaskState.ABANDONED
    }, f"seed {seed}: {report!r}"

    # Each outcome is one its code allows, and each ending is logged once.
    events = tap.task_events()
    report_text = " ".join(r.getMessage() for r in tap.named("shutdown_incomplete"))
    wrong = [why for p in accepted if (why := _check_outcome(p, report)) is not None]
    wrong += [why for p in accepted if (why := _check_logs(p, events, report_text)) is not None]
    assert wrong == [], f"seed {seed}: {len(wrong)} wrong outcomes, e.g. {wrong[:10]}"

    # The second loop saw the same outcomes.
    with storm.lock:
        watches = list(storm.watches)
    for plan, future in watches:
        handle = plan.handle
        assert handle is not None
        seen, detail = future.result(WAIT)
        assert _same_outcome(handle, seen, detail), (
            f"seed {seed}: {plan.name} {handle.state.name}, the second loop saw {seen}"
        )


def _same_outcome(handle: TaskHandle[Any], seen: str, detail: object) -> bool:
    """What ``await handle`` gave the second loop matches the handle's final state."""
    state = handle.state
    if state is TaskState.SUCCEEDED:
        return seen == "value" and detail == handle.result(0)
    if state is TaskState.FAILED:
        return seen == "raised" and detail is handle.exception(0)
    return seen == state.name.lower()  # "cancelled" or "abandoned"


def _seeds() -> list[Any]:
    replay = os.environ.get("LOOPKEEPER_SEED")
    if replay:
        return [pytest.param(int(replay), id=f"seed-{replay}")]
    fixed = [pytest.param(seed, id=f"seed-{seed}") for seed in range(1, size(4, 12) + 1)]
    fresh = random.SystemRandom().randrange(1, 2**31)
    return [*fixed, pytest.param(fresh, id="fresh-seed")]


@pytest.mark.timeout(TIMEOUT)
@pytest.mark.parametrize("seed", _seeds())
def test_storm_loses_nothing_and_counts_everything_exactly(
    seed: int, seed_recorder: Callable[[int], None], figures: Figures
) -> None:
    """16+ threads submit a seeded mix of async and sync tasks that succeed, raise
    (``Exception``, ``SystemExit``, ``KeyboardInterrupt``), time out, get cancelled midway
    from other threads, submit and await children, use worker threads, and are awaited from
    a second asyncio loop, while another thread (or that loop, with ``ashutdown``) shuts the
    runner down at a random moment.  Every submit returned a handle or raised
    ``RunnerClosedError``/``OverloadedError``; once shutdown returned every handle is final
    with an outcome its code allows, logged once; the counters match exactly; every
    abandoned task is named in the report and its log line; the second loop saw the same."""
    seed_recorder(seed)
    storm = Storm(seed)
    with capture_events() as tap:
        storm.run()
    try:
        _check(storm, tap)
    finally:
        figures.storms += 1
        figures.add_tasks(
            (p.handle for p in storm.accepted() if p.handle is not None),
            rejected=sum(storm.refused.values()),
            faults=storm.faults(),
        )


async def _echo(value: int) -> int:
    return value


async def _raise_value_error(value: int) -> int:
    raise ValueError(value)


@pytest.mark.timeout(TIMEOUT)
def test_a_handle_read_the_instant_it_settles_shows_its_whole_outcome(figures: Figures) -> None:
    """Threads that spin on ``done()`` and read ``result()``/``exception()`` the moment it
    turns True must see the task's own value or exception, never a half-settled handle
    (a final state whose value or exception is not stored yet: the result would be an
    internal placeholder, the exception None).  The switch interval is made tiny so that
    the interpreter may change threads between any two steps of the settling thread; on
    CPython 3.10 (and under tracers and profilers, or free-threaded builds) that is where
    such a gap shows."""
    count = size(40_000, 400_000)
    runner = Runner(name="settle-race", max_pending=count)
    wrong: list[str] = []
    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        with capture_events():  # thousands of task_failed lines: kept, not formatted
            handles = [
                (v, runner.submit(_echo if v % 2 else _raise_value_error, v)) for v in range(count)
            ]

            def reader(mine: list[tuple[int, TaskHandle[int]]]) -> None:
                for value, handle in mine:
                    while not handle.done():
                        pass  # spin: read the very moment it settles
                    try:
                        seen: object = handle.result(0)
                    except ValueError as exc:
                        seen = exc.args[0]
                    except BaseException as exc:  # noqa: BLE001  reported below
                        seen = exc
                    if seen != value:
                        wrong.append(f"task {handle.id} ({handle.state.name}): {seen!r}")

            readers = [threading.Thread(target=reader, args=(handles[i::2],)) for i in range(2)]
            for thread in readers:
                thread.start()
            for thread in readers:
                thread.join(WAIT)
    finally:
        sys.setswitchinterval(old_interval)
        runner.shutdown(WAIT)
    figures.faults += count // 2
    figures.add_tasks((h for _, h in handles), rejected=0, faults=0)
    assert wrong == [], f"{len(wrong)} of {count} reads saw a half-settled handle: {wrong[:5]}"
