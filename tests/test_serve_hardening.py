"""Serving hardening in one process: admission (429/503), read deadlines, model loading that never
blocks or crashes, shadow-mode quotas and permissions, CORS, /metrics access, no server paths."""

import json
import logging
import os
import socket
import stat
import threading
import time

import cv2
import falcon
import falcon.testing
import numpy as np
import pytest

from serve.admission import AdmissionGate, Overloaded, QueueTimeout
from serve.app import create_app, get_app
from serve.deadline import DeadlineSocket, ReadTimeout, client_gone
from serve.imagecheck import image_end
from serve.inflight import InflightLedger, take_lost
from serve.model_slot import public_error
from serve.predictor import ModelError, load_local, load_predictor
from serve.settings import Settings
from serve.shadow import ShadowStore
from tests.support.harness import sample_image_bytes


def jpeg(h=53, w=37) -> bytes:
    rng = np.random.default_rng(1)
    return cv2.imencode(".jpg", rng.integers(0, 256, (h, w, 3), dtype=np.uint8))[1].tobytes()


def post(client, body=None, **headers):
    return client.simulate_post(
        "/predict", body=jpeg() if body is None else body, headers={"Content-Type": "image/jpeg", **headers}
    )


# ---------------------------------------------------------------------------------------------
# Admission: bounded work per worker


def hold_turn(gate: AdmissionGate) -> tuple[threading.Thread, threading.Event]:
    """A thread that holds one of `gate`'s turns until the returned event is set."""
    release = threading.Event()

    def hold():
        with gate.turn():
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    while gate.admitted < 1:
        time.sleep(0.001)
    return holder, release


def test_gate_admits_running_plus_waiting_and_refuses_the_rest():
    gate = AdmissionGate(max_running=1, max_waiting=1, wait_s=5.0)
    waiting_started, results = threading.Event(), []

    def wait_turn():
        waiting_started.set()
        with gate.turn() as waited:
            results.append(waited)

    holder, release = hold_turn(gate)
    waiter = threading.Thread(target=wait_turn)
    waiter.start()
    while gate.admitted < 2:
        time.sleep(0.001)
    start = time.monotonic()
    with pytest.raises(Overloaded, match="busy"):
        with gate.turn():
            pass
    assert time.monotonic() - start < 0.1  # refused at once, not after a wait
    release.set()
    holder.join(5)
    waiter.join(5)
    assert len(results) == 1 and gate.admitted == 0


def test_gate_gives_up_after_the_wait_limit():
    gate = AdmissionGate(max_running=1, max_waiting=4, wait_s=0.2)
    holder, release = hold_turn(gate)
    start = time.monotonic()
    with pytest.raises(QueueTimeout):
        with gate.turn():
            pass
    assert 0.15 < time.monotonic() - start < 1.0
    release.set()
    holder.join(5)


def test_full_worker_answers_429_with_retry_after(predictor):
    settings = Settings(max_running=1, max_waiting=0)
    app = create_app(predictor, settings)
    client = falcon.testing.TestClient(app)
    gate = app._router.find("/predict")[0].gate
    with gate.turn():  # the one slot is busy
        busy = post(client)
    assert busy.status_code == 429
    assert busy.headers["Retry-After"] == "1" and busy.json["title"] == "Server busy"
    assert post(client).status_code == 200  # and serves again once it is free
    metrics = client.simulate_get("/metrics").text
    assert 'polypseg_rejected_requests_total{reason="overloaded"} 1.0' in metrics


# ---------------------------------------------------------------------------------------------
# Read deadline and vanished clients (socket pairs: real sockets, no server needed)


