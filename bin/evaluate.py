#!/usr/bin/env python3
"""Evaluate a checkpoint: choose the operating point on validation, then report every split once.

Usage: bin/evaluate.py --conf conf/evaluate.yaml [--data DIR [--out DIR]]

One pass over each split predicts every image once and keeps, per image, the confusion counts at
each candidate threshold, plus PR and calibration sums; polyp-free crops of the same frames
(lib/negatives.py) are predicted in the same pass. The pixel threshold (best mean Dice) and the
image-level minimum area (best balanced accuracy on positives + negatives) are chosen on the
`choose_on` split and saved to <out_dir>/decision.json; every split is then reported at them, and
the robustness split is re-predicted under each corruption of lib/corruptions.py.

The threshold search starts from the checkpoint's threshold (conf/train.yaml's, stored by
bin/train.py): it joins the grid and wins ties; `threshold: checkpoint` keeps it without a search.

With --data DIR (another centre's images/ + masks/, any format lib/io.py reads) there is no
validation split: the decision is read from <out_dir>/decision.json of the main run when it exists,
else the checkpoint's threshold and the config's min area (0 for `auto`), and the line printed says which.
Negatives, calibration and robustness are computed on DIR itself.
"""

from __future__ import annotations

import csv
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np

from lib.calibration import calibration_bins, reliability
from lib.cli import parser
from lib.config import ConfigError, flatten, load_config, save_config
from lib.corruptions import SEVERITIES, corrupt
from lib.decision import (
    Decision,
    checkpoint_threshold,
    choose_min_area,
    choose_threshold,
    image_level,
    load_decision,
    min_area_candidates,
    save_decision,
)
from lib.inference import predict_probability, torch_runner
from lib.io import find_pair_dirs, list_images, read_csv_stems, read_image, read_mask, write_image, write_json
from lib.metrics import (
    count_metrics,
    image_metrics,
    pr_curve,
    summarise,
    threshold_confusions,
    threshold_histograms,
)
from lib.model import load_checkpoint
from lib.negatives import CropSpec, crop_negatives, false_alarm_summary
from lib.overlay import caption, draw_overlay, montage
from lib.plots import dice_histogram_png, pr_curve_png, reliability_png, robustness_png
from lib.report import render_index
from lib.tracking import data_revision, git_state


@dataclass(frozen=True)
class NegativesConfig:
    enabled: bool = True  # polyp-free crops of the split's frames, predicted like any image
    crops: CropSpec = CropSpec()  # sizes and placement, lib/negatives.py
    splits: tuple[str, ...] = ("val", "test")  # splits whose frames give crops
    report: str = "test"  # its crops fill the top-level keys of negatives/metrics.json
    fp_area: float = 0.01  # a crop with more predicted polyp area than this share is a false alarm
    montage: int = 8  # crops with the most predicted area shown in negatives/montage.png


@dataclass(frozen=True)
class RobustnessConfig:
    enabled: bool = True
    split: str = "test"  # re-predicted under every corruption
    limit: int | None = None  # first N images of the split; null = all
    corruptions: tuple[str, ...] | None = None  # names from lib/corruptions.py; null = all
    severities: tuple[int, ...] = (1, 2)  # 1 mild, 2 visible, 3 harsh


@dataclass(frozen=True)
class EvaluateConfig:
    checkpoint: str  # models/best.pt from bin/train.py
    data_dir: str  # folder holding images/ and masks/ at original size
    splits: dict[str, str]  # split name -> CSV of stems
    out_dir: str  # reports folder
    limit: int | None = None  # first N stems per split
    choose_on: str = "val"  # split on which threshold and min area are chosen
    threshold: Literal["auto", "checkpoint"] = "auto"  # auto = best on choose_on; checkpoint = as trained
    threshold_grid: tuple[float, ...] = (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7)  # auto tries
    min_area_fraction: float | Literal["auto"] = "auto"  # image-level rule, share of the image
    calibration_bins: int = 15  # equal-width probability bins for the ECE
    overlays_per_kind: int = 4  # random, best and worst overlays each
    pr_bins: int = 100  # PR-curve thresholds
    seed: int = 42  # random overlays, crops, corruptions
    threads: int = 2  # torch threads
    tta: Literal["none", "hflip", "hvflip"] = "none"  # flip test-time augmentation (1, 2 or 4 passes)
    log_to_mlflow: bool = True  # log to the checkpoint's training run
    negatives: NegativesConfig = NegativesConfig()
    robustness: RobustnessConfig = RobustnessConfig()


