#!/usr/bin/env python3
"""Load-test /predict on loopback: requests/s and latency percentiles per image size and concurrency.

Starts gunicorn with the production settings (serve/gunicorn.conf.py defaults) unless `port` names
a server already running on 127.0.0.1; nothing but 127.0.0.1 is ever contacted. Then the abuse
scenarios of issue 10 (slow clients, overload), each against the old sync worker and the current one.

Usage: bin/bench_serve.py --conf conf/bench_serve.yaml [--set standin=true --set abuse.enabled=false ...]
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from lib.cli import parser, script
from lib.config import load_config
from lib.io import write_json
from tests.support.harness import Gunicorn, http_get, sample_image_bytes
from tests.support.loadgen import overload_scenario, run_load, slow_clients_scenario
from tests.support.tinymodel import write_tiny_model


@dataclass(frozen=True)
class Abuse:
    enabled: bool
    slow_clients: int
    normal_tries: int
    normal_timeout_s: float
    overload_concurrency: int
    overload_seconds: float
    overload_client_timeout_s: float


@dataclass(frozen=True)
class BenchServeConfig:  # every value lives in conf/bench_serve.yaml
    model: str
    standin: bool
    port: int | None
    requests: int
    concurrency: tuple[int, ...]
    out: str
    abuse: Abuse


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


# ---------------------------------------------------------------------------------------------
# Abuse scenarios (issue 10), each run against gunicorn's "sync" worker (the old default) and the
# current worker in the same run, so the comparison is like for like.

WORKER_CLASSES = {"before_sync": "sync", "after_default": "serve.worker.ApiWorker"}


def abuse_scenarios(model: Path, cfg: Abuse) -> dict:
    body = make_jpegs()["256x256"]
    out = {}
    for label, worker_class in WORKER_CLASSES.items():
        with Gunicorn(model, env={"POLYPSEG_WORKER_CLASS": worker_class}) as server:
            run_load(server.port, body, concurrency=2, requests=20)  # warm-up
            slow = slow_clients_scenario(
                server.port, body, cfg.slow_clients, cfg.normal_tries, cfg.normal_timeout_s
            )
            print(
                f"bench_serve: {label} slow clients: normal client answered "
                f"{slow['normal_answered']}/{cfg.normal_tries}",
                flush=True,
            )
            over = overload_scenario(
                server.port,
                body,
                cfg.overload_concurrency,
                cfg.overload_seconds,
                cfg.overload_client_timeout_s,
            )
            print(
                f"bench_serve: {label} overload c={cfg.overload_concurrency}: "
                f"answered {over['answered_share']}, "
                f"429 {over['refused_429_share']}, accepted p99 {over['accepted_p99_ms']} ms, "
                f"computed for clients that left {over['computed_for_clients_that_left']}",
                flush=True,
            )
        out[label] = {"worker_class": worker_class, "slow_clients": slow, "overload": over}
    return out


@script("bench_serve")
def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__.splitlines()[0], "conf/bench_serve.yaml").parse_args(argv)
    cfg = load_config(BenchServeConfig, args.conf, args.overrides)
    concurrencies = list(cfg.concurrency)

    if cfg.port:
        report = bench(cfg.port, [], concurrencies, cfg.requests)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            model = write_tiny_model(tmp, size=256) if cfg.standin else Path(cfg.model)
            if not model.is_file():
                print(
                    f"bench_serve: {model} not found (run the export stage, or --set standin=true)",
                    file=sys.stderr,
                )
                return 1
            with Gunicorn(model) as server:  # production defaults: workers, threads from gunicorn.conf.py
                report = bench(server.port, server.worker_pids(), concurrencies, cfg.requests)
            if cfg.abuse.enabled:
                report["abuse"] = abuse_scenarios(model, cfg.abuse)
    report["standin_model"] = cfg.standin
    write_json(cfg.out, report)
    small = {r["concurrency"]: r for r in report["results"] if r["image"] == "256x256"}
    p50, p99 = small.get(1, {}).get("p50_ms"), small.get(4, {}).get("p99_ms")
    growth = report["worker_rss_mb"]["growth_total_mb"]
    print(
        f"bench_serve: {report['total_requests']} requests, 256x256 p50@c1={p50} ms p99@c4={p99} ms, "
        f"worker RSS growth={growth} MB{' (STAND-IN model)' if cfg.standin else ''} -> {cfg.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
