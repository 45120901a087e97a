"""Evaluating a checkpoint on labelled splits: one prediction pass per split (`scan_split`), the operating
point chosen from it (`decide`), and the reports written at that point (per split, negatives, robustness).

`cfg` below is bin/evaluate.py's EvaluateConfig: the settings stay in the script, as in every stage.
"""

from __future__ import annotations

import csv
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from lib.calibration import calibration_bins, reliability
from lib.corruptions import SEVERITIES, corrupt
from lib.decision import (
    Decision,
    choose_min_area,
    choose_point,
    image_level,
    load_decision,
    masks_at_points,
    min_area_candidates,
    points_within_cap,
)
from lib.io import read_image, read_mask, write_image, write_json
from lib.metrics import confusion, count_metrics, pr_curve, summarise, threshold_histograms
from lib.negatives import crop_negatives, false_alarm_rate, false_alarm_summary
from lib.overlay import caption, draw_overlay, montage
from lib.plots import dice_histogram_png, pr_curve_png, reliability_png


@dataclass
class Scan:
    """What one pass over a split leaves: per-image counts at each candidate operating point
    (threshold, min_component_ratio: lib.decision.operating_points), and split sums."""

    stems: list[str]
    counts: list[np.ndarray] = field(default_factory=list)  # per image (P, 4): tp, fp, fn, tn
    shapes: list[tuple[int, int]] = field(default_factory=list)  # per image (H, W)
    crops: list[tuple[str, int]] = field(default_factory=list)  # (stem, index) of each negative crop
    crop_areas: list[np.ndarray] = field(default_factory=list)  # per crop (P,): predicted area share
    pr: tuple[np.ndarray, np.ndarray] | None = None  # summed threshold_histograms
    calibration: np.ndarray | None = None  # summed calibration_bins

    def areas(self, k: int) -> np.ndarray:
        """Predicted polyp share of each image at operating point k."""
        return np.array([(c[k, 0] + c[k, 1]) / c[k].sum() for c in self.counts])

    def negative_areas(self, k: int) -> np.ndarray:
        """Predicted share of every polyp-free picture: images with an empty mask, then the crops."""
        empty = np.array([c[0, 0] + c[0, 2] == 0 for c in self.counts], bool)
        return np.concatenate([self.areas(k)[empty], [a[k] for a in self.crop_areas]])

    def crop_fp_rates(self, fp_area: float) -> np.ndarray | None:
        """Share of the polyp-free crops with more than `fp_area` predicted, at every point: `(P,)`,
        what negatives/metrics.json reports as `fp_image_rate`; None without crops."""
        return false_alarm_rate(np.stack(self.crop_areas), fp_area) if self.crop_areas else None

    def positive_areas(self, k: int) -> np.ndarray:
        return self.areas(k)[[c[0, 0] + c[0, 2] > 0 for c in self.counts]]

    def dice(self, k: int | None = None) -> np.ndarray:
        """Per-image Dice at operating point k, or `(N, P)` at every point."""
        dice = np.array([[count_metrics(*row)["dice"] for row in c] for c in self.counts])
        return dice if k is None else dice[:, k]


def point_confusions(prob: np.ndarray, target: np.ndarray, thresholds, ratios) -> np.ndarray:
    """(tp, fp, fn, tn) of one image at each of `operating_points(thresholds, ratios)`: `(P, 4) int64`,
    each row exactly what `confusion(binary_mask(prob, t, r), target)` counts."""
    return np.array([confusion(m, target) for m in masks_at_points(prob, thresholds, ratios)], np.int64)


