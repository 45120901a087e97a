#!/usr/bin/env python3
"""Load-test /predict on loopback: requests/s and latency percentiles per image size and concurrency.

Starts gunicorn with the production settings (serve/gunicorn.conf.py defaults) unless --port names
a server already running on 127.0.0.1; nothing but 127.0.0.1 is ever contacted.

Usage: bin/bench_serve.py [--model models/model.onnx | --standin] [--requests 350] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from lib.io import write_json
from serve.harness import Gunicorn, http_get, sample_image_bytes
from serve.tinymodel import write_tiny_model

SIZES = {"256x256": (256, 256), "1280x1024": (1280, 1024)}  # (width, height) of the test JPEGs
JPEG_QUALITY = 90


def make_jpegs() -> dict[str, bytes]:
    """The sample Kvasir frame resized to each benchmark size, as JPEG bytes."""
    bgr = cv2.imdecode(np.frombuffer(sample_image_bytes(), np.uint8), cv2.IMREAD_COLOR)
    jpegs = {}
    for name, size in SIZES.items():
        resized = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
        jpegs[name] = cv2.imencode(".jpg", resized, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])[1].tobytes()
    return jpegs


def post_once(port: int, body: bytes) -> tuple[int, float]:
    start = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("POST", "/predict?format=png", body=body, headers={"Content-Type": "image/jpeg"})
        resp = conn.getresponse()
        resp.read()
        status = resp.status
    except OSError:
        status = 0
    finally:
        conn.close()
    return status, (time.perf_counter() - start) * 1e3


def run_load(port: int, body: bytes, concurrency: int, requests: int) -> dict:
    """`requests` POSTs from `concurrency` threads, each waiting for its answer before the next."""
    latencies, errors, lock = [], [0], threading.Lock()
    remaining = [requests]

    def client() -> None:
        while True:
            with lock:
                if remaining[0] == 0:
                    return
                remaining[0] -= 1
            status, ms = post_once(port, body)
            with lock:
                latencies.append(ms)
                errors[0] += status != 200

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99])
    return {
        "concurrency": concurrency,
        "requests": requests,
        "errors": errors[0],
        "rps": round(requests / wall, 2),
        "p50_ms": round(float(p50), 2),
        "p95_ms": round(float(p95), 2),
        "p99_ms": round(float(p99), 2),
        "max_ms": round(max(latencies), 2),
    }


def rss_mb(pids: list[int]) -> dict[str, float]:
    out = {}
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                out[str(pid)] = round(int(line.split()[1]) / 1024, 1)
    return out


def bench(port: int, pids: list[int], concurrencies: list[int], requests: int) -> dict:
    jpegs = make_jpegs()
    for body in jpegs.values():  # warm-up, concurrent so every worker reaches its steady-state heap
        run_load(port, body, concurrency=4, requests=40)
    rss_before = rss_mb(pids)
    results = []
    for name, body in jpegs.items():
        for c in concurrencies:
            row = {"image": name, "jpeg_bytes": len(body), **run_load(port, body, c, requests)}
            row["worker_rss_mb"] = rss_mb(pids)  # after this cell: a leak shows as a steady climb
            print(
                f"bench_serve: {name} c={c}: {row['rps']} req/s p50={row['p50_ms']} p99={row['p99_ms']} ms "
                f"errors={row['errors']}",
                flush=True,
            )
            results.append(row)
    rss_after = rss_mb(pids)
    version = json.loads(http_get(port, "/version")[1])
    cell = {(r["image"], r["concurrency"]): r for r in results}
    small_c1, small_c4 = cell.get(("256x256", 1)), cell.get(("256x256", 4))
    growth = round(sum(rss_after.values()) - sum(rss_before.values()), 1) if pids else None
    return {
        "model_version": version["model_version"],
        "model_source": (version.get("model") or {}).get("source"),
        "workers": len(pids) or None,
        "ort_threads": version["runtime"]["ort_threads"],
        "cpu_cores": len(os.sched_getaffinity(0)),
        "total_requests": requests * len(results),
        "results": results,
        "worker_rss_mb": {"before": rss_before, "after": rss_after, "growth_total_mb": growth},
        "targets": {
            "p50_256_c1_le_50ms": small_c1["p50_ms"] <= 50 if small_c1 else None,
            "p99_256_c4_lt_150ms": small_c4["p99_ms"] < 150 if small_c4 else None,
            "no_errors": all(r["errors"] == 0 for r in results),
        },
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="models/model.onnx", help="ONNX model with model.json beside it")
    ap.add_argument("--standin", action="store_true", help="bench the tiny 256x256 stand-in model instead")
    ap.add_argument("--port", type=int, help="bench a server already listening on 127.0.0.1:PORT")
    ap.add_argument("--requests", type=int, default=350, help="requests per (image, concurrency) cell")
    ap.add_argument("--concurrency", default="1,4,16", help="comma-separated client thread counts")
    ap.add_argument("--out", default="reports/bench/serve.json")
    args = ap.parse_args(argv)
    concurrencies = [int(c) for c in args.concurrency.split(",")]

    if args.port:
        report = bench(args.port, [], concurrencies, args.requests)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            model = write_tiny_model(tmp, size=256) if args.standin else Path(args.model)
            if not model.is_file():
                print(
                    f"bench_serve: {model} not found (run the export stage, or pass --standin)",
                    file=sys.stderr,
                )
                return 1
            with Gunicorn(model) as server:  # production defaults: workers, threads from gunicorn.conf.py
                report = bench(server.port, server.worker_pids(), concurrencies, args.requests)
    report["standin_model"] = args.standin
    write_json(args.out, report)
    small = {r["concurrency"]: r for r in report["results"] if r["image"] == "256x256"}
    p50, p99 = small.get(1, {}).get("p50_ms"), small.get(4, {}).get("p99_ms")
    growth = report["worker_rss_mb"]["growth_total_mb"]
    print(
        f"bench_serve: {report['total_requests']} requests, 256x256 p50@c1={p50} ms p99@c4={p99} ms, "
        f"worker RSS growth={growth} MB{' (STAND-IN model)' if args.standin else ''} -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
