"""The bounded inference queue: one worker thread runs the admitted jobs in order (one model, one
device). `submit` raises QueueFull (-> BUSY) instead of waiting; each job carries a deadline and a
cancel flag the generation loop polls (`Ticket.should_stop`), so a caller that gives up (timeout,
cancel) returns at once while the worker stops the generation at the next token. No rclpy.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any


class QueueFull(Exception):
    """Every slot of the queue is taken (-> BUSY)."""


class QueueClosed(Exception):
    """The queue is not running (the node is shutting down or not configured)."""


class Ticket:
    """One admitted job: its deadline, cancel flag, streamed partial text and result."""

    def __init__(self, job: Callable[[Ticket], Any], deadline: float,
                 clock: Callable[[], float] = time.monotonic):
        self._job = job
        self.deadline = deadline
        self._clock = clock
        self._done = threading.Event()
        self._cancel_reason = ""
        self._lock = threading.Lock()
        self._partial = ""
        self.result: Any = None
        self.error: BaseException | None = None
        self.started = False

    # caller side
    def wait(self, timeout: float | None) -> bool:
        """True when the job has finished (result or error set)."""
        return self._done.wait(None if timeout is None else max(0.0, timeout))

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def cancel(self, reason: str = "cancelled") -> None:
        """Ask the job to stop (the first reason is kept); harmless when it already finished."""
        with self._lock:
            if not self._cancel_reason:
                self._cancel_reason = reason

    @property
    def cancel_reason(self) -> str:
        return self._cancel_reason

    def partial(self) -> str:
        with self._lock:
            return self._partial

    # worker side
    def should_stop(self) -> bool:
        """Polled by the generation loop between tokens."""
        return bool(self._cancel_reason) or self._clock() >= self.deadline

    def set_partial(self, text: str) -> None:
        with self._lock:
            self._partial = text

    def _skip(self) -> None:
        """Finish without running (the queue shut down while the job waited)."""
        self._done.set()

    def _execute(self) -> None:
        try:
            if self.should_stop():        # cancelled or expired while it waited: skip the work
                return
            self.started = True
            self.result = self._job(self)
        except Exception as exc:  # a failed job is its caller's outcome, not the worker's end
            self.error = exc
        finally:
            self._done.set()


class InferenceQueue:
    """At most `capacity` admitted jobs (waiting + running); one worker thread runs them in order.

    A job whose caller gave up keeps its slot until the worker is done with it, so the depth is the
    real load on the device.
    """

    def __init__(self, capacity: int, clock: Callable[[], float] = time.monotonic,
                 name: str = "spatialgeo-inference"):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._clock = clock
        self._name = name
        self._pending: deque[Ticket] = deque()
        self._running: Ticket | None = None
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = True

    def start(self) -> None:
        with self._cond:
            if self._thread is not None:
                return
            self._closed = False
            self._thread = threading.Thread(target=self._work, name=self._name, daemon=True)
            self._thread.start()

    def depth(self) -> int:
        with self._cond:
            return len(self._pending) + (self._running is not None)

    def submit(self, job: Callable[[Ticket], Any], deadline: float) -> Ticket:
        """Admit `job` (called as job(ticket) on the worker) or raise QueueFull / QueueClosed."""
        with self._cond:
            if self._closed:
                raise QueueClosed("the inference queue is not running")
            depth = len(self._pending) + (self._running is not None)
            if depth >= self.capacity:
                raise QueueFull(
                    f"{depth} requests are being served or waiting; the limit is {self.capacity} "
                    f"(query.max_pending): try again later")
            ticket = Ticket(job, deadline, self._clock)
            self._pending.append(ticket)
            self._cond.notify()
            return ticket

    def stop(self, timeout: float = 5.0) -> bool:
        """Cancel what waits and what runs, and join the worker; True when it ended in time."""
        with self._cond:
            self._closed = True
            for ticket in self._pending:
                ticket.cancel("shutdown")
                ticket._skip()
            self._pending.clear()
            if self._running is not None:
                self._running.cancel("shutdown")
            self._cond.notify_all()
            thread, self._thread = self._thread, None
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if not self._pending:
                    return
                ticket = self._pending.popleft()
                self._running = ticket
            try:
                ticket._execute()
            finally:
                with self._cond:
                    self._running = None