def scan_split(name, stems, images, masks, predict, grid, cfg, crop_size: int | None) -> Scan:
    """Predict every image once (and its negative crops when `crop_size` is given); `grid` is the
    (thresholds, ratios) pair whose operating points are counted."""
    scan, start = Scan(stems), time.time()
    pos, neg = np.zeros(cfg.pr_bins, np.int64), np.zeros(cfg.pr_bins, np.int64)
    calibration = np.zeros((cfg.calibration_bins, 3))
    for i, stem in enumerate(stems, 1):
        rgb, gt = read_image(images[stem]), read_mask(masks[stem])
        prob = predict(rgb)
        scan.counts.append(point_confusions(prob, gt, *grid))
        scan.shapes.append(gt.shape)
        p, n = threshold_histograms(prob, gt, cfg.pr_bins)
        pos, neg = pos + p, neg + n
        calibration += calibration_bins(prob, gt, cfg.calibration_bins)
        crops = crop_negatives(rgb, gt, cfg.negatives.crops, cfg.seed, stem, crop_size) if crop_size else []
        for j, crop in enumerate(crops):
            crop_prob = predict(crop)
            scan.crops.append((stem, j))
            scan.crop_areas.append(np.array([np.mean(m) for m in masks_at_points(crop_prob, *grid)]))
        if i % 25 == 0 or i == len(stems):
            print(
                f"evaluate[{name}]: {i}/{len(stems)} images, {len(scan.crops)} negative crops, "
                f"{time.time() - start:.0f}s",
                flush=True,
            )
    scan.pr, scan.calibration = (pos, neg), calibration
    return scan


def decide(cfg, scan: Scan, points: list[tuple[float, float]], trained: float) -> Decision:
    """Threshold and small-component filter (best mean Dice over `points`, ties to the checkpoint's
    threshold `trained`), then min area (best balanced accuracy) on the choose_on scan; a min area given
    in the config is kept. `points` are the scan's (threshold, min_component_ratio) candidates.

    With `negatives.max_fp_image_rate` set and crops in the scan, only points whose false-alarm rate on
    the crops is within it compete: a lower threshold often buys a little Dice on polyp frames with
    many more alarms on polyp-free tissue. When no point is within it, the least alarming ones compete
    and the decision says so."""
    keep = [i for i, (t, _) in enumerate(points) if cfg.threshold == "auto" or t == trained]
    cap = cfg.negatives.max_fp_image_rate if cfg.negatives.enabled else None
    rates = scan.crop_fp_rates(cfg.negatives.fp_area)
    capped = ""
    if cap is not None and rates is not None:
        keep, met = points_within_cap(rates, keep, cap)
        capped = f", false alarms <= {cap:g}" if met else f", false-alarm cap {cap:g} not met"
        if not met:
            print(
                f"evaluate: no operating point has at most {cap:g} false alarms on {cfg.choose_on}'s "
                f"{len(scan.crop_areas)} crops; choosing among those with the fewest ({rates[keep[0]]:.3f})",
                file=sys.stderr,
            )
    threshold, ratio = choose_point(scan.dice()[:, keep], [points[i] for i in keep], trained)
    k = points.index((threshold, ratio))  # "checkpoint" above: only the filter is still chosen
    where = f"{cfg.choose_on} ({len(scan.stems)} images"
    if cfg.min_area_fraction != "auto":
        return Decision(
            threshold, cfg.min_area_fraction, f"{where}; min area from the config{capped})", ratio
        )
    negatives = scan.negative_areas(k)
    if negatives.size == 0:  # nothing polyp-free to weigh false alarms against: any pixel counts
        return Decision(threshold, 0.0, f"{where}; no negatives, so min area 0)", ratio)
    min_area = choose_min_area(scan.positive_areas(k), negatives, min_area_candidates())
    return Decision(threshold, min_area, f"{where} + {len(scan.crop_areas)} negative crops{capped})", ratio)


