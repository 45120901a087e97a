#!/usr/bin/env python3
"""Images/s of /predict with one image per request vs several per request (multipart batches).

One gunicorn with the production defaults (serve/gunicorn.conf.py) and the configured model; the same
K Kvasir test images go one by one and in batches, at each client concurrency, modes interleaved
round by round so a slow moment of the machine hits every mode alike. Only 127.0.0.1 is contacted.

Usage: bin/bench_batch_requests.py --conf conf/bench_batch_requests.yaml [--set rounds=3 ...]
"""

from __future__ import annotations

import http.client
import json
import os
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from lib.cli import parser, script
from lib.config import load_config
from lib.io import read_csv_stems, write_json
from tests.support.harness import Gunicorn, http_get


@dataclass(frozen=True)
class BenchBatchConfig:  # every value lives in conf/bench_batch_requests.yaml
    model: str
    images_dir: str
    split: str
    images: int
    batch_sizes: tuple[int, ...]
    concurrency: tuple[int, ...]
    rounds: int
    out: str


BOUNDARY = "polypsegbench"


def request_bodies(images: list[tuple[str, bytes]], batch_size: int) -> list[tuple[str, bytes, int]]:
    """(content type, body, images in it): a raw JPEG body each for 1, multipart forms for more."""
    if batch_size == 1:
        return [("image/jpeg", data, 1) for _, data in images]
    bodies = []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        body = b"".join(
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
            f"Content-Type: image/jpeg\r\n\r\n".encode()
            + data
            + b"\r\n"
            for name, data in chunk
        )
        bodies.append(
            (f"multipart/form-data; boundary={BOUNDARY}", body + f"--{BOUNDARY}--\r\n".encode(), len(chunk))
        )
    return bodies


def post(port: int, content_type: str, body: bytes) -> tuple[int, float, bytes]:
    """(status, Retry-After seconds, body) of one POST /predict; status 0 when the connection failed."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("POST", "/predict", body=body, headers={"Content-Type": content_type})
        resp = conn.getresponse()
        return resp.status, float(resp.getheader("Retry-After") or 1), resp.read()
    except OSError:
        return 0, 0.0, b""
    finally:
        conn.close()


def send_all(port: int, bodies: list[tuple[str, bytes, int]], concurrency: int) -> dict:
    """Every body once from `concurrency` closed-loop threads; images/s over the wall time."""
    queue, lock = list(reversed(bodies)), threading.Lock()
    tally = {"requests": 0, "refused": 0, "errors": 0}

    def client() -> None:
        while True:
            with lock:
                if not queue:
                    return
                content_type, body, n = queue.pop()
            while True:  # a 429/503 is retried after its Retry-After, as a client should
                status, retry_after, answer = post(port, content_type, body)
                if status not in (429, 503):
                    break
                with lock:
                    tally["refused"] += 1
                time.sleep(retry_after)
            ok = status == 200 and (n == 1 or json.loads(answer)["count"] == n)
            with lock:
                tally["requests"] += 1
                tally["errors"] += 0 if ok else 1

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    return {**tally, "seconds": round(wall, 3), "images_per_s": round(sum(n for *_, n in bodies) / wall, 2)}


def bench(port: int, images: list[tuple[str, bytes]], cfg: BenchBatchConfig) -> list[dict]:
    modes = [(c, b) for c in cfg.concurrency for b in cfg.batch_sizes]
    bodies = {b: request_bodies(images, b) for b in cfg.batch_sizes}
    for c, b in modes:  # warm-up: every worker has run every request shape before timing starts
        send_all(port, bodies[b], c)
    runs = {mode: [] for mode in modes}
    for r in range(cfg.rounds):
        for c, b in modes:
            runs[(c, b)].append(send_all(port, bodies[b], c))
        print(f"bench_batch_requests: round {r + 1}/{cfg.rounds} done", flush=True)
    rows = []
    for c, b in modes:
        rates = [run["images_per_s"] for run in runs[(c, b)]]
        rows.append(
            {
                "concurrency": c,
                "batch_size": b,
                "requests_per_round": len(bodies[b]),
                "images_per_s": round(statistics.median(rates), 2),
                "images_per_s_rounds": rates,
                "refused_429_503": sum(run["refused"] for run in runs[(c, b)]),
                "errors": sum(run["errors"] for run in runs[(c, b)]),
            }
        )
    one_by_one = {row["concurrency"]: row["images_per_s"] for row in rows if row["batch_size"] == 1}
    for row in rows:
        row["ratio_vs_one_by_one"] = round(row["images_per_s"] / one_by_one[row["concurrency"]], 3)
    return rows


@script("bench_batch_requests")
def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__.splitlines()[0], "conf/bench_batch_requests.yaml").parse_args(argv)
    cfg = load_config(BenchBatchConfig, args.conf, args.overrides)
    if 1 not in cfg.batch_sizes:
        print("bench_batch_requests: batch_sizes must include 1, the one-by-one baseline", file=sys.stderr)
        return 2
    if not Path(cfg.model).is_file():
        raise FileNotFoundError(f"{cfg.model} not found (run the export stage)")
    stems = read_csv_stems(cfg.split)[: cfg.images]
    images = [(f"{s}.jpg", (Path(cfg.images_dir) / f"{s}.jpg").read_bytes()) for s in stems]
    with Gunicorn(cfg.model) as server:  # production defaults: workers, threads, admission
        rows = bench(server.port, images, cfg)
        version = json.loads(http_get(server.port, "/version")[1])
        workers = len(server.worker_pids())
    report = {
        "model_version": version["model_version"],
        "model_source": (version.get("model") or {}).get("source"),
        "workers": workers,
        "ort_threads": version["runtime"]["ort_threads"],
        "cpu_cores": len(os.sched_getaffinity(0)),
        "images": len(images),
        "image_bytes": sum(len(d) for _, d in images),
        "rounds": cfg.rounds,
        "results": rows,
        "command": "bin/bench_batch_requests.py --conf conf/bench_batch_requests.yaml",
    }
    write_json(cfg.out, report)
    summary = ", ".join(
        f"c={r['concurrency']} b={r['batch_size']}: {r['images_per_s']} img/s (x{r['ratio_vs_one_by_one']})"
        for r in rows
    )
    print(f"bench_batch_requests: {len(images)} images x {cfg.rounds} rounds; {summary} -> {cfg.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
