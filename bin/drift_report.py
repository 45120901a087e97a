#!/usr/bin/env python3
"""Compare current images (the server's shadow directory, or any folder) with the validation reference.

Writes OUT/index.html (Evidently's report), OUT/drift.json (dataset drift, per-feature drift scores,
the model version) and OUT/features.csv (the current images' features). OUT is the conf's out_dir
(reports/drift) for the shadow window, reports/drift-<folder name> for --current DIR: a report on other
images never replaces the pipeline's. MLflow: the shadow window's drift.json goes to the run of the model
version that produced the predictions; a given folder's drift.json, features.csv and drift metrics go to a
run of its own (`drift <folder name>`, tagged model_version and data_source; lib/drift_tracking.py
own_run). index.html, like any picture, is logged only when asked (log_images: true or --log-images).
Exit 0; with --fail-on-drift, 3 when the dataset drifted; 2 on bad input (too few images, no reference, ...).

Usage: bin/drift_report.py --conf conf/drift_report.yaml [--current DIR] [--out DIR] [--fail-on-drift]
       [--log-images]
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from lib.cli import parser, script
from lib.config import ConfigError, load_config, to_dict
from lib.drift import (
    DriftInputError,
    check_reference,
    current_images,
    feature_table,
    load_model,
    run_evidently,
    served_share_difference,
    served_versions,
    summarise,
)
from lib.drift_tracking import log_to_model_run, model_mismatch, model_run, own_run
from lib.io import write_json, write_text
from lib.model_contract import ModelContractError
from lib.tracking import finish_own_data_run

EXIT_DRIFT = 3  # --fail-on-drift: a scheduled job or CI step fails on this


@dataclass(frozen=True)
class DriftReportConfig:
    reference: str  # reports/drift/reference.csv
    model: str  # models/model.onnx, with model.json beside it
    shadow_dir: str  # current images when --current is not given
    out_dir: str  # index.html, drift.json, features.csv
    min_images: int  # fewer decodable current images is an error
    method: str  # Evidently stat test per column (ks, wasserstein, psi, ...)
    threshold: float  # that test's drift threshold
    drift_share: float  # share of drifted columns that makes the dataset drift
    threads: int  # onnxruntime intra-op threads
    log_to_mlflow: bool  # attach the report to the model version's run (--current DIR: to a run of its own)
    log_images: bool  # also log index.html (and any picture) to MLflow; --log-images sets it


def parse_args(argv: list[str] | None):
    p = parser(__doc__.splitlines()[0], "conf/drift_report.yaml")
    p.add_argument(
        "--current", metavar="DIR", help="folder of JPEG/PNG images (default: the conf's shadow_dir)"
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        help="output folder (default: the conf's out_dir; with --current, drift-<folder name> beside it)",
    )
    p.add_argument(
        "--log-images", action="store_true", help="also log index.html to MLflow (log_images: true)"
    )
    p.add_argument("--fail-on-drift", action="store_true", help=f"exit {EXIT_DRIFT} when the dataset drifted")
    return p.parse_args(argv)


def enough(n: int, cfg: DriftReportConfig, source: str) -> None:
    if n < cfg.min_images:
        raise DriftInputError(
            f"{source}: {n} usable current image(s); at least {cfg.min_images} are needed for a "
            "meaningful drift test (min_images in the conf)"
        )


@script("drift_report", errors=(ModelContractError, DriftInputError))
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = load_config(DriftReportConfig, args.conf, args.overrides)
    if cfg.min_images < 2 or not 0 < cfg.drift_share <= 1:
        raise ConfigError(f"{args.conf}: min_images must be >= 2 and drift_share in (0, 1]")
    source = args.current or cfg.shadow_dir
    if not Path(source).is_dir():
        hint = "" if args.current else " (serve with POLYPSEG_SHADOW_DIR=<dir>, or pass --current DIR)"
        raise FileNotFoundError(f"no current images: {source} is not a directory{hint}")
    found = current_images(source)
    enough(len(found.images), cfg, source)
    if not Path(cfg.reference).is_file():
        raise FileNotFoundError(f"reference not found: {cfg.reference} (make drift_reference writes it)")

    model = load_model(cfg.model, cfg.threads)
    reference = pd.read_csv(cfg.reference)
    check_reference(reference, model, cfg.reference)
    current, skipped = feature_table(found.images, model)
    enough(len(current), cfg, source)
    version, warnings = served_versions(found, model)
    run = (
        model_run(version, model) if cfg.log_to_mlflow else {"run_id": None, "found": False, "reason": "off"}
    )
    mismatch = model_mismatch(version, run, model)
    warnings += [mismatch] if mismatch else []
    warnings += [f"{len(skipped)} current image(s) could not be decoded and were left out"] if skipped else []

    evaluation = run_evidently(reference, current, cfg.method, cfg.threshold, cfg.drift_share)
    summary = summarise(evaluation.dict(), cfg.drift_share)
    # A given folder's report goes beside the pipeline's (reports/drift-<name>), never over it.
    own_folder = Path(cfg.out_dir).parent / f"drift-{Path(source).resolve().name}"
    out = Path(args.out or (own_folder if args.current else cfg.out_dir))
    log_images = cfg.log_images or args.log_images
    out.mkdir(parents=True, exist_ok=True)
    evaluation.save_html(str(out / "index.html"))
    write_text(out / "features.csv", current.to_csv(index=False))
    if args.current and cfg.log_to_mlflow:  # someone's own images: a run of its own, never the model's
        run = own_run(source, version, run)
    artifact_path = "drift_report/" + time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    report = {
        "dataset_drift": summary.pop("dataset_drift"),
        "drifted_share": summary.pop("drifted_share"),
        "drifted_features": [name for name, f in summary["features"].items() if f["drifted"]],
        "n_current": len(current),
        "n_reference": len(reference),
        "model_version": version,
        **summary,
        "current": {
            "source": found.source,
            "path": str(source),
            "skipped": skipped,
            "without_input": found.without_input,
        },
        "model": {"path": model.path, "model_version": model.meta.model_version, "sha256": model.sha256},
        "served_share_max_abs_diff": served_share_difference(found, current, model.meta.threshold),
        "mlflow": {
            **run,
            "logged": run["found"],
            "artifact_path": (("" if args.current else artifact_path) if run["found"] else None),
            "images_logged": log_images,
        },
        "warnings": warnings,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": to_dict(cfg),
    }
    write_json(out / "drift.json", report)
    if run["found"]:
        try:
            if args.current:  # drift.json, features.csv and the drift metrics; index.html only if asked
                scores = {n: {"drift_score": f["drift_score"]} for n, f in summary["features"].items()}
                metrics = {
                    "dataset_drift": float(report["dataset_drift"]),
                    "drifted_share": float(report["drifted_share"]),
                    "n_current": float(len(current)),
                    "features": scores,
                }
                files = [out / "index.html", out / "drift.json", out / "features.csv"]
                finish_own_data_run(run["run_id"], {"drift": metrics}, out, log_images, files=files)
            else:
                files = [out / "index.html", out / "drift.json"]
                log_to_model_run(run["run_id"], files, artifact_path, log_images)
        except Exception as err:  # the report stands without MLflow; say so in drift.json
            report["mlflow"].update(logged=False, artifact_path=None, reason=f"logging failed: {err}"[:300])
            write_json(out / "drift.json", report)
    mlflow_note = (
        f"logged to run {run['run_id']}"
        if report["mlflow"]["logged"]
        else f"not logged ({report['mlflow']['reason']})"
    )
    for warning in warnings:
        print(f"drift_report: warning: {warning}", file=sys.stderr)
    drifted = report["drifted_features"]
    print(
        f"drift_report: {len(current)} current vs {len(reference)} reference images, model {version}: "
        f"dataset drift {report['dataset_drift']} ({len(drifted)}/{len(summary['features'])} features "
        f"drifted: {', '.join(drifted) or 'none'}); MLflow: {mlflow_note} -> {out}"
    )
    return EXIT_DRIFT if args.fail_on_drift and report["dataset_drift"] else 0


if __name__ == "__main__":
    sys.exit(main())
