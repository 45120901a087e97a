#!/usr/bin/env python3
"""Single-image CPU latency of the ONNX models (onnxruntime fp32, INT8) vs PyTorch eager; the INT8 decision.

The INT8 model and its Dice check come from the quantize stage (bin/quantize.py); this script only
measures, then adopts INT8 when it is faster here and the quantize report's Dice loss is in budget.

Usage: bin/bench_latency.py --conf conf/bench_latency.yaml [--set int8_model="" ...]
"""

from __future__ import annotations

import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime

from lib.cli import parser, script
from lib.config import ConfigError, load_config, to_dict
from lib.decision import binary_mask, component_block
from lib.inference import predict_probability, torch_runner
from lib.io import read_csv_stems, read_image, sha256_file, write_json
from lib.model_contract import ModelContractError, ModelMeta, read_model_json
from lib.onnx_session import make_session, session_runner
from lib.preprocess import prepare_input
from lib.quantize import QuantizeReportError, int8_decision, read_quantize_report

Model = tuple[Path, ModelMeta]  # an ONNX file and its model.json


@dataclass(frozen=True)
class BenchConfig:
    model: str  # models/model.onnx, with model.json beside it
    checkpoint: str  # models/best.pt, for the PyTorch eager comparison (empty = skip)
    images_dir: str  # originals
    sample_split: str  # its first stem is the image timed end to end
    out: str  # reports/bench/latency.json
    int8_model: str  # the quantize stage's models/int8/model.onnx (empty = time fp32 only)
    quantize_report: str  # the quantize stage's Dice fp32 vs INT8, for the adoption decision
    runs: int = 200  # timed runs per measurement
    warmup: int = 20  # untimed runs first
    threads: tuple[int, ...] = (1, 2)  # intra-op thread counts measured
    gate_threads: int = 1  # the setting bin/gates.py judges: one serving worker
    spinning: bool = False  # onnxruntime busy-wait; off as in serving
    api_requests: int = 100  # sequential POST /predict to a real gunicorn (0 = skip; the gate then fails)


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
    """Inference alone on a prepared input, and the whole path (preprocess to the served mask:
    threshold and component filter of model.json)."""
    size, mean, std = meta.input_size, meta.mean, meta.std
    x, _ = prepare_input(rgb, size, mean, std)

    def whole_path():
        return meta.mask(predict_probability(run_model, rgb, size, mean, std))  # as /predict makes it

    return {
        "inference": timings(lambda: run_model(x), cfg.runs, cfg.warmup),
        "end_to_end": timings(whole_path, cfg.runs, cfg.warmup),
    }


def measure_mask(run_model, rgb, meta: ModelMeta, cfg: BenchConfig) -> dict:
    """The served mask from one probability map at the image's size: the threshold alone against
    model.json's whole rule (threshold and component filter), same run: what the filter costs."""
    prob = predict_probability(run_model, rgb, meta.input_size, meta.mean, meta.std)
    return {
        "threshold_only": timings(lambda: binary_mask(prob, meta.threshold), cfg.runs, cfg.warmup),
        "served": timings(lambda: meta.mask(prob), cfg.runs, cfg.warmup),
        "min_component_ratio": meta.min_component_ratio,
        "component_block": component_block(*prob.shape),
    }


def onnx_runner(path, threads: int, meta: ModelMeta, spinning: bool = False):
    return session_runner(make_session(path, threads, spinning), meta.input_name, meta.output_name)


def load_int8(cfg: BenchConfig, fp32: Model) -> tuple[Model, dict] | None:
    """The quantize stage's INT8 model and report, checked to belong to `fp32`; None when not configured."""
    if not cfg.int8_model:
        return None
    path = Path(cfg.int8_model)
    if not path.is_file():
        raise FileNotFoundError(
            f"no INT8 model {path}: run `make quantize` (dvc repro quantize) first, "
            'or set int8_model "" to time fp32 only'
        )
    meta = read_model_json(path.with_name("model.json"))
    if meta.precision != "int8":
        raise ModelContractError(
            f"{path.with_name('model.json')}: precision {meta.precision!r}, expected 'int8'"
        )
    report = read_quantize_report(cfg.quantize_report, sha256_file(fp32[0]), sha256_file(path))
    return (path, meta), report


def decide_int8(report: dict, report_path: str, gate_row: dict) -> dict:
    """The adoption decision from this run's inference p50s and the quantize report's Dice numbers."""
    p50 = {name: gate_row[f"onnxruntime_{name}"]["inference"]["p50_ms"] for name in ("fp32", "int8")}
    decision = int8_decision(
        p50["fp32"], p50["int8"], report["dice_fp32"], report["dice_int8"], report["max_dice_loss"]
    )
    decision.update(
        dice_fp32=report["dice_fp32"],
        dice_int8=report["dice_int8"],
        eval_images=report["eval_images"],
        eval_split=report["eval_split"],
        dice_report=report_path,
    )
    return decision


