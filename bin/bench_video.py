#!/usr/bin/env python3
"""Benchmark the video overlay: fps on a 720p video made from validation frames, and whether temporal
smoothing helps (Dice against the panned ground truth, and flicker between consecutive masks).

Writes the video overlay report of bin/predict_video.py (fps_report: reports/bench/video.json, passed as
its --report; make predict-video writes reports/video/<stem>.json instead) and
reports/bench/video_smoothing.json. Validation frames: smoothing is a decision, so never test.

Usage: bin/bench_video.py --conf conf/bench_video.yaml
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from lib.cli import parser, script
from lib.config import load_config, to_dict
from lib.io import read_csv_stems, read_image, read_mask, write_json
from lib.metrics import confusion, dice_score
from lib.model_contract import read_model_json
from lib.onnx_session import make_session, session_runner
from lib.video import FrameSegmenter, load_predict_video_config, pan_frames, run_pipeline


@dataclass(frozen=True)
class BenchVideoConfig:
    predict_conf: str  # conf/predict_video.yaml: the model, threads and codec the fps run uses
    fps_report: str  # reports/bench/video.json: the fps run's report (predict_video.py --report)
    images_dir: str
    masks_dir: str
    split: str  # validation stems
    images: int  # first N stems, each becomes a panned clip
    frames_per_image: int  # clip length in frames
    size: tuple[int, int]  # output width, height (720p)
    fps: float  # frame rate written into the test video
    alphas: tuple[float, ...]  # smoothing settings compared (1.0 = off)
    report: str  # reports/bench/video_smoothing.json


def make_video(cfg: BenchVideoConfig, path: Path) -> list[np.ndarray]:
    """Write the panned clips to `path`; return each frame's ground-truth mask."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), cfg.fps, tuple(cfg.size))
    truth = []
    for stem in read_csv_stems(cfg.split)[: cfg.images]:
        rgb = read_image(Path(cfg.images_dir) / f"{stem}.jpg")
        mask = read_mask(Path(cfg.masks_dir) / f"{stem}.jpg")
        for frame, gt in pan_frames(rgb, mask, cfg.frames_per_image, tuple(cfg.size)):
            writer.write(frame)
            truth.append(gt)
    writer.release()
    return truth


def smoothing_run(video: Path, truth: list[np.ndarray], segment: FrameSegmenter, clip: int) -> dict:
    """Dice per frame against the ground truth and flicker (1 - IoU of consecutive masks in a clip)."""
    dice, flicker, previous = [], [], {}

    def on_mask(i: int, mask: np.ndarray) -> None:
        dice.append(dice_score(*confusion(mask, truth[i])[:3]))
        if i % clip and "mask" in previous:
            inter = np.logical_and(mask, previous["mask"]).sum()
            union = np.logical_or(mask, previous["mask"]).sum()
            flicker.append(1.0 - inter / union if union else 0.0)
        previous["mask"] = mask

    reader = cv2.VideoCapture(str(video))
    with tempfile.TemporaryDirectory() as tmp:
        writer = cv2.VideoWriter(
            str(Path(tmp) / "o.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 25, truth[0].shape[::-1]
        )
        run_pipeline(reader, writer, segment, "bench", on_mask=on_mask)
        writer.release()
    reader.release()
    return {
        "dice_mean": round(float(np.mean(dice)), 5),
        "flicker_mean": round(float(np.mean(flicker)), 5),
        "frames": len(dice),
    }


def fps_command(cfg: BenchVideoConfig, video: Path, output: Path) -> list[str]:
    """bin/predict_video.py on the test video, its report at fps_report (not make predict-video's path)."""
    return [
        sys.executable,
        "bin/predict_video.py",
        "--conf",
        cfg.predict_conf,
        "--input",
        str(video),
        "--output",
        str(output),
        "--report",
        cfg.fps_report,
    ]


@script("bench_video")
def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0], "conf/bench_video.yaml")
    args = p.parse_args(argv)
    cfg = load_config(BenchVideoConfig, args.conf, args.overrides)

    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "val720.mp4"
        truth = make_video(cfg, video)
        print(
            f"bench_video: {len(truth)} frames of {cfg.size[0]}x{cfg.size[1]} "
            f"from {cfg.images} validation images"
        )
        # The real script in its own process: its report is the fps figure users will see.
        fps_run = fps_command(cfg, video, Path(tmp) / "overlay.mp4")
        if status := subprocess.run(fps_run, check=False).returncode:
            return status

        pv = load_predict_video_config(cfg.predict_conf)
        meta = read_model_json(Path(pv.model).with_name("model.json"))
        runner = session_runner(make_session(pv.model, pv.threads), meta.input_name, meta.output_name)
        results = {}
        for alpha in cfg.alphas:
            results[str(alpha)] = smoothing_run(
                video, truth, FrameSegmenter(runner, meta, alpha), cfg.frames_per_image
            )
            print(f"bench_video: smoothing alpha {alpha}: {results[str(alpha)]}")
    write_json(
        cfg.report,
        {
            "model": pv.model,
            "model_version": meta.model_version,
            "split": cfg.split,
            "by_alpha": results,
            "config": to_dict(cfg),
        },
    )
    print(f"bench_video: -> {cfg.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
