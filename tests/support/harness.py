"""Run the API for tests and benchmarks: a sample Kvasir image and a gunicorn on loopback.

Used by tests/test_serve_gunicorn.py, tests/test_browser.py and bin/bench_serve.py; nothing in the
serving path imports it.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SAMPLE_STEM = "cju0qkwl35piu0993l0dewei2"  # a Kvasir-SEG frame with one clear polyp, 622x529
SAMPLE_ZIP = os.environ.get(
    "POLYPSEG_SAMPLE_ZIP", str(REPO.parent / "shared" / "datasets" / "kvasir-seg.zip")
)  # ../shared beside the checkout


def sample_image_bytes(stem: str = SAMPLE_STEM) -> bytes:
    """A real Kvasir-SEG JPEG: from data/raw when the data stage has run, else from the dataset zip."""
    local = REPO / "data" / "raw" / "Kvasir-SEG" / "images" / f"{stem}.jpg"
    if local.is_file():
        return local.read_bytes()
    if Path(SAMPLE_ZIP).is_file():
        with zipfile.ZipFile(SAMPLE_ZIP) as zf:
            return zf.read(f"Kvasir-SEG/images/{stem}.jpg")
    raise FileNotFoundError(f"no Kvasir-SEG image {stem}: neither {local} nor {SAMPLE_ZIP} exists")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def post_predict(port: int, body: bytes, content_type: str = "image/jpeg", timeout: float = 10.0) -> int:
    """POST `body` to 127.0.0.1:`port`/predict as `content_type`; returns the status (the body is dropped)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/predict", body=body, headers={"Content-Type": content_type})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def raw_exchange(port: int, data: bytes, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes to 127.0.0.1:`port` and read until the server closes: (status, headers, body).

    Raw, not http.client, so malformed requests (control characters, bad framing) go out as written.
    Header names are lower-cased.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines[1:] if ": " in line)}
    return int(lines[0].split()[1]), headers, body


class Gunicorn:
    """`with Gunicorn(model_path) as server:` a real gunicorn on 127.0.0.1, ready to serve."""

    def __init__(
        self,
        model_path: str | Path,
        workers: int = 2,
        env: dict[str, str] | None = None,
        log_path=None,
        wait_for: str = "/readyz",
    ):
        self.wait_for = wait_for  # the endpoint that must answer 200 before `with` goes on
        self.port = free_port()
        self._tmp = tempfile.TemporaryDirectory(prefix="polypseg-gunicorn-")
        self.prometheus_dir = Path(self._tmp.name) / "prometheus"
        self.log_path = Path(log_path) if log_path else Path(self._tmp.name) / "gunicorn.log"
        # MLflow's set_tracking_uri/set_registry_uri export MLFLOW_* variables into this process: a test
        # that used another store earlier would point the server there. Tests pass their store in `env`.
        stores = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
        inherited = {k: v for k, v in os.environ.items() if k not in stores}
        self.env = {
            **inherited,
            "PYTHONPATH": str(REPO),
            "POLYPSEG_MODEL_PATH": str(model_path),
            "POLYPSEG_BIND": f"127.0.0.1:{self.port}",
            "POLYPSEG_WORKERS": str(workers),
            "PROMETHEUS_MULTIPROC_DIR": str(self.prometheus_dir),
            **(env or {}),
        }
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Gunicorn:
        cmd = [sys.executable, "-m", "gunicorn", "-c", "serve/gunicorn.conf.py", "serve.app:get_app()"]
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=self.env, stdout=self._log, stderr=subprocess.STDOUT)
        self.wait_ready(path=self.wait_for)
        return self

    def wait_ready(self, timeout: float = 90.0, path: str = "/readyz") -> None:
        # 90 s: a registry load imports mlflow, slow on a busy CI
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            try:
                if http_get(self.port, path, timeout=1.0)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"gunicorn {path} not 200 after {timeout} s:\n{self.log_text()[-3000:]}")

    def worker_pids(self) -> list[int]:
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return [int(p) for p in children.read_text().split()] if children.exists() else []

    def minor_page_faults(self) -> int | None:
        """Minor page faults of the workers so far (/proc/PID/stat field 10); None without /proc."""
        counts = []
        for pid in self.worker_pids():
            stat = Path(f"/proc/{pid}/stat")
            if stat.exists():
                counts.append(int(stat.read_text().rsplit(")", 1)[1].split()[7]))
        return sum(counts) if counts else None

    def stage_medians(self, path: str = "/predict", last: int | None = None) -> dict[str, float]:
        """Median of each `*_ms` stage time over the access log's lines for `path` (the `last` ones)."""
        records = [r for r in self.log_records() if r.get("path") == path and "total_ms" in r]
        records = records[-last:] if last else records
        stages = sorted(
            {k for r in records for k in r if k.endswith("_ms") and isinstance(r[k], (int, float))}
        )
        return {k: float(statistics.median(r[k] for r in records if k in r)) for k in stages}

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_records(self) -> list[dict]:
        records = []
        for line in self.log_text().splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
        return records

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM (graceful), then SIGKILL if needed; returns the exit status."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode if self.proc else 0

    def __exit__(self, *exc) -> None:
        self.stop()
        self._log.close()
        self._tmp.cleanup()


def smoke_test(port: int, timeout: float = 120.0) -> str:
    """Wait for /readyz on 127.0.0.1:`port`, post a real image, check the answer; returns a summary line."""
    import base64

    import cv2
    import numpy as np

    deadline = time.monotonic() + timeout
    while True:
        try:
            if http_get(port, "/readyz", timeout=2.0)[0] == 200:
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"/readyz on port {port} not 200 after {timeout} s")
        time.sleep(0.5)
    image = sample_image_bytes()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request(
        "POST", "/predict", body=image, headers={"Content-Type": "image/jpeg", "X-Request-ID": "smoke-1"}
    )
    resp = conn.getresponse()
    body = json.loads(resp.read())
    conn.close()
    if resp.status != 200:
        raise AssertionError(f"/predict answered {resp.status}: {body}")
    mask = cv2.imdecode(np.frombuffer(base64.b64decode(body["mask"]), np.uint8), cv2.IMREAD_UNCHANGED)
    expected = cv2.imdecode(np.frombuffer(image, np.uint8), cv2.IMREAD_COLOR).shape[:2]
    if mask is None or mask.shape != expected or body["request_id"] != "smoke-1":
        raise AssertionError(
            f"bad answer: mask {None if mask is None else mask.shape}, expected {expected}: {body}"
        )
    status, metrics = http_get(port, "/metrics")
    counted = re.search(rb'^polypseg_requests_total\{[^}]*route="/predict",status="200"', metrics, re.M)
    if status != 200 or not counted:
        raise AssertionError("/metrics does not count the prediction (polypseg_requests_total)")
    return (
        f"smoke: /predict 200, mask {mask.shape[1]}x{mask.shape[0]}, "
        f"polyp_fraction={body['polyp_fraction']}, model_version={body['model_version']}, "
        f"latency_ms={body['latency_ms']}"
    )


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Smoke-test a running polypseg API on 127.0.0.1.")
    parser.add_argument("command", choices=["smoke"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for /readyz")
    args = parser.parse_args()
    print(smoke_test(args.port, args.timeout))
