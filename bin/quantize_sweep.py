#!/usr/bin/env python3
"""Search INT8 quantizations of the exported model for one that costs no Dice: each variant's validation
Dice against fp32, and its speed against fp32 at one thread, measured in the same run.

A variant qualifies when it loses at most `max_dice_loss` validation Dice and is at least `min_speedup`
times faster than fp32; of those, the one losing the least Dice (then the faster) is recommended and
conf/quantize.yaml takes its settings: the choice is made here, on validation. Writes
reports/quantize_sweep.json.

Usage: bin/quantize_sweep.py --conf conf/quantize_sweep.yaml
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lib.cli import parser, script
from lib.config import ConfigError, load_config, to_dict
from lib.io import read_csv_stems, read_image, write_json
from lib.model_contract import read_model_json
from lib.onnx_session import make_session, session_runner
from lib.preprocess import prepare_input
from lib.quantize import mean_dice, quantize_int8
from lib.sources import read_catalog


@dataclass(frozen=True)
class Variant:
    name: str
    calibration_images: int  # first N training stems
    calibrate_method: str  # MinMax, Entropy, Percentile
    per_channel: bool
    format: str  # QOperator or QDQ
    keep_fp32: tuple[str, ...]  # first_conv, last_conv


@dataclass(frozen=True)
class SweepConfig:
    model: str  # fp32 export, model.json beside it
    catalog: str  # data/catalog.csv: originals and masks
    calibration_split: str  # training stems: calibration never sees validation or test
    eval_split: str  # validation: the choice is made here
    eval_images: int | None  # first N (null = all)
    timing_runs: int  # session calls per model for the p50, interleaved fp32/int8 so load hits both alike
    max_dice_loss: float  # a variant may lose at most this much validation Dice
    min_speedup: float  # and must be at least this much faster than fp32 at one thread
    variants: tuple[Variant, ...]
    report: str


def p50_ms(sessions: dict, x: np.ndarray, runs: int) -> dict[str, float]:
    """Median session.run time of each session, the calls interleaved round-robin after a warm-up."""
    times = {name: [] for name in sessions}
    for run in sessions.values():
        for _ in range(5):
            run(x)
    for _ in range(runs):
        for name, run in sessions.items():
            t0 = time.perf_counter()
            run(x)
            times[name].append((time.perf_counter() - t0) * 1e3)
    return {name: float(np.median(t)) for name, t in times.items()}


@script("quantize_sweep")
def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__.splitlines()[0], "conf/quantize_sweep.yaml").parse_args(argv)
    cfg = load_config(SweepConfig, args.conf, args.overrides)
    if Path(cfg.eval_split).stem == "test":
        raise ConfigError(f"{args.conf}: the choice is made on validation, never on {cfg.eval_split}")
    meta = read_model_json(Path(cfg.model).with_name("model.json"))
    eval_stems = read_csv_stems(cfg.eval_split)[: cfg.eval_images]
    train_stems = read_csv_stems(cfg.calibration_split)
    size, mean, std = meta.input_size, meta.mean, meta.std

    def runner(path):
        return session_runner(make_session(path, 1), meta.input_name, meta.output_name)

    catalog = read_catalog(cfg.catalog)
    fp32_dice = mean_dice(runner(cfg.model), eval_stems, catalog, meta)
    print(
        f"quantize_sweep: fp32 Dice {fp32_dice:.4f} on {len(eval_stems)} images of {cfg.eval_split}",
        flush=True,
    )
    x = prepare_input(read_image(catalog.images[eval_stems[0]]), size, mean, std)[0]
    calib_cache: dict[int, list[np.ndarray]] = {}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for v in cfg.variants:
            if v.calibration_images not in calib_cache:
                calib_cache[v.calibration_images] = [
                    prepare_input(read_image(catalog.images[s]), size, mean, std)[0]
                    for s in train_stems[: v.calibration_images]
                ]
            t0 = time.perf_counter()
            path = quantize_int8(
                cfg.model, Path(tmp) / f"{v.name}.onnx", calib_cache[v.calibration_images], meta.input_name,
                v.format, v.per_channel, v.calibrate_method, tuple(v.keep_fp32),
            )  # fmt: skip
            build_s = time.perf_counter() - t0
            dice = mean_dice(runner(path), eval_stems, catalog, meta)
            speed = p50_ms({"fp32": runner(cfg.model), "int8": runner(path)}, x, cfg.timing_runs)
            row = {
                **to_dict(v),
                "dice": round(dice, 5),
                "dice_loss": round(fp32_dice - dice, 5),
                "fp32_p50_ms": round(speed["fp32"], 2),
                "int8_p50_ms": round(speed["int8"], 2),
                "speedup": round(speed["fp32"] / speed["int8"], 3),
                "build_s": round(build_s, 1),
            }
            row["qualifies"] = row["dice_loss"] <= cfg.max_dice_loss and row["speedup"] >= cfg.min_speedup
            rows.append(row)
            print(
                f"quantize_sweep: {v.name}: Dice {dice:.4f} (loss {row['dice_loss']:+.4f}), "
                f"{row['int8_p50_ms']} vs {row['fp32_p50_ms']} ms = x{row['speedup']}"
                f"{'  qualifies' if row['qualifies'] else ''}",
                flush=True,
            )
    qualifying = [r for r in rows if r["qualifies"]]
    best = min(qualifying, key=lambda r: (r["dice_loss"], -r["speedup"])) if qualifying else None
    write_json(
        cfg.report,
        {
            "fp32_dice": fp32_dice,
            "eval_split": cfg.eval_split,
            "eval_images": len(eval_stems),
            "rule": f"dice_loss <= {cfg.max_dice_loss} and speedup >= {cfg.min_speedup} at 1 thread; "
            "of those, the smallest Dice loss wins (then the higher speed-up)",
            "recommended": best["name"] if best else None,
            "variants": rows,
            "model": cfg.model,
            "model_version": meta.model_version,
            "config": to_dict(cfg),
        },
    )
    print(f"quantize_sweep: recommended {best['name'] if best else 'none'} -> {cfg.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
