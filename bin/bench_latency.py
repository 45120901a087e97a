#!/usr/bin/env python3
"""Single-image CPU latency of the ONNX model (onnxruntime) vs PyTorch eager, with optional INT8 quantization.

Usage: bin/bench_latency.py --conf conf/bench_latency.yaml [--set quantize.enabled=false ...]
"""

from __future__ import annotations

import os
import platform
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import onnxruntime

from lib.cli import parser
from lib.config import ConfigError, load_config, to_dict
from lib.inference import predict_probability, torch_runner
from lib.io import read_csv_stems, read_image, read_mask, sha256_file, write_json
from lib.metrics import image_metrics
from lib.model_contract import ModelContractError, ModelMeta, read_model_json, write_model_json
from lib.onnx_session import make_session, session_runner
from lib.preprocess import prepare_input


@dataclass(frozen=True)
class Quantize:
    enabled: bool = True  # also build and measure an INT8 model
    calibration_split: str = "data/splits/train.csv"  # calibration images come from here
    calibration_images: int = 32  # first N stems
    eval_split: str = "data/splits/val.csv"  # Dice fp32 vs int8 here: a decision, so validation
    eval_images: int | None = 50  # first N stems (None = whole split)
    max_dice_loss: float = 0.005  # INT8 is adopted only if it loses less Dice than this
    format: Literal["QOperator", "QDQ"] = "QOperator"  # quantized node style
    per_channel: bool = True  # per-channel weight scales
    out_dir: str = "models/int8"  # model.onnx + model.json of the INT8 variant


@dataclass(frozen=True)
class BenchConfig:
    model: str  # models/model.onnx, with model.json beside it
    checkpoint: str  # models/best.pt, for the PyTorch eager comparison (empty = skip)
    images_dir: str  # originals
    masks_dir: str  # originals' masks (INT8 Dice check)
    sample_split: str  # its first stem is the image timed end to end
    out: str  # reports/bench/latency.json
    runs: int = 200  # timed runs per measurement
    warmup: int = 20  # untimed runs first
    threads: tuple[int, ...] = (1, 2)  # intra-op thread counts measured
    gate_threads: int = 1  # the setting bin/gates.py judges: one serving worker
    spinning: bool = False  # onnxruntime busy-wait; off as in serving
    quantize: Quantize = field(default_factory=Quantize)