def measure_api(model: Path, jpeg: bytes, cfg: BenchConfig) -> dict:
    """Sequential POST /predict of a real JPEG to gunicorn serving `model` with one worker of
    `gate_threads` onnxruntime threads: the latency a client sees (HTTP, decode, model, PNG encode)."""
    from tests.support.harness import Gunicorn
    from tests.support.loadgen import run_load

    env = {"POLYPSEG_ORT_THREADS": str(cfg.gate_threads)}
    with Gunicorn(model, workers=1, env=env) as server:
        run_load(server.port, jpeg, concurrency=1, requests=min(cfg.warmup, cfg.api_requests))
        faults_before = server.minor_page_faults()
        row = run_load(server.port, jpeg, concurrency=1, requests=cfg.api_requests)
        faults_after = server.minor_page_faults()
        # Where a request's time goes, from the server's own access log (serve/observe.py), and the
        # worker's page faults: memory mapped afresh each request is time in every stage (serve/memory.py).
        row["server_stage_p50_ms"] = server.stage_medians("/predict", last=cfg.api_requests)
    row["worker_minor_faults_per_request"] = (
        (faults_after - faults_before) / cfg.api_requests if faults_before is not None else None
    )
    if row["errors"]:
        raise RuntimeError(f"bench_latency: {row['errors']} of {cfg.api_requests} API requests failed")
    return row


@script("bench_latency", errors=(ModelContractError, QuantizeReportError))
def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__.splitlines()[0], "conf/bench_latency.yaml").parse_args(argv)
    cfg = load_config(BenchConfig, args.conf, args.overrides)
    if cfg.gate_threads not in cfg.threads:
        raise ConfigError(f"gate_threads {cfg.gate_threads} must be one of threads {list(cfg.threads)}")
    meta = read_model_json(Path(cfg.model).with_name("model.json"))
    models: dict[str, Model] = {"fp32": (Path(cfg.model), meta)}
    int8 = load_int8(cfg, models["fp32"])
    int8_report = None
    if int8:
        models["int8"], int8_report = int8
    stem = read_csv_stems(cfg.sample_split)[0]
    rgb = read_image(Path(cfg.images_dir) / f"{stem}.jpg")
    torch_model = None
    if cfg.checkpoint:
        from lib.model import load_checkpoint

        torch_model, _ = load_checkpoint(cfg.checkpoint)

    results: dict = {}
    for threads in cfg.threads:
        row = {
            f"onnxruntime_{k}": measure(onnx_runner(p, threads, m, cfg.spinning), rgb, m, cfg)
            for k, (p, m) in models.items()
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
    mask = measure_mask(onnx_runner(models["fp32"][0], cfg.gate_threads, meta), rgb, meta, cfg)
    print(
        f"bench_latency: mask p50 {mask['served']['p50_ms']:.2f} ms (threshold alone "
        f"{mask['threshold_only']['p50_ms']:.2f} ms; min_component_ratio {meta.min_component_ratio})"
    )
    decision = decide_int8(int8_report, cfg.quantize_report, gate_row) if int8_report else None
    default = decision["default_model"] if decision else "fp32"
    in_process = gate_row[f"onnxruntime_{default}"]["end_to_end"]
    jpeg = (Path(cfg.images_dir) / f"{stem}.jpg").read_bytes()
    api = measure_api(models[default][0], jpeg, cfg) if cfg.api_requests else None
    if api:
        print(f"bench_latency: API POST /predict p50 {api['p50_ms']:.1f} ms ({cfg.api_requests} requests)")
    # The spec's gate is API latency: what a client of /predict waits for, not the session alone.
    gate = {"p50_ms": api["p50_ms"], "p95_ms": api["p95_ms"], "measure": "http_api"} if api else {}
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
                **gate,
                "in_process_p50_ms": in_process["p50_ms"],
                "model": default,
                "threads": cfg.gate_threads,
                "input_size": meta.input_size,
            },
            "default_model": str(models[default][0]),
            "api": api,
            "mask": mask,
            "results": results,
            "int8": decision,
            "image": {"stem": stem, "height": int(rgb.shape[0]), "width": int(rgb.shape[1])},
            "model_version": meta.model_version,
            "onnx_sha256": meta.sha256,  # the fp32 model this report measured (INT8 is derived from it)
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
        + (f"; gate: API p50 {gate['p50_ms']:.1f} ms" if gate else "; gate: no API measurement")
        + f" -> {cfg.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