def test_deadline_socket_stops_a_trickling_client():
    ours, theirs = socket.socketpair()
    sock = DeadlineSocket.adopt(ours, budget_s=0.5)
    sock.setblocking(True)
    sock.arm()
    stop = threading.Event()

    def trickle():  # one byte every 0.1 s: no single read ever waits long
        while not stop.is_set():
            try:
                theirs.send(b"x")
            except OSError:
                return
            time.sleep(0.1)

    threading.Thread(target=trickle, daemon=True).start()
    start, received = time.monotonic(), 0
    with pytest.raises(ReadTimeout, match="0.5 s"):
        while True:
            received += len(sock.recv(1024))
    assert 0.4 < time.monotonic() - start < 1.0 and received >= 3
    assert sock.recv(1024) == b""  # nothing more is read from it
    stop.set()
    sock.close()
    theirs.close()


def test_deadline_socket_is_plain_when_disarmed():
    ours, theirs = socket.socketpair()
    sock = DeadlineSocket.adopt(ours, budget_s=0.01)
    sock.setblocking(True)
    theirs.sendall(b"hello")
    time.sleep(0.05)
    assert sock.recv(5) == b"hello"  # never armed: no deadline
    sock.close()
    theirs.close()


def test_client_gone_sees_a_closed_peer_without_consuming_data():
    ours, theirs = socket.socketpair()
    assert not client_gone(ours)
    theirs.sendall(b"next request")
    assert not client_gone(ours)
    assert ours.recv(100) == b"next request"  # the peek consumed nothing
    theirs.close()
    assert client_gone(ours)
    ours.close()
    assert not client_gone(None)


# ---------------------------------------------------------------------------------------------
# Model loading: in the background, never blocking, never crashing; no server paths to clients


def test_a_slow_loader_blocks_neither_boot_nor_health(predictor):
    release = threading.Event()

    def slow_loader():
        release.wait(10)
        return predictor

    start = time.monotonic()
    client = falcon.testing.TestClient(create_app(None, Settings(), loader=slow_loader))
    assert client.simulate_get("/healthz").status_code == 200
    ready = client.simulate_get("/readyz")
    assert time.monotonic() - start < 1.0
    assert ready.status_code == 503 and "loading" in ready.json["description"]
    assert post(client).status_code == 503
    release.set()
    deadline = time.monotonic() + 5
    while client.simulate_get("/readyz").status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert post(client).status_code == 200


def test_a_local_model_is_loaded_before_the_app_accepts_requests(model_path, monkeypatch):
    """A new or restarted worker must not answer 503 beside ready ones while its model loads."""
    logger = logging.getLogger("polypseg")  # get_app configures it; undo that for the other tests
    monkeypatch.setattr(logger, "handlers", [])
    monkeypatch.setattr(logger, "propagate", True)
    monkeypatch.setenv("POLYPSEG_MODEL_PATH", str(model_path))
    monkeypatch.delenv("POLYPSEG_MODEL_URI", raising=False)
    client = falcon.testing.TestClient(get_app())
    assert client.simulate_get("/readyz").status_code == 200  # at once, no polling


def test_any_loader_exception_is_a_503_with_a_reason_never_a_crash(tmp_path, model_path):
    calls = []

    def broken_loader():
        calls.append(1)
        if len(calls) > 3:  # recovers, so the background thread ends with the test
            return load_local(model_path)
        raise RuntimeError(f"sqlite3.OperationalError: unable to open database file {tmp_path}/no/mlflow.db")

    client = falcon.testing.TestClient(create_app(None, Settings(model_retry_s=0.3), loader=broken_loader))
    deadline = time.monotonic() + 5
    while len(calls) < 2:  # retried
        assert time.monotonic() < deadline
        time.sleep(0.01)
    ready = client.simulate_get("/readyz")
    assert ready.status_code == 503 and ready.headers["Retry-After"]
    description = ready.json["description"]
    assert "unable to open database file" in description and "mlflow.db" in description
    assert str(tmp_path) not in description  # the server's layout stays on the server
    assert client.simulate_get("/healthz").status_code == 200
    while client.simulate_get("/readyz").status_code != 200:  # and it recovers on its own
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_missing_model_503_and_version_show_no_absolute_path(tmp_path, model_path):
    missing = tmp_path / "deep" / "models" / "model.onnx"
    client = falcon.testing.TestClient(
        create_app(None, Settings(), loader=lambda: load_predictor(str(missing)))
    )
    time.sleep(0.2)
    body = client.simulate_get("/readyz").json
    assert "model.onnx" in body["description"] and str(tmp_path) not in body["description"]
    version = falcon.testing.TestClient(create_app(load_local(model_path), Settings())).simulate_get(
        "/version"
    )
    assert version.json["model"]["source"] == "model.onnx"
    assert str(tmp_path) not in client.simulate_get("/version").text


