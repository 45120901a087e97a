"""Requests in flight per worker, kept where the gunicorn master can read them if the worker dies.

A worker killed mid-request (out of memory, SIGKILL, a crash in native code) never answers and never
logs: without this, its requests would vanish from the error rate. Each worker rewrites one small
JSON file (`<dir>/<pid>.json`, on tmpfs when available) when a request starts and ends; the master's
`child_exit` hook (serve/gunicorn.conf.py) reads what was left, counts each as a 500 and logs it.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path


def ledger_dir() -> str | None:
    return os.environ.get("POLYPSEG_INFLIGHT_DIR") or None


class InflightLedger:
    """This process's requests in flight, mirrored to `<dir>/<pid>.json`."""

    def __init__(self, directory: str | Path):
        self.path = Path(directory) / f"{os.getpid()}.json"
        self._tmp = self.path.with_suffix(".tmp")
        self._requests: dict[str, dict] = {}
        self._lock = threading.Lock()

    def start(self, key: str, **fields) -> None:
        with self._lock:
            self._requests[key] = {**fields, "start": time.time()}
            self._write()

    def end(self, key: str) -> None:
        with self._lock:
            if self._requests.pop(key, None) is not None:
                self._write()

    def _write(self) -> None:
        try:
            self._tmp.write_text(json.dumps(self._requests))
            os.replace(self._tmp, self.path)
        except OSError:
            pass  # accounting must never fail a request


def take_lost(directory: str | Path, pid: int) -> list[dict]:
    """The requests a dead worker `pid` left in flight (its file is removed)."""
    path = Path(directory) / f"{pid}.json"
    try:
        requests = json.loads(path.read_text())
    except (OSError, ValueError):
        requests = {}
    for leftover in (path, path.with_suffix(".tmp")):
        leftover.unlink(missing_ok=True)
    now = time.time()
    return [
        {"request_id": key, **fields, "seconds": round(now - fields.get("start", now), 3)}
        for key, fields in requests.items()
        if isinstance(fields, dict)
    ]
