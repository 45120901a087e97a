#!/usr/bin/env python3
"""Report, once, the test-split Dice of the fp32 export and of the INT8 model the quantize stage built.

The INT8 settings are chosen on validation (bin/quantize_sweep.py, the quantize stage); this script makes
no decision and writes no model: it is the final test figure for docs/experiments.md. Run it after the
choice, not during it.

Usage: bin/int8_test_report.py --conf conf/quantize.yaml [--split CSV] [--out reports/quantize_test.json]
"""

from __future__ import annotations

import sys
from pathlib import Path

from lib.cli import parser, script
from lib.config import load_config
from lib.io import read_csv_stems, write_json
from lib.model_contract import ModelContractError, read_model_json
from lib.onnx_session import make_session, session_runner
from lib.quantize import QuantizeConfig, mean_dice  # the quantize stage's config: same models, same images
from lib.sources import read_catalog


@script("int8_test_report", errors=(ModelContractError,))
def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0], "conf/quantize.yaml")
    p.add_argument("--split", default="data/splits/test.csv")
    p.add_argument("--out", default="reports/quantize_test.json")
    args = p.parse_args(argv)
    cfg = load_config(QuantizeConfig, args.conf, args.overrides)
    stems = read_csv_stems(args.split)
    dice = {}
    for name, path in (("fp32", Path(cfg.model)), ("int8", Path(cfg.out_dir) / "model.onnx")):
        meta = read_model_json(path.with_name("model.json"))
        runner = session_runner(make_session(path, cfg.threads), meta.input_name, meta.output_name)
        dice[name] = {
            "dice": mean_dice(runner, stems, read_catalog(cfg.catalog), meta),
            "sha256": meta.sha256,
            "quantization": meta.quantization,
        }
    loss = dice["fp32"]["dice"] - dice["int8"]["dice"]
    write_json(args.out, {"split": args.split, "n_images": len(stems), **dice, "dice_loss": loss})
    print(
        f"int8_test_report: {args.split} ({len(stems)} images): fp32 {dice['fp32']['dice']:.4f}, "
        f"int8 {dice['int8']['dice']:.4f} (loss {loss:+.4f}) -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