@dataclass
class Scan:
    """What one pass over a split leaves: per-image counts at each candidate threshold, and split sums."""

    stems: list[str]
    counts: list[np.ndarray] = field(default_factory=list)  # per image (T, 4): tp, fp, fn, tn
    shapes: list[tuple[int, int]] = field(default_factory=list)  # per image (H, W)
    crops: list[tuple[str, int]] = field(default_factory=list)  # (stem, index) of each negative crop
    crop_areas: list[np.ndarray] = field(default_factory=list)  # per crop (T,): predicted area share
    pr: tuple[np.ndarray, np.ndarray] | None = None  # summed threshold_histograms
    calibration: np.ndarray | None = None  # summed calibration_bins

    def areas(self, k: int) -> np.ndarray:
        """Predicted polyp share of each image at threshold index k."""
        return np.array([(c[k, 0] + c[k, 1]) / c[k].sum() for c in self.counts])

    def negative_areas(self, k: int) -> np.ndarray:
        """Predicted share of every polyp-free picture: images with an empty mask, then the crops."""
        empty = np.array([c[0, 0] + c[0, 2] == 0 for c in self.counts], bool)
        return np.concatenate([self.areas(k)[empty], [a[k] for a in self.crop_areas]])

    def positive_areas(self, k: int) -> np.ndarray:
        return self.areas(k)[[c[0, 0] + c[0, 2] > 0 for c in self.counts]]

    def dice(self, k: int | None = None) -> np.ndarray:
        """Per-image Dice at threshold index k, or `(N, T)` at every threshold."""
        dice = np.array([[count_metrics(*row)["dice"] for row in c] for c in self.counts])
        return dice if k is None else dice[:, k]


def scan_split(name, stems, images, masks, predict, thresholds, cfg, crop_size: int | None) -> Scan:
    """Predict every image once (and its negative crops when `crop_size` is given)."""
    scan, start = Scan(stems), time.time()
    pos, neg = np.zeros(cfg.pr_bins, np.int64), np.zeros(cfg.pr_bins, np.int64)
    calibration = np.zeros((cfg.calibration_bins, 3))
    for i, stem in enumerate(stems, 1):
        rgb, gt = read_image(images[stem]), read_mask(masks[stem])
        prob = predict(rgb)
        scan.counts.append(threshold_confusions(prob, gt, thresholds))
        scan.shapes.append(gt.shape)
        p, n = threshold_histograms(prob, gt, cfg.pr_bins)
        pos, neg = pos + p, neg + n
        calibration += calibration_bins(prob, gt, cfg.calibration_bins)
        crops = crop_negatives(rgb, gt, cfg.negatives.crops, cfg.seed, stem, crop_size) if crop_size else []
        for j, crop in enumerate(crops):
            crop_prob = predict(crop)
            scan.crops.append((stem, j))
            scan.crop_areas.append(np.array([np.mean(crop_prob >= t) for t in thresholds]))
        if i % 25 == 0 or i == len(stems):
            print(
                f"evaluate[{name}]: {i}/{len(stems)} images, {len(scan.crops)} negative crops, "
                f"{time.time() - start:.0f}s",
                flush=True,
            )
    scan.pr, scan.calibration = (pos, neg), calibration
    return scan


