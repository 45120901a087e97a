"""The gunicorn worker the API runs in: threads for socket I/O, a read deadline per request, JSON errors.

gunicorn's `sync` worker ties one CPU-bound process to one socket for as long as the client takes to
send its request: twenty clients trickling one byte per second starve a two-worker service. This
worker is gunicorn's `gthread` (a thread pool per process, idle keep-alive sockets parked in a
poller) with two additions:

- Every request must arrive, headers and body, within `POLYPSEG_READ_TIMEOUT_S` seconds of its
  first byte (`DeadlineSocket`). A slow or stalled client costs one thread for at most that long,
  then gets a JSON 408 and the connection is closed. Inference itself is bounded separately, per
  worker, by the app's admission gate (serve/admission.py), so more threads never mean more CPU work.
- Errors gunicorn answers itself (a request line too long, too many headers, malformed HTTP) are
  JSON `{"title", "description"}` like every error of the app, not gunicorn's HTML page, and each
  is one JSON log line with its status.

Used by serve/gunicorn.conf.py: `worker_class = "serve.worker.ApiWorker"`.
"""

from __future__ import annotations

import errno
import json
import logging

from gunicorn.http import errors as http_errors
from gunicorn.workers import gthread
from gunicorn.workers.gthread import TConn, ThreadWorker

from serve.deadline import DeadlineSocket, ReadTimeout
from serve.settings import load_settings

log = logging.getLogger("polypseg.request")

# gunicorn's parse errors -> (status, title). Anything else raised before the app answered is a 500.
# A new connection that has sent nothing yet goes back to the poller after this long, instead of
# holding a thread for gthread's 5 s: idle connections cost a file descriptor, not a thread.
FIRST_BYTE_WAIT_S = 0.5

PARSE_ERRORS: tuple[tuple[type[Exception], int, str], ...] = (
    (http_errors.LimitRequestLine, 414, "Request line too long"),
    (http_errors.LimitRequestHeaders, 431, "Request header fields too large"),
    (http_errors.UnsupportedTransferCoding, 501, "Transfer coding not implemented"),
    (http_errors.ExpectationFailed, 417, "Expectation failed"),
    (http_errors.ForbiddenProxyRequest, 403, "Forbidden"),
    (http_errors.ConfigurationProblem, 500, "Server configuration problem"),
    (http_errors.ParseException, 400, "Malformed HTTP request"),
)


def error_status(exc: BaseException) -> tuple[int, str]:
    if isinstance(exc, ReadTimeout):
        return 408, "Request timeout"
    for kind, status, title in PARSE_ERRORS:
        if isinstance(exc, kind):
            return status, title
    return 500, "Internal error"


def json_error_response(status: int, title: str, description: str) -> bytes:
    body = json.dumps({"title": title, "description": description}).encode()
    reason = title.encode("latin-1", "replace")
    head = (
        b"HTTP/1.1 %d %s\r\nConnection: close\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n\r\n"
    ) % (status, reason, len(body))
    return head + body


class ApiWorker(ThreadWorker):
    """gthread with a per-request read deadline and JSON errors (see the module docstring)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.read_timeout_s = load_settings().read_timeout_s  # POLYPSEG_READ_TIMEOUT_S

    def accept(self, listener):
        # gthread's accept, with the client socket adopted into a DeadlineSocket before anything reads it.
        try:
            client_sock, client_addr = listener.accept()
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        client_sock = DeadlineSocket.adopt(client_sock, self.read_timeout_s)
        client_sock.setblocking(True)
        conn = TConn(self.cfg, client_sock, client_addr, listener.getsockname())
        self.enqueue_req(conn)

    def handle(self, conn):
        if not conn.initialized and not conn.data_ready and not conn.wait_for_data(FIRST_BYTE_WAIT_S):
            return gthread._DEFER  # the poller hands it back to a thread once bytes arrive
        # One call per request: the deadline starts at the request's first byte (DeadlineSocket.recv).
        if isinstance(conn.sock, DeadlineSocket):
            conn.sock.arm()
        try:
            return super().handle(conn)
        finally:
            if isinstance(conn.sock, DeadlineSocket):
                conn.sock.disarm()

    def _keepalive_after(self, conn, keepalive):
        # The answer is out: draining an unread body is gunicorn's business, under its own bound.
        if isinstance(conn.sock, DeadlineSocket):
            conn.sock.disarm()
            if conn.sock.expired:  # after a 408 nothing more is read from this client: close now
                return False
        return super()._keepalive_after(conn, keepalive)

    def handle_error(self, req, client, addr, exc):
        status, title = error_status(exc)
        ip = addr[0] if isinstance(addr, tuple) and addr else ""
        if status == 500:
            log.error(
                "request failed before the app answered",
                exc_info=exc,
                extra={"fields": {"status": status, "client": ip, "endpoint": "server"}},
            )
            description = "see the server log"
        else:
            description = str(exc)[:300] or title
            log.warning(
                "request refused by the HTTP server",
                extra={
                    "fields": {
                        "status": status,
                        "error": title,
                        "reason": description,
                        "client": ip,
                        "endpoint": "server",
                        "method": getattr(req, "method", None),
                    }
                },
            )
        try:
            client.settimeout(1.0)
            client.sendall(json_error_response(status, title, description))
        except (OSError, ReadTimeout):
            pass  # the client is gone or not reading: nothing more to say