def timings(fn, runs: int, warmup: int) -> dict:
    """p50/p95/p99/mean/min in milliseconds of `fn()` over `runs` calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    ms = np.empty(runs)
    for i in range(runs):
        t0 = time.perf_counter()
        fn()
        ms[i] = (time.perf_counter() - t0) * 1e3
    p50, p95, p99 = (float(v) for v in np.percentile(ms, [50, 95, 99]))
    return {
        "p50_ms": p50,
        "p95_ms": p95,
        "p99_ms": p99,
        "mean_ms": float(ms.mean()),
        "min_ms": float(ms.min()),
        "runs": runs,
    }


def measure(run_model, rgb, meta: ModelMeta, cfg: BenchConfig) -> dict:
    """Inference alone on a prepared input, and the whole path (preprocess to thresholded mask)."""
    size, mean, std = meta.input_size, meta.mean, meta.std
    x, _ = prepare_input(rgb, size, mean, std)

    def whole_path():
        return predict_probability(run_model, rgb, size, mean, std) >= meta.threshold

    return {
        "inference": timings(lambda: run_model(x), cfg.runs, cfg.warmup),
        "end_to_end": timings(whole_path, cfg.runs, cfg.warmup),
    }


def onnx_runner(path, threads: int, meta: ModelMeta, spinning: bool = False):
    return session_runner(make_session(path, threads, spinning), meta.input_name, meta.output_name)


def mean_dice(run_model, stems: list[str], cfg: BenchConfig, meta: ModelMeta) -> float:
    """Mean per-image Dice at the original size, as bin/evaluate.py computes it."""
    scores = []
    for s in stems:
        rgb = read_image(Path(cfg.images_dir) / f"{s}.jpg")
        prob = predict_probability(run_model, rgb, meta.input_size, meta.mean, meta.std)
        target = read_mask(Path(cfg.masks_dir) / f"{s}.jpg")
        scores.append(image_metrics(prob, target, meta.threshold)["dice"])
    return float(np.mean(scores))


def build_int8(cfg: BenchConfig, meta: ModelMeta) -> Path:
    from lib.quantize import quantize_int8

    q = cfg.quantize
    stems = read_csv_stems(q.calibration_split)[: q.calibration_images]
    size, mean, std = meta.input_size, meta.mean, meta.std
    calib = [prepare_input(read_image(Path(cfg.images_dir) / f"{s}.jpg"), size, mean, std)[0] for s in stems]
    return quantize_int8(
        cfg.model, Path(q.out_dir) / "model.onnx", calib, meta.input_name, q.format, q.per_channel
    )


def decide_int8(cfg: BenchConfig, meta: ModelMeta, models: dict, gate_row: dict) -> dict:
    """Dice of fp32 and INT8 on the eval subset, the adoption decision, and INT8's model.json."""
    from lib.quantize import int8_decision

    q = cfg.quantize
    stems = read_csv_stems(q.eval_split)
    stems = stems[: q.eval_images] if q.eval_images else stems
    dice = {
        name: mean_dice(onnx_runner(path, max(cfg.threads), meta), stems, cfg, meta)
        for name, path in models.items()
    }
    p50 = {name: gate_row[f"onnxruntime_{name}"]["inference"]["p50_ms"] for name in models}
    decision = int8_decision(p50["fp32"], p50["int8"], dice["fp32"], dice["int8"], q.max_dice_loss)
    decision.update(
        dice_fp32=dice["fp32"], dice_int8=dice["int8"], eval_images=len(stems), eval_split=q.eval_split
    )
    int8 = replace(
        meta,
        precision="int8",
        sha256=sha256_file(models["int8"]),
        fp32_sha256=meta.sha256,
        quantization=to_dict(q),
    )
    write_model_json(Path(q.out_dir) / "model.json", int8)
    return decision


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__.splitlines()[0], "conf/bench_latency.yaml").parse_args(argv)
    try:
        cfg = load_config(BenchConfig, args.conf, args.overrides)
        if cfg.gate_threads not in cfg.threads:
            raise ConfigError(f"gate_threads {cfg.gate_threads} must be one of threads {list(cfg.threads)}")
        meta = read_model_json(Path(cfg.model).with_name("model.json"))
        stem = read_csv_stems(cfg.sample_split)[0]
        rgb = read_image(Path(cfg.images_dir) / f"{stem}.jpg")
    except (ConfigError, ModelContractError, OSError, ValueError) as exc:
        print(f"bench_latency: {exc}", file=sys.stderr)
        return 2
    models = {"fp32": Path(cfg.model)} | ({"int8": build_int8(cfg, meta)} if cfg.quantize.enabled else {})
    torch_model = None
    if cfg.checkpoint:
        from lib.model import load_checkpoint

        torch_model, _ = load_checkpoint(cfg.checkpoint)

    results: dict = {}
    for threads in cfg.threads:
        row = {
            f"onnxruntime_{k}": measure(onnx_runner(p, threads, meta, cfg.spinning), rgb, meta, cfg)
            for k, p in models.items()
        }
        if torch_model is not None:
            row["pytorch_eager"] = measure(torch_runner(torch_model, threads), rgb, meta, cfg)
            ort_p50 = row["onnxruntime_fp32"]["inference"]["p50_ms"]
            row["ratio_pytorch_to_onnxruntime_p50"] = row["pytorch_eager"]["inference"]["p50_ms"] / ort_p50
        results[f"threads_{threads}"] = row
        p50s = ", ".join(
            f"{k} {v['inference']['p50_ms']:.1f} ms" for k, v in row.items() if isinstance(v, dict)
        )
        print(f"bench_latency: {threads} thread(s), inference p50: {p50s}", flush=True)

    gate_row = results[f"threads_{cfg.gate_threads}"]
    decision = decide_int8(cfg, meta, models, gate_row) if cfg.quantize.enabled else None
    default = decision["default_model"] if decision else "fp32"
    gate = gate_row[f"onnxruntime_{default}"]["end_to_end"]
    environment = {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "onnxruntime": onnxruntime.__version__,
        "inter_op_threads": 1,
        "execution_mode": "sequential",
        "spinning": cfg.spinning,
    }
    write_json(
        cfg.out,
        {
            "gate": {
                "p50_ms": gate["p50_ms"],
                "p95_ms": gate["p95_ms"],
                "measure": "end_to_end",
                "model": default,
                "threads": cfg.gate_threads,
                "input_size": meta.input_size,
            },
            "default_model": str(models[default]),
            "results": results,
            "int8": decision,
            "image": {"stem": stem, "height": int(rgb.shape[0]), "width": int(rgb.shape[1])},
            "model_version": meta.model_version,
            "environment": environment,
            "config": to_dict(cfg),
        },
    )
    ratio = gate_row.get("ratio_pytorch_to_onnxruntime_p50")
    fp32 = gate_row["onnxruntime_fp32"]["inference"]["p50_ms"]
    print(
        f"bench_latency: onnxruntime fp32 inference p50 {fp32:.1f} ms at {cfg.gate_threads} thread(s)"
        + (f", PyTorch eager {ratio:.2f}x that" if ratio else "")
        + (f"; default {default} ({decision['reason']})" if decision else "")
        + f"; gate p50 {gate['p50_ms']:.1f} ms end to end -> {cfg.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
