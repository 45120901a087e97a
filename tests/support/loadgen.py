"""Load generators for bin/bench_serve.py: closed-loop clients, slow clients, an overload burst.

Benchmark scaffolding (like tests/support/harness.py), never part of the served image.
"""

from __future__ import annotations

import collections
import http.client
import socket
import threading
import time

import numpy as np

from tests.support.harness import http_get


def post_once(port: int, body: bytes, timeout: float = 60.0) -> tuple[int, float]:
    """(status, ms); 0 = timeout or reset. A 429/503 is followed by the Retry-After pause it asks
    for, as an HTTP client should (not counted in ms)."""
    start = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    retry_after = 0.0
    try:
        conn.request("POST", "/predict?format=png", body=body, headers={"Content-Type": "image/jpeg"})
        resp = conn.getresponse()
        resp.read()
        status = resp.status
        if status in (429, 503):
            retry_after = float(resp.getheader("Retry-After") or 0)
    except OSError:
        status = 0
    finally:
        conn.close()
    ms = (time.perf_counter() - start) * 1e3
    time.sleep(retry_after)
    return status, ms


def run_load(port: int, body: bytes, concurrency: int, requests: int) -> dict:
    """`requests` POSTs from `concurrency` threads, each waiting for its answer before the next."""
    latencies, errors, refused, lock = [], [0], [0], threading.Lock()
    remaining = [requests]

    def client() -> None:
        while True:
            with lock:
                if remaining[0] == 0:
                    return
                remaining[0] -= 1
            status, ms = post_once(port, body)
            with lock:
                if status == 200:
                    latencies.append(ms)
                elif status == 429:  # admission control shed it: counted apart, not an error
                    refused[0] += 1
                else:
                    errors[0] += 1

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99])  # answered requests only
    return {
        "concurrency": concurrency,
        "requests": requests,
        "errors": errors[0],
        "refused_429": refused[0],
        "rps": round(len(latencies) / wall, 2),  # answered (200) per second
        "p50_ms": round(float(p50), 2),
        "p95_ms": round(float(p95), 2),
        "p99_ms": round(float(p99), 2),
        "max_ms": round(max(latencies), 2),
    }


def slow_client(port: int, body: bytes, interval: float, stop: threading.Event) -> None:
    """Send a /predict request one byte per `interval` seconds until answered, cut off or stopped."""
    data = (
        f"POST /predict HTTP/1.1\r\nHost: bench\r\nContent-Type: image/jpeg\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
            for i in range(len(data)):
                if stop.is_set():
                    return
                sock.sendall(data[i : i + 1])
                if stop.wait(interval):
                    return
    except OSError:
        return


def slow_clients_scenario(
    port: int, body: bytes, slow: int = 20, tries: int = 6, timeout: float = 10.0
) -> dict:
    """`slow` clients trickle one byte per second; a normal client makes `tries` requests meanwhile."""
    stop = threading.Event()
    threads = [
        threading.Thread(target=slow_client, args=(port, body, 1.0, stop), daemon=True) for _ in range(slow)
    ]
    for t in threads:
        t.start()
    time.sleep(1.0)
    outcomes = []
    for _ in range(tries):
        start = time.perf_counter()
        status = post_once(port, body, timeout=timeout)[0]
        outcomes.append({"status": status, "ms": round((time.perf_counter() - start) * 1e3, 1)})
        time.sleep(0.5)
    stop.set()
    answered = [o for o in outcomes if o["status"] == 200]
    return {
        "slow_clients": slow,
        "bytes_per_second": 1,
        "normal_tries": tries,
        "normal_timeout_s": timeout,
        "normal_answered": len(answered),
        "normal_answered_share": round(len(answered) / tries, 3),
        "normal_latency_ms": [o["ms"] for o in outcomes],
        "normal_statuses": [o["status"] for o in outcomes],
    }


def inference_count(port: int) -> float:
    text = http_get(port, "/metrics")[1].decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("polypseg_inference_duration_seconds_count")
    )


def overload_scenario(
    port: int, body: bytes, concurrency: int = 64, seconds: float = 20.0, timeout: float = 10.0
) -> dict:
    """`concurrency` closed-loop clients for `seconds`, each giving up after `timeout` seconds."""
    statuses, accepted_ms, lock = collections.Counter(), [], threading.Lock()
    computed_before = inference_count(port)
    end = time.monotonic() + seconds

    def client() -> None:
        while time.monotonic() < end:
            status, ms = post_once(port, body, timeout=timeout)
            with lock:
                statuses[status] += 1
                if status == 200:
                    accepted_ms.append(ms)

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    time.sleep(1.0)  # requests still queued in the server finish (or are dropped) before counting
    computed = inference_count(port) - computed_before
    total = sum(statuses.values())
    p50, p99 = np.percentile(accepted_ms, [50, 99]) if accepted_ms else (None, None)
    return {
        "concurrency": concurrency,
        "seconds": seconds,
        "client_timeout_s": timeout,
        "requests": total,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},  # 0 = client timeout or reset
        "answered_share": round(statuses[200] / total, 3),
        "refused_429_share": round(statuses[429] / total, 3),
        "refused_503_share": round(statuses[503] / total, 3),
        "client_timeout_share": round(statuses[0] / total, 3),
        "accepted_p50_ms": round(float(p50), 1) if p50 is not None else None,
        "accepted_p99_ms": round(float(p99), 1) if p99 is not None else None,
        "computed": int(computed),
        "computed_for_clients_that_left": int(computed - statuses[200]),
    }
