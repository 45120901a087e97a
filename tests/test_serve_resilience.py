"""Issue 10's reproducers against a real gunicorn: slow clients, registry outages, a killed worker,
gunicorn's own errors as JSON, native library warnings as JSON log lines."""

import json
import os
import signal
import socket
import threading
import time
import zlib

import cv2
import numpy as np
import pytest
from test_serve_gunicorn import metric_total

from tests.support.harness import Gunicorn, free_port, http_get, post_predict, raw_exchange
from tests.support.tinymodel import write_tiny_model

pytestmark = pytest.mark.integration  # starts real processes: excluded from make test-fast

READ_TIMEOUT_S = 2.0


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("model"), size=64)


def jpeg() -> bytes:
    rng = np.random.default_rng(3)
    return cv2.imencode(".jpg", rng.integers(0, 256, (120, 160, 3), dtype=np.uint8))[1].tobytes()


@pytest.fixture(scope="module")
def server(model_path):
    env = {"POLYPSEG_READ_TIMEOUT_S": str(READ_TIMEOUT_S)}  # default threads and admission
    with Gunicorn(model_path, workers=2, env=env) as gunicorn:
        yield gunicorn


# ---------------------------------------------------------------------------------------------
# Slow clients


class SlowClient(threading.Thread):
    """Sends a /predict request one byte every `interval` seconds; records the answer's status."""

    def __init__(self, port: int, body: bytes, interval: float, stop: threading.Event):
        super().__init__(daemon=True)
        head = (
            "POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        self.data, self.port, self.interval, self.stop = head.encode() + body, port, interval, stop
        self.status: int | None = None

    def run(self) -> None:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=30) as sock:
                for i in range(len(self.data)):
                    if self.stop.is_set():
                        return
                    sock.setblocking(False)
                    try:
                        answer = sock.recv(4096)  # answered already? then stop sending
                    except BlockingIOError:
                        answer = None
                    sock.setblocking(True)
                    if answer is not None:
                        self.status = int(answer.split()[1]) if answer else 0
                        return
                    sock.sendall(self.data[i : i + 1])
                    time.sleep(self.interval)
        except OSError:
            self.status = 0


def test_slow_clients_do_not_starve_normal_ones(server):
    """Issue 10 item 4: 20 clients sending one byte per 0.2 s; a normal client is served throughout."""
    body, stop = jpeg(), threading.Event()
    slow = [SlowClient(server.port, body, 0.2, stop) for _ in range(20)]
    for client in slow:
        client.start()
    time.sleep(0.5)
    try:
        statuses, latencies = [], []
        for _ in range(6):
            start = time.monotonic()
            statuses.append(post_predict(server.port, body, timeout=10))
            latencies.append(time.monotonic() - start)
            time.sleep(0.2)
    finally:
        deadline = time.monotonic() + READ_TIMEOUT_S + 3
        while any(c.status is None for c in slow) and time.monotonic() < deadline:
            time.sleep(0.1)
        stop.set()
    assert statuses == [200] * 6, statuses
    assert max(latencies) < 1.0, latencies
    # Each slow client was cut off by the read deadline with a 408, not held for the worker timeout.
    assert [c.status for c in slow] == [408] * 20


def test_idle_connections_do_not_hold_threads(server):
    """100 connections that send nothing (more than all threads of both workers) cost no thread."""
    idle = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(100)]
    try:
        time.sleep(0.5)
        start = time.monotonic()
        statuses = [post_predict(server.port, jpeg(), timeout=10) for _ in range(5)]
        assert statuses == [200] * 5 and time.monotonic() - start < 2.0
    finally:
        for sock in idle:
            sock.close()


def test_stalled_body_gets_a_json_408_within_the_read_deadline(server):
    head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 5000\r\n\r\n"
    start = time.monotonic()
    status, headers, body = raw_exchange(server.port, head + b"\xff\xd8" + b"\0" * 100)
    elapsed = time.monotonic() - start
    assert status == 408 and headers["content-type"].startswith("application/json")
    assert json.loads(body)["title"] == "Request timeout"
    assert READ_TIMEOUT_S - 0.5 < elapsed < READ_TIMEOUT_S + 2


def test_stalled_headers_get_a_json_408(server):
    start = time.monotonic()
    status, headers, body = raw_exchange(server.port, b"POST /predict HTTP/1.1\r\nHost: x\r\n")
    assert status == 408 and json.loads(body)["title"] == "Request timeout"
    assert time.monotonic() - start < READ_TIMEOUT_S + 2


# ---------------------------------------------------------------------------------------------
# Errors gunicorn answers itself are JSON too