@pytest.mark.parametrize(
    "message, public",
    [
        ("model file not found: /srv/app/models/model.onnx", "model file not found: model.onnx"),
        (
            "cannot resolve models:/polyp-seg-unet@production: 404",
            "cannot resolve models:/polyp-seg-unet@production: 404",
        ),
        ("cannot download models:/polyp-seg-unet/3: boom", "cannot download models:/polyp-seg-unet/3: boom"),
        (
            "connection to http://127.0.0.1:5000/api/2.0 refused",
            "connection to http://127.0.0.1:5000/api/2.0 refused",
        ),
        ("sqlite:////tmp/x/mlflow.db (unable to open)", "sqlite:////tmp/x/mlflow.db (unable to open)"),
        ("'/a/b' and '/c/d/e.json'", "'b' and 'e.json'"),
    ],
)
def test_public_error_cuts_filesystem_paths_only(message, public):
    assert public_error(message) == public


def test_registry_that_cannot_be_opened_is_a_model_error(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///" + str(tmp_path / "missing" / "dir" / "mlflow.db"))
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", "sqlite:///" + str(tmp_path / "missing" / "dir" / "mlflow.db"))
    with pytest.raises(ModelError):
        load_predictor("unused", model_uri="models:/polyp-seg-unet@production", timeout_s=2)


# ---------------------------------------------------------------------------------------------
# Shadow mode: caps, pruning, permissions, no trailing bytes


def _store(tmp_path, per_request=10_000_000, total=10_000_000):
    return ShadowStore(tmp_path / "shadow", per_request, total)


def test_shadow_files_are_private_whatever_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        saved = _store(tmp_path).save("r1", jpeg(), "jpeg", b"mask", {"a": 1})
    finally:
        os.umask(old)
    for path in [saved.folder.parent.parent, saved.folder.parent, saved.folder]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
    for path in saved.folder.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_shadow_does_not_store_bytes_after_the_image_end(tmp_path, predictor):
    real = sample_image_bytes()
    # Bytes appended after the end marker (issue 10: JPEGs padded to 19 MB); decoders ignore them.
    padded = real + b"\0" * 200_000 + real
    assert image_end(padded, "jpeg") == len(real)
    settings = Settings(shadow_dir=str(tmp_path / "shadow"))
    client = falcon.testing.TestClient(create_app(predictor, settings))
    assert post(client, padded).status_code == 200
    (stored,) = (tmp_path / "shadow").glob("*/*/input.jpg")
    assert stored.read_bytes() == real


def test_image_end_skips_an_exif_thumbnail():
    inner = jpeg(8, 8)  # a whole JPEG (with its own SOS and EOI) inside an APP1 segment
    app1 = b"\xff\xe1" + (len(inner) + 2).to_bytes(2, "big") + inner
    outer = jpeg()
    combined = outer[:2] + app1 + outer[2:]
    assert cv2.imdecode(np.frombuffer(combined, np.uint8), cv2.IMREAD_COLOR) is not None
    assert image_end(combined + b"trailing", "jpeg") == len(combined)


def test_shadow_per_request_cap_keeps_the_record_only(tmp_path):
    saved = _store(tmp_path, per_request=100).save("big", b"x" * 1000, "jpeg", b"mask", {})
    assert not saved.input_stored
    assert not list(saved.folder.glob("input.*"))
    record = json.loads((saved.folder / "record.json").read_text())
    assert record["input_stored"] is False and record["input_bytes"] == 1000


def test_shadow_total_cap_prunes_the_oldest_requests(tmp_path):
    store = _store(tmp_path, total=50_000)
    folders = [store.save(f"r{i}", b"x" * 9_000, "jpeg", b"m", {}).folder for i in range(12)]
    remaining = sorted(p for p in (tmp_path / "shadow").glob("*/*") if p.is_dir())
    total = sum(f.stat().st_size for f in (tmp_path / "shadow").rglob("*") if f.is_file())
    assert total <= 50_000
    assert folders[-1] in remaining and folders[0] not in remaining  # newest kept, oldest gone
    assert len(remaining) < 12


def test_shadow_refuses_a_request_larger_than_the_whole_cap(tmp_path):
    store = _store(tmp_path, per_request=10**9, total=1_000)
    saved = store.save("huge", b"x" * 5_000, "jpeg", b"m", {})
    assert saved.folder is None


def test_shadow_metrics_count_what_was_not_stored(tmp_path, predictor):
    settings = Settings(shadow_dir=str(tmp_path / "shadow"), shadow_max_request_bytes=10)
    client = falcon.testing.TestClient(create_app(predictor, settings))
    assert post(client).status_code == 200
    assert (
        'polypseg_shadow_dropped_total{reason="input_too_large"} 1.0' in client.simulate_get("/metrics").text
    )


# ---------------------------------------------------------------------------------------------
# Browser origins and /metrics access


def test_cross_origin_browser_post_is_refused_before_any_work(predictor):
    client = falcon.testing.TestClient(create_app(predictor, Settings()))
    refused = post(client, Origin="https://evil.example", Host="api.local:8000")
    assert refused.status_code == 403 and "POLYPSEG_CORS_ORIGINS" in refused.json["description"]
    same = post(client, Origin="http://api.local:8000", Host="api.local:8000")
    assert same.status_code == 200 and "Access-Control-Allow-Origin" not in same.headers
    assert post(client).status_code == 200  # curl and scripts send no Origin


def test_listed_origin_gets_cors_headers_and_a_preflight(predictor):
    client = falcon.testing.TestClient(
        create_app(predictor, Settings(cors_origins=("https://viewer.example",)))
    )
    ok = post(client, Origin="https://viewer.example")
    assert ok.status_code == 200 and ok.headers["Access-Control-Allow-Origin"] == "https://viewer.example"
    preflight = client.simulate_options(
        "/predict", headers={"Origin": "https://viewer.example", "Access-Control-Request-Method": "POST"}
    )
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Methods"] == "POST"
    assert "Content-Type" in preflight.headers["Access-Control-Allow-Headers"]
    other = client.simulate_options("/predict", headers={"Origin": "https://other.example"})
    assert other.status_code == 403


def test_metrics_can_be_limited_to_the_scraper_network(predictor):
    client = falcon.testing.TestClient(create_app(predictor, Settings(metrics_allow=("10.0.0.0/8",))))
    assert client.simulate_get("/metrics", remote_addr="10.1.2.3").status_code == 200
    refused = client.simulate_get("/metrics", remote_addr="192.168.1.5")
    assert refused.status_code == 403 and refused.json["title"] == "Forbidden"
    assert client.simulate_get("/healthz", remote_addr="192.168.1.5").status_code == 200


# ---------------------------------------------------------------------------------------------
# In-flight ledger (the master's child_exit reads it; tests/test_serve_resilience.py kills a worker)


def test_ledger_keeps_only_unfinished_requests(tmp_path):
    ledger = InflightLedger(tmp_path)
    ledger.start("a", request_id="req-a", endpoint="/predict")
    ledger.start("b", request_id="req-b", endpoint="/predict")
    ledger.end("a")
    lost = take_lost(tmp_path, os.getpid())
    assert [r["request_id"] for r in lost] == ["req-b"] and lost[0]["endpoint"] == "/predict"
    assert not list(tmp_path.iterdir())
    assert take_lost(tmp_path, 999_999_999) == []
