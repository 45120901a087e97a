"""Bounded admission to the CPU work of /predict, per worker process.

A worker runs `max_running` predictions at a time (its onnxruntime threads are sized for that) and
lets at most `max_waiting` more wait for a turn, each for at most `wait_s` seconds. Anything beyond
is refused at once (429 with Retry-After) instead of queueing until clients time out; waiting past
`wait_s` is refused too (503), so a burst never turns into minutes of work for clients that left.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager


class Overloaded(Exception):
    """No room in this worker's queue (answered 429)."""


class QueueTimeout(Exception):
    """Admitted, but no turn came within the wait limit (answered 503)."""


class AdmissionGate:
    def __init__(self, max_running: int = 1, max_waiting: int = 2, wait_s: float = 2.0):
        if max_running < 1 or max_waiting < 0 or wait_s <= 0:
            raise ValueError("max_running >= 1, max_waiting >= 0 and wait_s > 0 are required")
        self.max_running, self.max_waiting, self.wait_s = max_running, max_waiting, wait_s
        self._turns = threading.BoundedSemaphore(max_running)
        self._lock = threading.Lock()
        self.admitted = 0  # running + waiting

    @contextmanager
    def turn(self):
        """`with gate.turn() as waited_s:` run CPU work; raises Overloaded or QueueTimeout."""
        with self._lock:
            if self.admitted >= self.max_running + self.max_waiting:
                busy = f"{self.max_running} running, {self.max_waiting} waiting"
                raise Overloaded(f"this worker is busy ({busy}); retry shortly")
            self.admitted += 1
        try:
            start = time.monotonic()
            if not self._turns.acquire(timeout=self.wait_s):
                raise QueueTimeout(f"no inference slot became free within {self.wait_s:g} s; retry shortly")
            try:
                yield time.monotonic() - start
            finally:
                self._turns.release()
        finally:
            with self._lock:
                self.admitted -= 1
