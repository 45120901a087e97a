#!/usr/bin/env python3
"""Overlay the predicted polyp mask on every frame of a video; report frames per second and stage timings.

Decode, segmentation and overlay+encode run as a three-thread pipeline (lib/video.py). The output has the
input's size and frame rate, with the model version and NOT FOR CLINICAL USE burned into every frame.
The report goes to the conf's `report` with {stem} = the input video's name (reports/video/<stem>.json),
so one video's report never replaces another's or the benchmark's (bin/bench_video.py passes --report).

Usage: bin/predict_video.py --conf conf/predict_video.yaml --input VIDEO --output VIDEO [--report JSON]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import cv2

from lib.cli import parser, script
from lib.config import ConfigError, load_config, to_dict
from lib.io import write_json
from lib.model_contract import read_model_json
from lib.onnx_session import make_session, session_runner
from lib.video import FrameSegmenter, PredictVideoConfig, run_pipeline


def open_video(path: str) -> tuple[cv2.VideoCapture, float, int, int, int]:
    if not Path(path).is_file():
        raise FileNotFoundError(f"video {path} not found")
    cap = cv2.VideoCapture(path)
    ok, first = cap.read() if cap.isOpened() else (False, None)
    if not ok:
        raise ConfigError(
            f"{path}: OpenCV cannot decode a frame of this file (not a video, or an unknown codec)"
        )
    cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    return cap, fps, first.shape[1], first.shape[0], int(cap.get(cv2.CAP_PROP_FRAME_COUNT))


def report_for(template: str, video: str) -> str:
    """The report path of `video`: the conf's `report` with {stem} replaced by the video's file stem."""
    return template.replace("{stem}", Path(video).stem)


@script("predict_video")
def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0], "conf/predict_video.yaml")
    p.add_argument("--input", required=True, help="video file OpenCV can decode")
    p.add_argument("--output", required=True, help="output video (.mp4 with the default codec)")
    p.add_argument("--report", help="report path (default: the conf's, {stem} = the input's name)")
    args = p.parse_args(argv)
    cfg = load_config(PredictVideoConfig, args.conf, args.overrides)
    if len(cfg.codec) != 4:
        raise ConfigError(f"{args.conf}: codec must be a FourCC of 4 characters, got {cfg.codec!r}")

    meta = read_model_json(Path(cfg.model).with_name("model.json"))
    segment = FrameSegmenter(
        session_runner(make_session(cfg.model, cfg.threads), meta.input_name, meta.output_name),
        meta,
        cfg.smoothing_alpha,
    )
    reader, fps, width, height, frames = open_video(args.input)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(args.output, cv2.VideoWriter_fourcc(*cfg.codec), fps, (width, height))
    if not writer.isOpened():
        raise ConfigError(f"{args.output}: OpenCV cannot write codec {cfg.codec!r} to this file")
    print(
        f"predict_video: {args.input}: {width}x{height}, {frames} frames at {fps:g} fps; "
        f"model {meta.model_version} ({meta.precision}, {cfg.threads} thread(s)), "
        f"smoothing alpha {cfg.smoothing_alpha}"
    )

    def progress(n: int) -> None:
        if n % 100 == 0:
            print(f"predict_video: {n}/{frames} frames, {n / (time.perf_counter() - t0):.1f} fps", flush=True)

    t0 = time.perf_counter()
    try:
        times = run_pipeline(
            reader, writer, segment, meta.model_version, progress=progress, depth=cfg.queue_depth
        )
    finally:
        reader.release()
        writer.release()
    wall = time.perf_counter() - t0
    report_path = args.report or report_for(cfg.report, args.input)
    stages = times.per_frame_ms()
    report = {
        "input": args.input,
        "output": args.output,
        "size": [width, height],
        "frames": times.frames,
        "wall_s": round(wall, 3),
        "fps": round(times.frames / wall, 2),
        "stage_ms_per_frame": stages,  # busy time of each stage per frame; the largest bounds the rate
        "bottleneck": max(stages, key=stages.get),
        "model": cfg.model,
        "model_version": meta.model_version,
        "precision": meta.precision,
        "model_input": meta.input_size,
        "config": to_dict(cfg),
    }
    write_json(report_path, report)
    print(
        f"predict_video: {times.frames} frames in {wall:.1f} s = {report['fps']} fps; per frame ms {stages} "
        f"-> {args.output}, {report_path}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
