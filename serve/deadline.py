"""A client socket whose reads for one request must finish by a deadline.

gunicorn reads the request line, headers and body with blocking `recv` calls; a per-call timeout
does not stop a client that sends one byte every few seconds. `DeadlineSocket` sets each `recv`'s
timeout to what is left of the request's budget, counted from its first byte, and raises
`ReadTimeout` once the budget is spent (later reads see end-of-stream, so nothing after it is parsed).
"""

from __future__ import annotations

import socket
import time


class ReadTimeout(Exception):
    """The client did not send its whole request in time (answered 408).

    Deliberately not an OSError: gunicorn treats those as a vanished client and closes silently,
    while this one deserves an answer.
    """


class DeadlineSocket(socket.socket):
    """socket.socket with a read budget per request: `arm()` at the request start, `disarm()` after."""

    budget_s: float = 10.0

    @classmethod
    def adopt(cls, sock: socket.socket, budget_s: float) -> DeadlineSocket:
        """The same connection as a DeadlineSocket (`sock` is detached and must not be used again)."""
        timeout = sock.gettimeout()
        new = cls(sock.family, sock.type, sock.proto, fileno=sock.detach())
        new.settimeout(timeout)
        new.budget_s = budget_s
        new._armed = False
        new._deadline = None
        new.expired = False
        return new

    def arm(self) -> None:
        self._armed, self._deadline = True, None

    def disarm(self) -> None:
        self._armed = False

    def _remaining(self) -> float:
        now = time.monotonic()
        if self._deadline is None:
            self._deadline = now + self.budget_s
        return self._deadline - now

    def _expire(self) -> bytes:
        if self.expired:
            return b""
        self.expired = True
        raise ReadTimeout(f"the request was not received within {self.budget_s:g} s of its first byte")

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        if getattr(self, "expired", False) and not flags:
            # Armed or not: gunicorn's body drain and its graceful close (which runs on the worker's
            # main loop) would otherwise wait on a trickling client for seconds more.
            return b""
        if not getattr(self, "_armed", False) or flags:
            return super().recv(bufsize, flags)
        remaining = self._remaining()
        if remaining <= 0:
            return self._expire()
        previous = self.gettimeout()
        self.settimeout(remaining if previous is None else min(previous, remaining))
        try:
            return super().recv(bufsize)
        except TimeoutError:
            if self._remaining() > 0 and previous is not None:
                raise  # the caller's own, shorter timeout
            return self._expire()
        finally:
            self.settimeout(previous)

    def sendall(self, data, flags: int = 0) -> None:
        # A client that stops reading its answer gets the same budget to take it, not forever.
        previous = self.gettimeout()
        if previous is None:
            self.settimeout(self.budget_s)
        try:
            super().sendall(data, flags)
        finally:
            self.settimeout(previous)


def client_gone(sock: socket.socket | None) -> bool:
    """True when the peer has closed its side (a FIN or a reset is waiting), without consuming data."""
    if sock is None:
        return False
    try:
        data = socket.socket.recv(sock, 1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except (BlockingIOError, InterruptedError):
        return False  # nothing to read: still connected
    except OSError:
        return True  # reset
    return data == b""
