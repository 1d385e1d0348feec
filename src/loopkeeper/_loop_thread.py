"""The daemon thread and its event loop: start, inbox, stop, join.

Owns: one thread named after its runner, the event loop that thread runs, and an inbox
through which other threads hand it work.  The loop is created inside the thread
(``loop_factory`` or ``asyncio.new_event_loop``) and lives until ``request_stop()``.

Inbox: a foreign thread appends to a list and wakes the loop only when no drain is
already scheduled, so a burst of N posts costs one wake-up, not N; the drain swaps the
list for an empty one.  The list and the "drain scheduled" flag are guarded by a lock, so
the scheme holds on free-threaded builds too.  The wake-up is one write to an ``eventfd``
that the loop watches with ``add_reader`` (Linux): that skips ``call_soon_threadsafe``'s
handle and asyncio's self-pipe read (two ``recv`` calls and an exception per wake-up).
Where there is no ``eventfd``, or the loop has no ``add_reader`` (the proactor loop), the
wake-up is ``call_soon_threadsafe``.

Watchdog: a heartbeat on the loop records when it last ran; a daemon thread
``<name>-watchdog`` wakes a few times per threshold and, when the heartbeat is older
than ``watchdog_threshold``, logs ``loop_blocked`` once per incident, while the loop is
still blocked, naming the task that holds it and the loop thread's current stack; when
the loop comes back it logs ``loop_unblocked``.

Never dies: a callback or task that raises ``SystemExit`` or ``KeyboardInterrupt``
escapes ``run_forever``; the thread runs the loop again, and logs it (unless the failed
task's own log line reports it).  Only ``request_stop()`` ends it.  On the way out it
cancels tasks that user code left behind (bounded wait), shuts down async generators and
closes the loop.

After fork the child never touches this thread's loop (an inherited loop says it is
running, but no thread drives it): the runner that owns it refuses to work there.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any, Final, Generic, TypeVar

from . import _logging
from ._threads import leave_signals_to_the_main_thread

__all__ = ("LoopThread",)

Item = TypeVar("Item")

_HEARTBEAT: Final = 0.5  # seconds between loop-lag samples (less with a small watchdog threshold)
_CLEANUP_WAIT: Final = 1.0  # seconds to let leftover tasks react to cancellation
_ONE: Final = (1).to_bytes(8, sys.byteorder)  # what a write to an eventfd adds to its counter


class LoopThread(Generic[Item]):
    """One event loop on one daemon thread, fed through a coalescing inbox."""

    def __init__(
        self,
        name: str,
        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None,
        dispatch: Callable[[list[Item]], None],
        on_started: Callable[[], None],
        watchdog_threshold: float | None = None,
        describe_blocker: Callable[[], tuple[int, str, str | None] | None] = lambda: None,
        claim_escape: Callable[[BaseException], bool] = lambda exc: False,
    ) -> None:
        self._name = name
        self._loop_factory = loop_factory
        self._dispatch = dispatch  # loop thread only: handles one drained batch
        self._on_started = on_started  # loop thread, once, before the first dispatch
        self._start_lock = threading.Lock()  # guards _thread: which start() creates it
        self._thread: threading.Thread | None = None  # set once, under _start_lock
        # Set once on_started has run (or the loop could not start): what start() waits for.
        self._ready = threading.Event()
        # True once the loop accepts posts, before on_started runs (a log handler it calls
        # may submit): the lock-free fast path of submit(), which then need not start().
        self.ready = False
        self._start_error: BaseException | None = None  # set by the loop thread before _ready
        self.loop: asyncio.AbstractEventLoop | None = None  # set by the loop thread before _ready
        # The loop thread itself, set before _ready: compared by identity, never by ident
        # (a new thread often gets the ident of one that ended).
        self._running_thread: threading.Thread | None = None
        self._inbox_lock = threading.Lock()  # guards the four fields below
        self._inbox: list[Item] = []
        self._drain_scheduled = False
        self._wake_fd: int | None = None  # the eventfd the loop watches; None: no such fd
        self._writers = 0  # threads writing to _wake_fd now: the last one out closes it late
        self._stop_requested = False  # written once by request_stop(), read by the loop thread
        self.lag = 0.0  # loop thread writes, anyone reads: seconds late at the last heartbeat
        self.last_beat = time.monotonic()  # loop thread writes, the watchdog reads
        self._watchdog_threshold = watchdog_threshold
        # watchdog thread: (task id, name, submitted_from) or None
        self._describe_blocker = describe_blocker
        self._claim_escape = claim_escape  # loop thread: True if a task's failure reports it
        self._beat_interval = (
            _HEARTBEAT if watchdog_threshold is None else min(_HEARTBEAT, watchdog_threshold / 4)
        )
        self._stopped = threading.Event()  # set when the loop thread ends

    @property
    def started(self) -> bool:
        """True once ``start()`` was called (even if the loop is not running yet)."""
        return self._thread is not None

    def is_current(self) -> bool:
        """True when called on this loop's own thread (even after it ended: never for a
        new thread that reuses its ident)."""
        return threading.current_thread() is self._running_thread

    def start(self) -> asyncio.AbstractEventLoop:
        """Start the thread if needed and return its loop, ready for posts.  Any thread;
        idempotent.

        The lock only decides which caller creates the thread; everyone waits outside it
        until ``on_started`` has run.  The loop accepts posts before it runs any code a
        user can reach (a log handler on ``runner_started`` may submit), so nothing it
        runs ever waits for this.

        Raises:
            RuntimeError: the thread could not start, or ``loop_factory`` failed (chained).
        """
        created = False
        with self._start_lock:
            if self._thread is None:
                thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                thread.start()
                self._thread = thread
                created = True
            thread = self._thread
        self._ready.wait()
        if self._start_error is not None:
            raise RuntimeError(
                f"the loop thread {self._name!r} could not start its event loop"
            ) from self._start_error
        if created and self._watchdog_threshold is not None:
            threading.Thread(target=self._watch, name=f"{self._name}-watchdog", daemon=True).start()
        if not thread.is_alive() and self._stop_requested is False:
            raise RuntimeError(f"the loop thread {self._name!r} has died unexpectedly")
        assert self.loop is not None
        return self.loop

    def reconfigure(
        self,
        name: str,
        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None,
        dispatch: Callable[[list[Item]], None],
        watchdog_threshold: float | None,
        owner_part: Callable[[], bool],
    ) -> bool:
        """Any thread.  Replace the options given at construction before the thread
        starts, together with ``owner_part()`` (the owner's own options; False from it
        changes nothing).  False once ``start()`` has created the thread."""
        with self._start_lock:
            if self._thread is not None or not owner_part():
                return False
            self._name = name
            self._loop_factory = loop_factory
            self._dispatch = dispatch
            self._watchdog_threshold = watchdog_threshold
            self._beat_interval = (
                _HEARTBEAT
                if watchdog_threshold is None
                else min(_HEARTBEAT, watchdog_threshold / 4)
            )
            return True

    def post(self, item: Item) -> None:
        """Hand ``item`` to the loop thread's dispatcher.  Any thread."""
        with self._inbox_lock:
            self._inbox.append(item)
            if self._drain_scheduled:
                return
            self._drain_scheduled = True
            fd = self._wake_fd
            if fd is not None:
                self._writers += 1
        if fd is None:
            assert self.loop is not None
            self.loop.call_soon_threadsafe(self._drain)  # raises RuntimeError once closed
            return
        # Outside the lock: the write releases the GIL, and a lock held across it would
        # queue every other submitting thread behind this one.
        try:
            os.write(fd, _ONE)
        finally:
            with self._inbox_lock:
                self._writers -= 1
                last = self._writers == 0 and self._wake_fd is None
            if last:  # pragma: no cover  the loop closed while this thread wrote: it left the fd
                os.close(fd)

    def call_soon(self, callback: Callable[..., object], *args: Any) -> None:
        """Run ``callback(*args)`` on the loop thread soon.  Any thread; a no-op once closed."""
        loop = self.loop
        if loop is None:
            return
        if self.is_current():
            loop.call_soon(callback, *args)
            return
        with contextlib.suppress(RuntimeError):  # a closed loop runs nothing any more
            loop.call_soon_threadsafe(callback, *args)

    def request_stop(self) -> None:
        """Ask the loop to stop once it gets to it.  Any thread; idempotent.

        Works before the loop exists too (a shutdown racing the first submit): the flag
        is written before ``loop`` is read here, and the loop thread publishes ``loop``
        before it reads the flag, so one of the two schedules the stop.
        """
        if self._stop_requested:
            return
        self._stop_requested = True
        self.call_soon(self._stop_on_loop)

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the thread to end.  True if it has."""
        thread = self._thread
        if thread is None or thread is threading.current_thread():
            return thread is None
        thread.join(timeout)
        return not thread.is_alive()

    # -- loop thread ---------------------------------------------------------------

    def _open_wake_fd(self, loop: asyncio.AbstractEventLoop) -> None:
        """Loop thread only, before the loop runs.  Watch an eventfd, if this loop can."""
        if not hasattr(os, "eventfd"):  # Linux only
            return
        try:
            fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        except OSError:  # pragma: no cover  out of descriptors: call_soon_threadsafe works
            return
        try:
            loop.add_reader(fd, self._drain_woken, fd)
        except Exception:  # noqa: BLE001  e.g. NotImplementedError: call_soon_threadsafe then
            os.close(fd)
            return
        self._wake_fd = fd

    def _close_wake_fd(self, loop: asyncio.AbstractEventLoop) -> None:
        """Loop thread only, before the loop closes.  Later posts go to the closed loop.

        Only a task that shutdown has already settled can be posted this late (the loop
        stops once nothing is unfinished): a write still under way wakes nobody.
        """
        with self._inbox_lock:
            fd, self._wake_fd = self._wake_fd, None
            close_now = self._writers == 0  # else the last writer closes it
        if fd is not None:
            try:
                loop.remove_reader(fd)
            finally:
                if close_now:
                    os.close(fd)

    def _drain_woken(self, fd: int) -> None:
        """Loop thread only: the eventfd is readable.  Drain, reset it, drain again if a
        post came meanwhile.

        The batch goes before the reset: the read releases the GIL, and submitting
        threads waiting for it would hold it for a switch interval before the batch
        starts.  A post between the drain and the reset may have its write reset with
        the rest, so it is drained here; if its write came after the reset, the next
        wake-up finds an empty inbox.
        """
        self._drain()
        try:  # noqa: SIM105  contextlib.suppress costs a context manager per wake-up
            os.read(fd, 8)
        except BlockingIOError:  # pragma: no cover  the loop said it was readable
            pass
        with self._inbox_lock:
            missed = self._drain_scheduled
        if missed:
            self._drain()

    def _drain(self) -> None:
        """Loop thread only, woken by ``post()``.  Dispatch everything posted so far."""
        with self._inbox_lock:
            self._drain_scheduled = False
            batch, self._inbox = self._inbox, []
        self._dispatch(batch)

    def _started(self) -> None:
        """Loop thread only, once, the first callback: ``on_started``, then let
        ``start()`` return (whatever ``on_started`` did)."""
        try:
            self._on_started()
        finally:
            self._ready.set()

    def _report_escape(self, exc: BaseException) -> None:
        """Loop thread only.  ``exc`` left ``run_forever``: log it unless a task's is."""
        if not self._claim_escape(exc):
            _logging.log(_logging.ERROR, "loop_callback_failed", runner=self._name, exc_info=exc)

    def _stop_on_loop(self) -> None:
        assert self.loop is not None
        self.loop.stop()

    def _heartbeat(self, expected: float) -> None:
        assert self.loop is not None
        now = self.loop.time()
        self.lag = max(0.0, now - expected)
        self.last_beat = time.monotonic()
        following = now + self._beat_interval
        self.loop.call_at(following, self._heartbeat, following)

    # -- watchdog thread -----------------------------------------------------------

    def _watch(self) -> None:
        leave_signals_to_the_main_thread()
        threshold = self._watchdog_threshold
        assert threshold is not None
        incident: float | None = None  # the heartbeat the current incident started after
        while not self._stopped.wait(threshold / 4):
            beat = self.last_beat
            blocked_for = time.monotonic() - beat
            if blocked_for > threshold and incident != beat:
                incident = beat
                self._report_blocked(blocked_for)
            elif incident is not None and beat != incident:
                _logging.log(
                    _logging.INFO,
                    "loop_unblocked",
                    runner=self._name,
                    blocked_for=round(beat - incident, 3),
                )
                incident = None

    def _report_blocked(self, blocked_for: float) -> None:
        thread = self._running_thread
        # By ident, as sys._current_frames() keys them: only while that thread lives.
        frame = (
            sys._current_frames().get(thread.ident or 0)
            if thread is not None and thread.is_alive()
            else None
        )
        stack = "".join(traceback.format_stack(frame)) if frame is not None else ""
        blocker = self._describe_blocker()
        _logging.log(
            _logging.WARNING,
            "loop_blocked",
            runner=self._name,
            blocked_for=round(blocked_for, 3),
            task_id=blocker[0] if blocker else None,
            task_name=blocker[1] if blocker else None,
            submitted_from=blocker[2] if blocker else None,
            stack=stack,
        )

    def _run(self) -> None:
        leave_signals_to_the_main_thread()
        try:
            loop = self._loop_factory() if self._loop_factory else asyncio.new_event_loop()
        except BaseException as exc:  # noqa: BLE001  reported to start()'s caller
            self._start_error = exc
            self._ready.set()
            return
        asyncio.set_event_loop(loop)
        self._open_wake_fd(loop)
        self.loop = loop
        self._running_thread = threading.current_thread()
        # Posts accepted before the first callback runs: _on_started logs, and a log
        # handler that submits must find the loop accepting them (they run after it).
        self.ready = True
        loop.call_soon(self._started)
        if self._stop_requested:  # asked before self.loop was set: call_soon could not
            loop.call_soon(self._stop_on_loop)
        self.last_beat = time.monotonic()
        loop.call_soon(self._heartbeat, loop.time())
        try:
            while True:
                try:
                    loop.run_forever()
                except BaseException as exc:  # noqa: BLE001  the loop thread must survive
                    # Decided after the callbacks already scheduled: a task's own
                    # SystemExit or KeyboardInterrupt is reported by its done callback.
                    loop.call_soon(self._report_escape, exc)
                else:
                    if self._stop_requested:
                        break
                    _logging.log(  # user code called loop.stop(): the loop is not theirs
                        _logging.WARNING, "loop_stop_refused", runner=self._name
                    )
                if self._stop_requested:
                    break
        finally:
            self._stopped.set()
            self._close(loop)

    def _close(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            leftovers = asyncio.all_tasks(loop)
            for task in leftovers:
                task.cancel()
            if leftovers:
                loop.run_until_complete(asyncio.wait(leftovers, timeout=_CLEANUP_WAIT))
            loop.run_until_complete(loop.shutdown_asyncgens())
        except BaseException as exc:  # noqa: BLE001  closing must finish
            _logging.log(_logging.ERROR, "loop_close_failed", runner=self._name, exc_info=exc)
        finally:
            asyncio.set_event_loop(None)
            try:
                self._close_wake_fd(loop)
            finally:
                loop.close()
