#!/usr/bin/env python3
"""Build the INT8 model from the fp32 export and measure its Dice against fp32 on validation images.

Writes models/int8/{model.onnx,model.json} and reports/quantize.json; bin/bench_latency.py times the
INT8 model and decides with these Dice numbers whether it becomes the default.

Usage: bin/quantize.py --conf conf/quantize.yaml [--set eval_images=null ...]
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

from lib.cli import parser, script
from lib.config import ConfigError, load_config, to_dict
from lib.io import read_csv_stems, read_image, sha256_file, write_json
from lib.model_contract import ModelContractError, read_model_json, write_model_json
from lib.onnx_session import make_session, session_runner
from lib.preprocess import prepare_input
from lib.quantize import FIXED_SETTINGS, QuantizeConfig, dice_within_budget, mean_dice, quantize_int8
from lib.sources import read_catalog


def stems_of(split: str, first: int | None) -> list[str]:
    """The first `first` stems of a split CSV (all when None); ConfigError when that leaves none."""
    if Path(split).stem == "test":  # calibration and the Dice check both feed a decision
        raise ConfigError(f"{split}: test images are for the final report only, never for a decision")
    if first is not None and first < 1:
        raise ConfigError(f"{split}: the number of images to take must be at least 1 (or null), got {first}")
    stems = read_csv_stems(split)[:first]
    if not stems:
        raise ConfigError(f"{split}: no images listed")
    return stems


@script("quantize", errors=(ModelContractError,))
def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__.splitlines()[0], "conf/quantize.yaml").parse_args(argv)
    cfg = load_config(QuantizeConfig, args.conf, args.overrides)
    q = cfg.quantization
    fp32_path = Path(cfg.model)
    meta = read_model_json(fp32_path.with_name("model.json"))
    if sha256_file(fp32_path) != meta.sha256:  # the INT8 model.json records this sha256 as its origin
        raise ModelContractError(f"{fp32_path} is not the file its model.json describes (sha256 differs)")
    calib_stems = stems_of(q.calibration_split, q.calibration_images)
    eval_stems = stems_of(cfg.eval_split, cfg.eval_images)
    catalog = read_catalog(cfg.catalog)

    size, mean, std = meta.input_size, meta.mean, meta.std
    calib = [prepare_input(read_image(catalog.images[s]), size, mean, std)[0] for s in calib_stems]
    int8_path = quantize_int8(
        fp32_path,
        Path(cfg.out_dir) / "model.onnx",
        calib,
        meta.input_name,
        q.format,
        q.per_channel,
        q.calibrate_method,
        tuple(q.keep_fp32),
    )
    settings = FIXED_SETTINGS | to_dict(q)
    int8_meta = replace(
        meta, precision="int8", sha256=sha256_file(int8_path), fp32_sha256=meta.sha256, quantization=settings
    )
    write_model_json(int8_path.with_name("model.json"), int8_meta)
    print(f"quantize: {len(calib)} calibration images, {q.format} -> {int8_path}", flush=True)

    models = {"fp32": (fp32_path, meta), "int8": (int8_path, int8_meta)}
    dice = {
        name: mean_dice(
            session_runner(make_session(path, cfg.threads), m.input_name, m.output_name),
            eval_stems,
            catalog,
            m,
        )
        for name, (path, m) in models.items()
    }
    within = dice_within_budget(dice["fp32"], dice["int8"], cfg.max_dice_loss)
    write_json(
        cfg.report,
        {
            "dice_fp32": dice["fp32"],
            "dice_int8": dice["int8"],
            "dice_loss": dice["fp32"] - dice["int8"],
            "max_dice_loss": cfg.max_dice_loss,
            "dice_within_budget": within,
            "eval_split": cfg.eval_split,
            "eval_images": len(eval_stems),
            **{
                name: {"model": str(path), "sha256": m.sha256, "model_version": m.model_version}
                for name, (path, m) in models.items()
            },
            "quantization": settings,
            "config": to_dict(cfg),
        },
    )
    print(
        f"quantize: Dice on {len(eval_stems)} images of {cfg.eval_split}: fp32 {dice['fp32']:.4f}, "
        f"int8 {dice['int8']:.4f} (loss {dice['fp32'] - dice['int8']:+.4f}, "
        f"{'<' if within else '>='} {cfg.max_dice_loss}) -> {cfg.report}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