def decide(cfg, scan: Scan, thresholds: list[float], trained: float) -> Decision:
    """Threshold (best mean Dice, ties to the checkpoint's `trained`) and min area (best balanced
    accuracy) on the choose_on scan; a min area given in the config is kept."""
    threshold = choose_threshold(scan.dice(), thresholds, trained) if cfg.threshold == "auto" else trained
    k = thresholds.index(threshold)
    where = f"{cfg.choose_on} ({len(scan.stems)} images"
    if cfg.min_area_fraction != "auto":
        return Decision(threshold, cfg.min_area_fraction, f"{where}; min area from the config)")
    negatives = scan.negative_areas(k)
    if negatives.size == 0:  # nothing polyp-free to weigh false alarms against: any pixel counts
        return Decision(threshold, 0.0, f"{where}; no negatives, so min area 0)")
    min_area = choose_min_area(scan.positive_areas(k), negatives, min_area_candidates())
    return Decision(threshold, min_area, f"{where} + {len(scan.crop_areas)} negative crops)")


def decision_for_data(cfg, conf: str, trained: float) -> Decision:
    """--data has no validation split: reuse the main run's decision.json, else the checkpoint's
    threshold `trained` and the config's min area."""
    path = Path(cfg.out_dir) / "decision.json"
    if path.exists():
        decision = load_decision(path)
        return Decision(decision.threshold, decision.min_area_fraction, f"{decision.chosen_on}, via {path}")
    min_area = 0.0 if cfg.min_area_fraction == "auto" else cfg.min_area_fraction
    return Decision(trained, min_area, f"checkpoint threshold and {conf}, as {path} does not exist")