def write_operating_points(
    path: Path, points: list[tuple[float, float]], scan: Scan, decision: Decision, fp_area: float
) -> None:
    """The choice laid open: mean Dice of the choose_on scan at every candidate point and the share of its
    crops with more than `fp_area` predicted, the chosen point marked."""
    means = scan.dice().mean(axis=0)
    rates = scan.crop_fp_rates(fp_area)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["threshold", "min_component_ratio", "dice_mean", "crop_fp_image_rate", "chosen"])
        for p, ((t, r), mean) in enumerate(zip(points, means, strict=True)):
            chosen = (t, r) == (decision.threshold, decision.min_component_ratio)
            rate = "" if rates is None else round(float(rates[p]), 6)  # blank: no crops in the scan
            writer.writerow([t, r, round(float(mean), 6), rate, int(chosen)])


def decision_for_data(cfg, conf: str, trained: float) -> Decision:
    """--data has no validation split: reuse the main run's decision.json, else the checkpoint's
    threshold `trained` and the config's min area and component filter (0, off, for `auto`)."""
    path = Path(cfg.out_dir) / "decision.json"
    if path.exists():
        decision = load_decision(path)
        return replace(decision, chosen_on=f"{decision.chosen_on}, via {path}")
    min_area = 0.0 if cfg.min_area_fraction == "auto" else cfg.min_area_fraction
    ratio = 0.0 if cfg.min_component_ratio == "auto" else cfg.min_component_ratio
    return Decision(trained, min_area, f"checkpoint threshold and {conf}, as {path} does not exist", ratio)


def write_split(
    name, scan: Scan, k: int, decision, images, masks, predict, cfg, out: Path, provenance, sources=None
):
    """metrics.json, per_image.csv, plots and overlays of one split at the chosen operating point.

    `sources` ({stem: source name}): when the split mixes sources, metrics.json adds `by_source`, the
    same summary per source, so one centre's score is not hidden in the union's mean.
    """
    rows = [
        {"stem": s, **count_metrics(*c[k]), "height": h, "width": w, "area_fraction": float(a)}
        for s, c, (h, w), a in zip(scan.stems, scan.counts, scan.shapes, scan.areas(k))
    ]
    curve, calibration = pr_curve(*scan.pr), reliability(scan.calibration)
    detection = image_level(scan.positive_areas(k), scan.negative_areas(k), decision.min_area_fraction)
    metrics = {
        **summarise(rows),
        "threshold": decision.threshold,
        "min_component_ratio": decision.min_component_ratio,
        "average_precision": curve["average_precision"],
        "ece": calibration["ece"],
        "calibration_bins": cfg.calibration_bins,
        "image_level": detection,
        **provenance,
    }
    names = sorted({sources[r["stem"]] for r in rows}) if sources else []
    if len(names) > 1:
        metrics["by_source"] = {n: summarise([r for r in rows if sources[r["stem"]] == n]) for n in names}
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "metrics.json", metrics)
    with open(out / "per_image.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with open(out / "pr_curve.csv", "w", newline="") as fh:  # the data behind pr_curve.png, for dvc plots
        writer = csv.writer(fh)
        writer.writerow(["threshold", "precision", "recall", "dice"])
        writer.writerows(
            zip(*(np.round(curve[k], 6).tolist() for k in ("thresholds", "precision", "recall", "dice")))
        )
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
            pred = decision.mask(predict(rgb))
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
        pred = decision.mask(predict(crop))
        tiles.append(caption(draw_overlay(crop, pred), f"{stem[:12]} area {areas[j]:.3f}"))
    if tiles:  # frames too small or too dark for any crop leave none
        write_image(out / "montage.png", montage(tiles, columns=4))
    metrics = {
        **splits[report],
        "split": report,
        "threshold": decision.threshold,
        "min_component_ratio": decision.min_component_ratio,
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
            dice[(c, s)].append(count_metrics(*confusion(decision.mask(predict(image)), target))["dice"])
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
        "min_component_ratio": decision.min_component_ratio,
        "seed": cfg.seed,
        "dice_clean": clean,
        "mean_dice_drop": float(np.mean(list(drops.values()))),
        "worst": max(drops, key=drops.get),
        "corruptions": table,
    }
