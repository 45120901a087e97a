#!/usr/bin/env python3
"""Export models/best.pt to ONNX, check PyTorch/onnxruntime parity, and log ONNX + pyfunc models to MLflow.

Usage: bin/export.py --conf conf/export.yaml [--set log_to_mlflow=false ...]
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lib.cli import parser
from lib.config import ConfigError, load_config, save_config, to_dict
from lib.decision import Decision, load_decision
from lib.inference import torch_runner
from lib.io import decode_image, read_csv_stems, read_image, sha256_file, write_json
from lib.model import load_checkpoint
from lib.model_contract import write_model_json
from lib.onnx_export import check_onnx, export_onnx, model_metadata, parity
from lib.onnx_session import make_session, session_runner
from lib.preprocess import prepare_input
from lib.sources import private_stems, read_catalog


@dataclass(frozen=True)
class ExportConfig:
    checkpoint: str  # models/best.pt from bin/train.py
    out_dir: str  # model.onnx, model_dynamic.onnx, model.json, export_config.yaml
    parity_report: str  # reports/export/parity.json
    mlflow_report: str  # reports/export/mlflow.json: run id and model URIs
    catalog: str  # data/catalog.csv: the original images read for the parity check
    sources_summary: str  # data/sources.json: MLflow's input example is never one of your own images
    parity_split: str  # CSV of stems; its first `parity_images` are compared
    decision: str  # reports/eval/decision.json from bin/evaluate.py: threshold + image-level rule
    parity_images: int = 5  # images compared between PyTorch and onnxruntime
    tolerance: float = 1e-4  # maximum allowed post-sigmoid mean absolute difference
    opset: int = 20  # ONNX opset (18+)
    dynamic: bool = True  # also write model_dynamic.onnx with a dynamic batch axis
    threads: int = 2  # torch and onnxruntime intra-op threads
    log_to_mlflow: bool = True  # log ONNX + pyfunc models into the checkpoint's run (or a new one)
    experiment: str = "polyp-seg"  # new run here when the checkpoint's run is not in this store


def read_decision(path: str) -> Decision:
    """The operating point chosen on validation; ValueError naming the file when it is missing or bad."""
    try:
        decision = load_decision(path)
        bad = [k for k in ("threshold", "min_area_fraction") if not 0.0 <= getattr(decision, k) <= 1.0]
        if bad:  # NaN fails the comparison too
            raise ValueError(f"{' and '.join(bad)} must be in [0, 1]")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        why = {
            FileNotFoundError: "not found",
            KeyError: f"no key {exc}",
            TypeError: "not a JSON object of numbers",
        }.get(type(exc), str(exc))
        raise ValueError(
            f"cannot use the operating point {path} ({why}); run the evaluate stage first "
            "(make evaluate, or make smoke for conf/smoke), which chooses it on validation"
        ) from None
    return decision


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__.splitlines()[0], "conf/export.yaml").parse_args(argv)
    try:
        cfg = load_config(ExportConfig, args.conf, args.overrides)
        decision = read_decision(cfg.decision)
        stems = read_csv_stems(cfg.parity_split)[: cfg.parity_images]
        catalog = read_catalog(cfg.catalog)
        images = {s: read_image(catalog.images[s]) for s in stems}
        private = private_stems(catalog, cfg.sources_summary)  # read once, not once per stem
        public = [s for s in stems if s not in private]
    except (ConfigError, OSError, ValueError) as exc:
        print(f"export: {exc}", file=sys.stderr)
        return 2
    model, ckpt = load_checkpoint(cfg.checkpoint)
    size, mean, std = ckpt["model_config"]["input_size"], ckpt["mean"], ckpt["std"]
    out = Path(cfg.out_dir)
    paths = {"static": out / "model.onnx"} | ({"dynamic": out / "model_dynamic.onnx"} if cfg.dynamic else {})
    for kind, path in paths.items():
        export_onnx(model, path, size, cfg.opset, dynamic_batch=kind == "dynamic")
    checks = {kind: check_onnx(path) for kind, path in paths.items()}

    reference = torch_runner(model, cfg.threads)
    results = {}
    for kind, path in paths.items():
        candidate = session_runner(make_session(path, cfg.threads))
        results[kind] = parity(reference, candidate, images, size, mean, std, decision.threshold)
        results[kind]["passed"] = results[kind]["mean_abs_diff"] < cfg.tolerance
    passed = all(r["passed"] for r in results.values())
    meta = model_metadata(ckpt, checks["static"]["opset"], decision, sha256_file(paths["static"]))
    write_model_json(out / "model.json", meta)
    save_config(cfg, out / "export_config.yaml")
    static = results["static"]
    write_json(
        cfg.parity_report,
        {
            "passed": passed,
            "tolerance": cfg.tolerance,
            "mean_abs_diff": static["mean_abs_diff"],
            "max_abs_diff": static["max_abs_diff"],
            "n_images": len(images),
            "opset": meta.opset,
            "onnx": checks,
            "parity": results,
            "model_version": meta.model_version,
            "sha256": meta.sha256,
        },
    )
    line = (
        f"parity mean|diff|={static['mean_abs_diff']:.2e} max={static['max_abs_diff']:.2e} "
        f"on {len(images)} images (tolerance {cfg.tolerance:g})"
    )
    if not passed:
        print(f"export: FAILED {line}; see {cfg.parity_report}", file=sys.stderr)
        return 1

    logged, record = "MLflow logging off", {"logged": False}
    if cfg.log_to_mlflow:
        from lib.pyfunc_model import small_jpeg
        from lib.registry import log_exported_models, run_for_checkpoint
        from lib.tracking import setup_mlflow

        mlflow = setup_mlflow(cfg.experiment)
        run_id, created = run_for_checkpoint(mlflow, cfg.experiment, ckpt["metadata"])
        # The logged example is a public frame, or a plain grey one: never an image of your own sources.
        example = small_jpeg(images[public[0]] if public else np.full((288, 352, 3), 128, np.uint8))
        x, _ = prepare_input(decode_image(example), size, mean, std)
        uris = log_exported_models(
            mlflow, run_id, paths["static"], out / "model.json", example, x, checkpoint=Path(cfg.checkpoint)
        )
        record = {"logged": True, **uris, "created_run": created, "tracking_uri": mlflow.get_tracking_uri()}
        logged = f"logged to {'new ' if created else ''}run {run_id}"
    write_json(cfg.mlflow_report, {**record, "experiment": cfg.experiment, "config": to_dict(cfg)})
    written = ", ".join(str(p) for p in paths.values())
    point = f"threshold {decision.threshold:g} min_area {decision.min_area_fraction:g} from {cfg.decision}"
    print(f"export: {written} (opset {meta.opset}), {point}, {line}, {logged}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