@pytest.mark.parametrize(
    "request_bytes, status",
    [
        (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),  # request line too long
        (b"GET / HTTP/1.1\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(60)) + b"\r\n", 431),
        (b"\x16\x03\x01\x02\x00 garbage\r\n\r\n", 400),  # TLS hello to a plain HTTP port
        (b"GET / HTTP/9.9\r\nHost: x\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: v\r\n\r\n", 400),  # space in a header name
    ],
)
def test_errors_from_the_http_server_are_json(server, request_bytes, status):
    got, headers, body = raw_exchange(server.port, request_bytes)
    assert got == status
    assert headers["content-type"] == "application/json"
    error = json.loads(body)
    assert error["title"] and error["description"]


def test_every_log_line_is_json_including_native_library_warnings(server):
    """libpng's warnings go to fd 2 from C; the worker turns them into JSON lines (issue 10 item 10)."""
    # A PNG with an invalid sRGB rendering intent: libpng prints "libpng warning: sRGB: invalid" on
    # stderr and decodes the image anyway.
    png = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    srgb = b"sRGB" + b"\x09"
    chunk = (len(srgb) - 4).to_bytes(4, "big") + srgb + zlib.crc32(srgb).to_bytes(4, "big")
    warned = png[:33] + chunk + png[33:]
    for _ in range(5):
        assert post_predict(server.port, warned, content_type="image/png") == 200
    time.sleep(0.5)
    lines = [line for line in server.log_text().splitlines() if line.strip()]
    not_json = []
    for line in lines:
        try:
            assert isinstance(json.loads(line), dict)
        except (ValueError, AssertionError):
            not_json.append(line)
    assert not not_json, not_json[:5]
    native = [r for r in server.log_records() if r.get("logger") == "polypseg.native"]
    assert native and "sRGB" in native[0]["msg"] and native[0]["level"] == "warning"


# ---------------------------------------------------------------------------------------------
# A killed worker's request is counted and logged


def test_requests_in_flight_in_a_killed_worker_are_counted(model_path):
    with Gunicorn(model_path, workers=1, env={"POLYPSEG_READ_TIMEOUT_S": "30"}) as server:
        before = metric_total(server.port, "polypseg_errors_total", status="500")
        head = (
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
            b"X-Request-ID: doomed-1\r\nContent-Length: 5000\r\n\r\n"
        )
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        sock.sendall(head + b"\xff\xd8")  # in flight: the app waits for the rest of the body
        time.sleep(0.5)
        (pid,) = server.worker_pids()
        os.kill(pid, signal.SIGKILL)
        server.wait_ready(timeout=30)  # the master replaces the worker
        deadline = time.monotonic() + 10
        while metric_total(server.port, "polypseg_lost_requests_total") < 1:
            assert time.monotonic() < deadline, server.log_text()[-2000:]
            time.sleep(0.2)
        assert metric_total(server.port, "polypseg_errors_total", status="500") == before + 1
        assert metric_total(server.port, "polypseg_requests_total", route="/predict", status="500") == 1
        lost = [r for r in server.log_records() if r.get("msg") == "request lost"]
        assert lost and lost[0]["request_id"] == "doomed-1" and lost[0]["worker_pid"] == pid
        sock.close()


# ---------------------------------------------------------------------------------------------
# Registry outages: liveness at once, readiness 503 with a reason, never a crash loop


def _registry_env(uri: str) -> dict[str, str]:
    return {
        "POLYPSEG_MODEL_URI": "models:/polyp-seg-unet@production",
        "MLFLOW_TRACKING_URI": uri,
        "MLFLOW_REGISTRY_URI": uri,
        "POLYPSEG_MODEL_RETRY_S": "2",
        "POLYPSEG_REGISTRY_TIMEOUT_S": "2",
    }


@pytest.mark.parametrize("outage", ["sqlite-in-missing-dir", "closed-port"])
def test_registry_outage_keeps_the_server_up(model_path, tmp_path, outage):
    if outage == "closed-port":
        uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    else:
        uri = "sqlite:///" + str(tmp_path / "no" / "such" / "dir" / "mlflow.db")
    start = time.monotonic()
    with Gunicorn(model_path, workers=2, env=_registry_env(uri), wait_for="/healthz") as server:
        assert time.monotonic() - start < 2.0 + 1.0  # process start included; the bar is 2 s
        checks_until = time.monotonic() + 12
        while time.monotonic() < checks_until:  # several load attempts fail meanwhile
            t0 = time.monotonic()
            assert http_get(server.port, "/healthz", timeout=2.0)[0] == 200
            status, body = http_get(server.port, "/readyz", timeout=5.0)
            assert time.monotonic() - t0 < 5.0
            assert status == 503 and json.loads(body)["description"]
            assert server.proc.poll() is None
            time.sleep(1.0)
        assert post_predict(server.port, jpeg()) == 503
        assert "Worker failed to boot" not in server.log_text()
        attempts = [r for r in server.log_records() if r.get("msg") == "model not loaded"]
        assert len(attempts) >= 4, server.log_text()[-2000:]  # retried in the background, both workers