def write_split(name, scan: Scan, k: int, decision, images, masks, predict, cfg, out: Path, provenance):
    """metrics.json, per_image.csv, plots and overlays of one split at the chosen operating point."""
    rows = [
        {"stem": s, **count_metrics(*c[k]), "height": h, "width": w, "area_fraction": float(a)}
        for s, c, (h, w), a in zip(scan.stems, scan.counts, scan.shapes, scan.areas(k))
    ]
    curve, calibration = pr_curve(*scan.pr), reliability(scan.calibration)
    detection = image_level(scan.positive_areas(k), scan.negative_areas(k), decision.min_area_fraction)
    metrics = {
        **summarise(rows),
        "threshold": decision.threshold,
        "average_precision": curve["average_precision"],
        "ece": calibration["ece"],
        "calibration_bins": cfg.calibration_bins,
        "image_level": detection,
        **provenance,
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "metrics.json", metrics)
    with open(out / "per_image.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (out / "pr_curve.png").write_bytes(pr_curve_png(curve, decision.threshold, name))
    (out / "dice_hist.png").write_bytes(dice_histogram_png([r["dice"] for r in rows], name))
    (out / "reliability.png").write_bytes(reliability_png(calibration, name))

    order = sorted(range(len(rows)), key=lambda j: rows[j]["dice"])
    n = min(cfg.overlays_per_kind, len(rows))
    rng = np.random.default_rng(cfg.seed)
    picks = {"worst": order[:n], "best": order[::-1][:n], "random": sorted(rng.choice(len(rows), n, False))}
    tiles = []
    for kind, idx in picks.items():
        for j in idx:
            stem = rows[j]["stem"]
            rgb = read_image(images[stem])
            pred = predict(rgb) >= decision.threshold
            label = f"{kind} {stem[:12]} dice {rows[j]['dice']:.3f}"
            tile = caption(draw_overlay(rgb, pred, read_mask(masks[stem])), label)
            write_image(out / "overlays" / f"{kind}_{stem}.png", tile)
            tiles.append(tile)
    write_image(out / "montage.png", montage(tiles, columns=n))
    return metrics


def write_negatives(scans: dict, k: int, decision, images, masks, predict, cfg, size: int, out: Path) -> dict:
    """negatives/<split>.json per split; metrics.json and montage.png show negatives.report's crops."""
    splits = {}
    for name, scan in scans.items():
        areas = np.array([a[k] for a in scan.crop_areas])
        splits[name] = false_alarm_summary(areas, cfg.negatives.fp_area)
        specificity = image_level([], areas, decision.min_area_fraction)["specificity"]
        splits[name]["detected_rate"] = None if specificity is None else 1 - specificity
        write_json(out / f"{name}.json", splits[name])
    report = cfg.negatives.report
    areas = np.array([a[k] for a in scans[report].crop_areas])
    tiles = []
    for j in np.argsort(-areas, kind="stable")[: cfg.negatives.montage]:
        stem, index = scans[report].crops[j]
        rgb, gt = read_image(images[stem]), read_mask(masks[stem])
        crop = crop_negatives(rgb, gt, cfg.negatives.crops, cfg.seed, stem, size)[index]
        pred = predict(crop) >= decision.threshold
        tiles.append(caption(draw_overlay(crop, pred), f"{stem[:12]} area {areas[j]:.3f}"))
    if tiles:  # frames too small or too dark for any crop leave none
        write_image(out / "montage.png", montage(tiles, columns=4))
    metrics = {
        **splits[report],
        "split": report,
        "threshold": decision.threshold,
        "min_area_fraction": decision.min_area_fraction,
        "splits": splits,
    }
    write_json(out / "metrics.json", metrics)
    return metrics


def run_robustness(stems, clean_dice, images, masks, predict, decision, cfg) -> dict:
    """Mean Dice of the robustness split under each corruption and severity, and the drop from clean."""
    rc = cfg.robustness
    pairs = [(c, s) for c in (rc.corruptions or SEVERITIES) for s in rc.severities]
    dice = {pair: [] for pair in pairs}
    start = time.time()
    for i, stem in enumerate(stems, 1):
        rgb, gt = read_image(images[stem]), read_mask(masks[stem])
        for c, s in pairs:
            image, target = corrupt(rgb, gt, c, s, cfg.seed, stem)
            dice[(c, s)].append(image_metrics(predict(image), target, decision.threshold)["dice"])
        if i % 10 == 0 or i == len(stems):
            eta = (time.time() - start) / i * (len(stems) - i)
            print(f"evaluate[robustness]: {i}/{len(stems)} images x {len(pairs)} corruptions, eta {eta:.0f}s")
    clean = float(np.mean(clean_dice))
    table = {c: {} for c, _ in pairs}
    for (c, s), values in dice.items():
        mean = float(np.mean(values))
        table[c][str(s)] = {"params": SEVERITIES[c][s], "dice_mean": mean, "dice_drop": clean - mean}
    drops = {f"{c}/{s}": clean - float(np.mean(v)) for (c, s), v in dice.items()}
    return {
        "split": rc.split,
        "n_images": len(stems),
        "threshold": decision.threshold,
        "seed": cfg.seed,
        "dice_clean": clean,
        "mean_dice_drop": float(np.mean(list(drops.values()))),
        "worst": max(drops, key=drops.get),
        "corruptions": table,
    }


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
        Metric(f"{section}_{k}", v, now, 0)
        for section, m in results.items()
        for k, v in flatten(m).items()
        if isinstance(v, float) and ".params." not in k  # corruption settings are not results
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
    out_dir, decision = Path(args.out or cfg.out_dir), None
    if args.data:  # the folder is the only split: every section runs on it, the decision is reused
        name = Path(args.data).resolve().name
        splits = {name: sorted(set(images) & set(masks))}
        out_dir = Path(args.out or Path(cfg.out_dir).parent / f"eval-{name}")
        cfg = replace(
            cfg,
            choose_on=name,
            negatives=replace(cfg.negatives, splits=(name,), report=name),
            robustness=replace(cfg.robustness, split=name),
        )
    else:
        splits = {name: read_csv_stems(csv_path) for name, csv_path in cfg.splits.items()}
    splits = {name: stems[: cfg.limit] if cfg.limit else stems for name, stems in splits.items()}
    for name, stems in splits.items():
        missing = [s for s in stems if s not in images or s not in masks]
        if missing or not stems:
            print(
                f"evaluate: split {name}: {len(missing)} stems without image or mask, e.g. {missing[:3]}",
                file=sys.stderr,
            )
            return 2
    named = [("choose_on", cfg.choose_on)]
    if cfg.negatives.enabled:
        named += [("negatives.splits", n) for n in cfg.negatives.splits]
        named += [("negatives.report", cfg.negatives.report)]
    if cfg.robustness.enabled:
        named += [("robustness.split", cfg.robustness.split)]
    for key, name in named:
        if name not in splits or (key == "negatives.report" and name not in cfg.negatives.splits):
            print(f"evaluate: {key}: {name!r} is not one of the splits evaluated here", file=sys.stderr)
            return 2

    model, ckpt = load_checkpoint(cfg.checkpoint)
    try:
        trained = checkpoint_threshold(ckpt)
    except ValueError as exc:
        print(f"evaluate: {cfg.checkpoint}: {exc}", file=sys.stderr)
        return 2
    if args.data:  # the main run's decision, or the checkpoint's threshold
        decision = decision_for_data(cfg, args.conf, trained)
    run_model = torch_runner(model, cfg.threads)
    size, mean, std = ckpt["model_config"]["input_size"], ckpt["mean"], ckpt["std"]

    def predict(rgb: np.ndarray) -> np.ndarray:
        return predict_probability(run_model, rgb, size, mean, std, cfg.tta)

    sha, dirty = git_state()
    meta = ckpt["metadata"]
    provenance = {
        "git_sha": sha,
        "git_dirty": dirty,
        "data_rev": data_revision(),
        "model_version": meta["model_version"],
        "model_git_sha": meta["git_sha"],
        "checkpoint": cfg.checkpoint,
        "run_id": meta["run_id"],
        "tta": cfg.tta,
    }
    # Counts are kept at every candidate threshold, so the choice needs no second pass.
    if decision:
        thresholds = [decision.threshold]
    else:
        thresholds = sorted({*cfg.threshold_grid, trained}) if cfg.threshold == "auto" else [trained]
    with_crops = set(cfg.negatives.splits) if cfg.negatives.enabled else set()
    scans = {}
    for name in sorted(splits, key=lambda n: n != cfg.choose_on):  # choose_on first
        crop_size = size if name in with_crops else None
        scans[name] = scan_split(name, splits[name], images, masks, predict, thresholds, cfg, crop_size)
    decision = decision or decide(cfg, scans[cfg.choose_on], thresholds, trained)
    k = thresholds.index(decision.threshold)
    save_decision(out_dir / "decision.json", decision)
    save_config(cfg, out_dir / "config.yaml")
    print(
        f"evaluate: threshold {decision.threshold}, min area {decision.min_area_fraction} "
        f"(chosen on {decision.chosen_on}) -> {out_dir}/decision.json"
    )

    results = {
        name: write_split(
            name, scans[name], k, decision, images, masks, predict, cfg, out_dir / name, provenance
        )
        for name in splits
    }
    extra = {"decision": asdict(decision)}
    if cfg.negatives.enabled:
        negative_scans = {n: scans[n] for n in cfg.negatives.splits}
        extra["negatives"] = write_negatives(
            negative_scans, k, decision, images, masks, predict, cfg, size, out_dir / "negatives"
        )
    if cfg.robustness.enabled:
        stems = splits[cfg.robustness.split][: cfg.robustness.limit or None]
        clean = scans[cfg.robustness.split].dice(k)[: len(stems)]
        extra["robustness"] = run_robustness(stems, clean, images, masks, predict, decision, cfg)
        write_json(out_dir / "robustness.json", extra["robustness"])
        (out_dir / "robustness.png").write_bytes(robustness_png(extra["robustness"]))
    page = render_index(results, meta, decision, extra.get("negatives"), extra.get("robustness"))
    (out_dir / "index.html").write_text(page)
    logged = "MLflow logging off"
    if cfg.log_to_mlflow:
        logged = log_to_run(meta["run_id"], {**results, **extra}, str(out_dir))
    line = ", ".join(
        f"{n}: {m['n_images']} images dice={m['dice_mean']:.4f} iou={m['iou_mean']:.4f}"
        for n, m in results.items()
    )
    print(f"evaluate: {line} -> {out_dir}/index.html ({logged})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
