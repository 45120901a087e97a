#!/usr/bin/env python3
"""Evaluate a checkpoint on the val/test splits (or any images/+masks/ folder) at the original size.

Usage: bin/evaluate.py --conf conf/evaluate.yaml [--data DIR [--out DIR]]
"""

from __future__ import annotations

import csv
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lib.cli import parser
from lib.config import ConfigError, load_config
from lib.inference import predict_probability, torch_runner
from lib.io import find_pair_dirs, list_images, read_csv_stems, read_image, read_mask, write_image, write_json
from lib.metrics import image_metrics, pr_curve, summarise, threshold_histograms
from lib.model import load_checkpoint
from lib.overlay import caption, draw_overlay, montage
from lib.plots import dice_histogram_png, pr_curve_png
from lib.report import render_index
from lib.tracking import data_revision, git_state


@dataclass(frozen=True)
class EvaluateConfig:
    checkpoint: str  # models/best.pt from bin/train.py
    data_dir: str  # folder holding images/ and masks/ at original size
    splits: dict[str, str]  # split name -> CSV of stems
    out_dir: str  # reports folder
    limit: int | None = None  # first N stems per split
    threshold: float = 0.5  # probability threshold
    overlays_per_kind: int = 4  # random, best and worst overlays each
    pr_bins: int = 100  # PR-curve thresholds
    seed: int = 42  # random overlay choice
    threads: int = 2  # torch threads
    log_to_mlflow: bool = True  # log to the checkpoint's training run


def evaluate_split(name, stems, images, masks, predict, cfg, out: Path, provenance: dict) -> dict:
    rows, pos, neg = [], np.zeros(cfg.pr_bins, np.int64), np.zeros(cfg.pr_bins, np.int64)
    for i, stem in enumerate(stems, 1):
        prob, gt = predict(read_image(images[stem])), read_mask(masks[stem])
        rows.append(
            {
                "stem": stem,
                **image_metrics(prob, gt, cfg.threshold),
                "height": gt.shape[0],
                "width": gt.shape[1],
            }
        )
        p, n = threshold_histograms(prob, gt, cfg.pr_bins)
        pos, neg = pos + p, neg + n
        if i % 25 == 0 or i == len(stems):
            running = np.mean([r["dice"] for r in rows])
            print(f"evaluate[{name}]: {i}/{len(stems)} images, running dice {running:.4f}", flush=True)
    summary = summarise(rows)
    curve = pr_curve(pos, neg)
    metrics = {
        **summary,
        "threshold": cfg.threshold,
        "average_precision": curve["average_precision"],
        **provenance,
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "metrics.json", metrics)
    with open(out / "per_image.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (out / "pr_curve.png").write_bytes(pr_curve_png(curve, cfg.threshold, name))
    (out / "dice_hist.png").write_bytes(dice_histogram_png([r["dice"] for r in rows], name))

    order = sorted(range(len(rows)), key=lambda k: rows[k]["dice"])
    rng = np.random.default_rng(cfg.seed)
    k = min(cfg.overlays_per_kind, len(rows))
    picks = {
        "worst": order[:k],
        "best": order[::-1][:k],
        "random": sorted(rng.choice(len(rows), k, replace=False)),
    }
    tiles = []
    for kind, idx in picks.items():
        for j in idx:
            stem = rows[j]["stem"]
            rgb = read_image(images[stem])
            pred = predict(rgb) >= cfg.threshold
            tile = caption(
                draw_overlay(rgb, pred, read_mask(masks[stem])),
                f"{kind} {stem[:12]} dice {rows[j]['dice']:.3f}",
            )
            write_image(out / "overlays" / f"{kind}_{stem}.png", tile)
            tiles.append(tile)
    write_image(out / "montage.png", montage(tiles, columns=k))
    return metrics


def log_to_run(run_id: str, results: dict, out_dir: str) -> str:
    """Add evaluation metrics and reports to the (finished) training run."""
    from mlflow.entities import Metric

    from lib.tracking import set_tracking

    client = set_tracking().MlflowClient()
    try:
        client.get_run(run_id)
    except Exception as exc:  # a checkpoint from another tracking store: report, don't fail
        return f"not logged to MLflow (run {run_id} not found: {type(exc).__name__})"
    now = int(time.time() * 1000)
    metrics = [
        Metric(f"{split}_{k}", v, now, 0)
        for split, m in results.items()
        for k, v in m.items()
        if isinstance(v, float)
    ]
    client.log_batch(run_id, metrics=metrics)
    client.log_artifacts(run_id, out_dir, artifact_path=Path(out_dir).name)
    return f"logged to MLflow run {run_id}"


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0], "conf/evaluate.yaml")
    p.add_argument("--data", help="evaluate every image/mask pair of this folder instead of the splits")
    p.add_argument("--out", help="reports folder (default: out_dir; with --data, reports/eval-<name>)")
    args = p.parse_args(argv)
    try:
        cfg = load_config(EvaluateConfig, args.conf, args.overrides)
        images_dir, masks_dir = find_pair_dirs(args.data or cfg.data_dir)
    except (ConfigError, FileNotFoundError) as exc:
        print(f"evaluate: {exc}", file=sys.stderr)
        return 2
    images, masks = list_images(images_dir), list_images(masks_dir)
    out_dir = args.out or cfg.out_dir
    if args.data:
        name = Path(args.data).resolve().name
        splits = {name: sorted(set(images) & set(masks))}
        out_dir = args.out or str(Path(cfg.out_dir).parent / f"eval-{name}")
    else:
        splits = {name: read_csv_stems(csv_path) for name, csv_path in cfg.splits.items()}
    splits = {name: stems[: cfg.limit] if cfg.limit else stems for name, stems in splits.items()}
    for name, stems in splits.items():
        missing = [s for s in stems if s not in images or s not in masks]
        if missing or not stems:
            print(f"evaluate: split {name}: {len(missing)} stems without image or mask, e.g. {missing[:3]}",
                  file=sys.stderr)  # fmt: skip
            return 2

    model, ckpt = load_checkpoint(cfg.checkpoint)
    run_model = torch_runner(model, cfg.threads)
    size, mean, std = ckpt["model_config"]["input_size"], ckpt["mean"], ckpt["std"]

    def predict(rgb: np.ndarray) -> np.ndarray:
        return predict_probability(run_model, rgb, size, mean, std)

    sha, dirty = git_state()
    meta = ckpt["metadata"]
    provenance = {"git_sha": sha, "git_dirty": dirty, "data_rev": data_revision(),
                  "model_version": meta["model_version"], "model_git_sha": meta["git_sha"],
                  "checkpoint": cfg.checkpoint, "run_id": meta["run_id"]}  # fmt: skip
    results = {}
    for name, stems in splits.items():
        results[name] = evaluate_split(
            name, stems, images, masks, predict, cfg, Path(out_dir) / name, provenance
        )
    (Path(out_dir) / "index.html").write_text(render_index(results, meta))
    logged = log_to_run(meta["run_id"], results, out_dir) if cfg.log_to_mlflow else "MLflow logging off"
    line = ", ".join(
        f"{n}: {m['n_images']} images dice={m['dice_mean']:.4f} iou={m['iou_mean']:.4f}"
        for n, m in results.items()
    )
    print(f"evaluate: {line} -> {out_dir}/index.html ({logged})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
