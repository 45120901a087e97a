#!/usr/bin/env python3
"""Throughput of batch segmentation: Ray Data (bin/predict_batch.py's path) against a plain single-process
loop over the same images, in the same run, both writing masks and a manifest.

Writes reports/bench/batch.json: images/s of each, the ratio, and Ray's start-up time (counted in its wall
time: a user waits for it too).

Usage: bin/bench_batch.py --conf conf/bench_batch.yaml
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lib.batch_predict import ManifestWriter, Segmenter, write_results
from lib.cli import parser, script
from lib.config import load_config, to_dict
from lib.io import read_csv_stems, write_json
from lib.ray_batch import PredictBatchConfig, load_predict_batch_config, segment_on_ray, start_ray


@dataclass(frozen=True)
class BenchBatchConfig:
    predict_conf: str  # conf/predict_batch.yaml: model, actors, threads and batch size of the Ray run
    images_dir: str
    splits: tuple[str, ...]  # stems taken from these split CSVs, in order
    images: int  # the first N of them
    loop_threads: int  # onnxruntime threads of the single-process loop (all cores: its best setting)
    report: str  # reports/bench/batch.json


def run_loop(model: str, threads: int, items: list[dict], out: Path, max_pixels: int) -> float:
    """The plain loop: one session, one image at a time, masks and manifest written as it goes."""
    t0 = time.perf_counter()
    segmenter = Segmenter(model, threads, max_pixels)
    writer = ManifestWriter(out / "manifest.csv")
    for item in items:
        writer.write(
            write_results(
                segmenter({"path": np.array([item["path"]]), "name": np.array([item["name"]])}), out
            )
        )
    writer.close()
    return time.perf_counter() - t0


def run_ray(cfg: PredictBatchConfig, items: list[dict], out: Path) -> tuple[float, float]:
    """Ray Data as bin/predict_batch.py runs it: (wall seconds including start-up, start-up seconds)."""
    t0 = time.perf_counter()
    ray = start_ray(cfg)
    startup = time.perf_counter() - t0
    writer = ManifestWriter(out / "manifest.csv")
    try:
        for batch in segment_on_ray(ray, cfg, items):
            writer.write(write_results(batch, out))
    finally:
        writer.close()
        ray.shutdown()
    return time.perf_counter() - t0, startup


def count_rows(out: Path) -> int:
    return sum(1 for _ in (out / "manifest.csv").open()) - 1


@script("bench_batch")
def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0], "conf/bench_batch.yaml")
    args = p.parse_args(argv)
    cfg = load_config(BenchBatchConfig, args.conf, args.overrides)
    ray_cfg = load_predict_batch_config(cfg.predict_conf)
    stems = [s for split in cfg.splits for s in read_csv_stems(split)][: cfg.images]
    items = [{"path": str(Path(cfg.images_dir) / f"{s}.jpg"), "name": f"{s}.jpg"} for s in stems]
    print(
        f"bench_batch: {len(items)} images; loop with {cfg.loop_threads} thread(s), then Ray with "
        f"{ray_cfg.actors} actor(s) x {ray_cfg.threads_per_actor} thread(s), batch {ray_cfg.batch_size}"
    )

    with tempfile.TemporaryDirectory() as tmp:
        loop_s = run_loop(ray_cfg.model, cfg.loop_threads, items, Path(tmp) / "loop", ray_cfg.max_pixels)
        print(f"bench_batch: loop {len(items) / loop_s:.2f} images/s ({loop_s:.1f} s)")
        ray_s, startup_s = run_ray(ray_cfg, items, Path(tmp) / "ray")
        print(
            f"bench_batch: Ray {len(items) / ray_s:.2f} images/s ({ray_s:.1f} s, {startup_s:.1f} s start-up)"
        )
        rows = {"loop": count_rows(Path(tmp) / "loop"), "ray": count_rows(Path(tmp) / "ray")}
    if set(rows.values()) != {len(items)}:
        raise RuntimeError(f"manifests are incomplete: {rows} rows for {len(items)} images")
    report = {
        "images": len(items),
        "loop": {
            "wall_s": round(loop_s, 2),
            "images_per_s": round(len(items) / loop_s, 3),
            "threads": cfg.loop_threads,
        },
        "ray": {
            "wall_s": round(ray_s, 2),
            "images_per_s": round(len(items) / ray_s, 3),
            "startup_s": round(startup_s, 2),
            "images_per_s_after_startup": round(len(items) / (ray_s - startup_s), 3),
            "actors": ray_cfg.actors,
            "threads_per_actor": ray_cfg.threads_per_actor,
            "batch_size": ray_cfg.batch_size,
        },
        "ratio_ray_over_loop": round(loop_s / ray_s, 3),
        "model": ray_cfg.model,
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()},
        "config": to_dict(cfg),
    }
    write_json(cfg.report, report)
    print(f"bench_batch: Ray / loop throughput = {report['ratio_ray_over_loop']} -> {cfg.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
