#!/usr/bin/env python3
"""Evaluate a checkpoint: choose the operating point on validation, then report every split once.

Usage: bin/evaluate.py --conf conf/evaluate.yaml [--data DIR [--out DIR] [--log-images]]

One pass over each split (lib/evaluation.py) predicts every image once and keeps, per image, the
confusion counts at each candidate operating point (pixel threshold x small-component filter), plus
PR and calibration sums; polyp-free crops of the same frames (lib/negatives.py) are predicted in the
same pass. The threshold and the filter (best mean Dice, together, among the points whose false-alarm
rate on the crops is within negatives.max_fp_image_rate) and the image-level minimum area
(best balanced accuracy on positives + negatives) are chosen on the `choose_on` split and saved to
<out_dir>/decision.json (every point tried, with its mean Dice and crop false-alarm rate, to
operating_points.csv); every split is then reported at them, and the robustness split is re-predicted
under each corruption of lib/corruptions.py. The report's quality trend (lib/trend.py, trend.png) shows
every registered version's test Dice/IoU beside this evaluation's.

The threshold search starts from the checkpoint's threshold (conf/train.yaml's, stored by
bin/train.py): it joins the grid and wins ties; `threshold: checkpoint` keeps it without a search.

With --data DIR (another centre's images/ + masks/, any format lib/io.py reads) there is no
validation split: the decision is read from <out_dir>/decision.json of the main run when it exists,
else the checkpoint's threshold and the config's min area and filter (0 for `auto`), and the line printed
says which.
Negatives, calibration and robustness are computed on DIR itself. The report goes to reports/eval-<name>
(never the pipeline's reports/eval), and MLflow gets a run of its own (`evaluate <name>` in
lib.tracking.OWN_DATA_EXPERIMENT, tagged model_version and data_source=<name>; never the training run)
with the metrics and the report's tables only: no image, overlay, montage, plot or HTML page leaves the
machine unless asked (log_images: true or --log-images; lib.tracking.is_image_artifact says what counts).
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np

from lib.cli import parser, script
from lib.config import load_config, save_config
from lib.decision import checkpoint_threshold, operating_points, save_decision
from lib.evaluation import (
    decide,
    decision_for_data,
    run_robustness,
    scan_split,
    write_negatives,
    write_operating_points,
    write_split,
)
from lib.inference import predict_probability, torch_runner
from lib.io import read_csv_stems, write_json
from lib.model import load_checkpoint
from lib.negatives import CropSpec
from lib.plots import robustness_png, trend_png
from lib.report import render_index, trend_section
from lib.sources import folder_catalog, folder_revision, private_stems, read_catalog
from lib.tracking import (
    data_revision,
    finish_own_data_run,
    git_state,
    log_to_run,
    own_data_run,
    registered_model_name,
)
from lib.trend import TrendConfig, candidate_point, quality_trend


@dataclass(frozen=True)
class NegativesConfig:
    enabled: bool = True  # polyp-free crops of the split's frames, predicted like any image
    crops: CropSpec = CropSpec()  # sizes and placement, lib/negatives.py
    splits: tuple[str, ...] = ("val", "test")  # splits whose frames give crops
    report: str = "test"  # its crops fill the top-level keys of negatives/metrics.json
    fp_area: float = 0.01  # a crop with more predicted polyp area than this share is a false alarm
    # operating points with a larger share of false alarms on choose_on's crops are not chosen; None = no cap
    max_fp_image_rate: float | None = 0.05
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
    catalog: str  # data/catalog.csv: every stem's original image and mask (metrics at full size)
    sources_summary: str  # data/sources.json: which sources are your own (their pictures stay local)
    splits: dict[str, str]  # split name -> CSV of stems
    out_dir: str  # reports folder
    trend: TrendConfig  # registered versions + this evaluation -> trend.png and the report's section
    threshold_grid: tuple[float, ...]  # pixel thresholds threshold: auto tries (the YAML holds them)
    component_ratio_grid: tuple[float, ...]  # min_component_ratio values auto tries (lib/decision.py)
    limit: int | None = None  # first N stems per split
    choose_on: str = "val"  # split on which threshold and min area are chosen
    threshold: Literal["auto", "checkpoint"] = "auto"  # auto = best on choose_on; checkpoint = as trained
    min_area_fraction: float | Literal["auto"] = "auto"  # image-level rule, share of the image
    # drop mask regions under this share of the largest; auto = chosen with the threshold on choose_on
    min_component_ratio: float | Literal["auto"] = "auto"
    calibration_bins: int = 15  # equal-width probability bins for the ECE
    overlays_per_kind: int = 4  # random, best and worst overlays each
    pr_bins: int = 100  # PR-curve thresholds
    seed: int = 42  # random overlays, crops, corruptions
    threads: int = 2  # torch threads
    tta: Literal["none", "hflip", "hvflip"] = "none"  # flip test-time augmentation (1, 2 or 4 passes)
    log_to_mlflow: bool = True  # log to the checkpoint's training run (with --data: a run of its own)
    log_images: bool = False  # --data only: also log its images, overlays, plots and HTML (--log-images)
    negatives: NegativesConfig = NegativesConfig()
    robustness: RobustnessConfig = RobustnessConfig()


def log_own_data(data: str, meta: dict, results: dict, out_dir: Path, log_images: bool) -> str:
    """evaluate --data's MLflow run: `evaluate <folder name>`, never the checkpoint's training run."""
    try:
        run_id = own_data_run("evaluate", data, meta["model_version"], {"model_run_id": str(meta["run_id"])})
        return finish_own_data_run(run_id, results, out_dir, log_images)
    except Exception as exc:  # the report stands without MLflow: say so, don't fail
        return f"not logged to MLflow ({type(exc).__name__}: {str(exc).strip()[:200]})"


@script("evaluate")
def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0], "conf/evaluate.yaml")
    p.add_argument("--data", help="evaluate every image/mask pair of this folder instead of the splits")
    p.add_argument("--out", help="reports folder (default: out_dir; with --data, reports/eval-<name>)")
    p.add_argument(
        "--log-images",
        action="store_true",
        help="with --data: also log the folder's overlays, plots and HTML to MLflow (log_images: true)",
    )
    args = p.parse_args(argv)
    cfg = load_config(EvaluateConfig, args.conf, args.overrides)
    ratios = [
        *cfg.component_ratio_grid,
        *([] if cfg.min_component_ratio == "auto" else [cfg.min_component_ratio]),
    ]
    if not cfg.component_ratio_grid or not all(0.0 <= r <= 1.0 for r in ratios):
        print(f"evaluate: {args.conf}: component ratios must be in [0, 1], got {ratios}", file=sys.stderr)
        return 2
    cap = cfg.negatives.max_fp_image_rate
    if cap is not None and not 0.0 <= cap <= 1.0:
        print(
            f"evaluate: {args.conf}: negatives.max_fp_image_rate must be in [0, 1] or null, got {cap}",
            file=sys.stderr,
        )
        return 2
    # Read now, not after an hour of prediction: a broken register config fails before any work.
    trend_model = registered_model_name(cfg.trend.register_conf) if cfg.trend.enabled else None
    catalog = folder_catalog(args.data)[0] if args.data else read_catalog(cfg.catalog)
    images, masks = catalog.images, catalog.masks
    sources = {stem: entry.source for stem, entry in catalog.entries.items()}
    out_dir, decision = Path(args.out or cfg.out_dir), None
    if args.data:  # the folder is the only split: every section runs on it, the decision is reused
        name = Path(args.data).resolve().name
        splits = {name: list(images)}
        out_dir = Path(args.out or Path(cfg.out_dir).parent / f"eval-{name}")
        cfg = replace(
            cfg,
            choose_on=name,
            negatives=replace(cfg.negatives, splits=(name,), report=name),
            robustness=replace(cfg.robustness, split=name),
        )
    else:
        splits = {name: read_csv_stems(csv_path) for name, csv_path in cfg.splits.items()}
        # A split no source fills (external.csv without an external source) is left out, saying so.
        for name in [n for n, stems in splits.items() if not stems and n != cfg.choose_on]:
            print(f"evaluate: split {name} ({cfg.splits[name]}) is empty: not evaluated")
            del splits[name]
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
        "data_rev": folder_revision(args.data) if args.data else data_revision(),
        "model_version": meta["model_version"],
        "model_git_sha": meta["git_sha"],
        "checkpoint": cfg.checkpoint,
        "run_id": meta["run_id"],
        "tta": cfg.tta,
    }
    # Counts are kept at every candidate operating point, so the choice needs no second pass.
    if decision:
        grid = ([decision.threshold], [decision.min_component_ratio])
    else:
        thresholds = sorted({*cfg.threshold_grid, trained}) if cfg.threshold == "auto" else [trained]
        auto_ratio = cfg.min_component_ratio == "auto"
        grid = (
            thresholds,
            sorted(set(cfg.component_ratio_grid)) if auto_ratio else [cfg.min_component_ratio],
        )
    points = operating_points(*grid)
    with_crops = set(cfg.negatives.splits) if cfg.negatives.enabled else set()
    scans = {}
    for name in sorted(splits, key=lambda n: n != cfg.choose_on):  # choose_on first
        crop_size = size if name in with_crops else None
        scans[name] = scan_split(name, splits[name], images, masks, predict, grid, cfg, crop_size)
    decision = decision or decide(cfg, scans[cfg.choose_on], points, trained)
    k = points.index((decision.threshold, decision.min_component_ratio))
    save_decision(out_dir / "decision.json", decision)
    write_operating_points(
        out_dir / "operating_points.csv", points, scans[cfg.choose_on], decision, cfg.negatives.fp_area
    )
    save_config(cfg, out_dir / "config.yaml")
    print(
        f"evaluate: threshold {decision.threshold}, min component ratio {decision.min_component_ratio}, "
        f"min area {decision.min_area_fraction} "
        f"(chosen on {decision.chosen_on}) -> {out_dir}/decision.json"
    )

    results = {
        name: write_split(
            name, scans[name], k, decision, images, masks, predict, cfg, out_dir / name, provenance, sources
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
    # The registry as it was before this evaluation is logged; trend.png is written even when the trend
    # is off or the store is missing (a dvc.yaml plot), and then says why it is empty.
    trend = quality_trend(trend_model, cfg.trend, candidate_point(results, provenance, cfg.trend))
    (out_dir / "trend.png").write_bytes(trend_png(trend))
    section = trend_section(trend) if cfg.trend.enabled else None
    page = render_index(results, meta, decision, extra.get("negatives"), extra.get("robustness"), section)
    (out_dir / "index.html").write_text(page)
    logged = "MLflow logging off"
    if cfg.log_to_mlflow and args.data:  # someone's own images: a run of its own, tables only unless asked
        images = cfg.log_images or args.log_images
        logged = log_own_data(args.data, meta, {**results, **extra}, out_dir, images)
    elif cfg.log_to_mlflow:  # the pipeline's splits: the training run; pictures only if all are public
        evaluated = {s for stems in splits.values() for s in stems}
        own = evaluated & private_stems(catalog, cfg.sources_summary)
        images = cfg.log_images or args.log_images or not own
        logged = log_to_run(meta["run_id"], {**results, **extra}, str(out_dir), log_images=images)
        logged += "" if images else f" (tables only: {len(own)} images of your own sources)"
    line = ", ".join(
        f"{n}: {m['n_images']} images dice={m['dice_mean']:.4f} iou={m['iou_mean']:.4f}"
        for n, m in results.items()
    )
    print(f"evaluate: {line} -> {out_dir}/index.html ({logged})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
