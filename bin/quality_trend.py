#!/usr/bin/env python3
"""Plot test Dice and IoU over the registered model's versions from the MLflow registry, regressions flagged.

Usage: bin/quality_trend.py --conf conf/quality_trend.yaml [--out DIR]

The registry is read as it is now (after promotions and rollbacks too), without writing to it; a missing
store or model gives an empty trend that says why, and exit status 0. The model name, the splits and the
regression tolerance come from the `trend:` block of the evaluate config, so this page and the
evaluation report (reports/eval/index.html) flag the same versions. Writes OUT/trend.png,
OUT/trend.json (the table) and OUT/index.html.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from lib.cli import parser, script
from lib.config import load_config
from lib.io import write_json, write_text
from lib.plots import trend_png
from lib.report import trend_page
from lib.tracking import registered_model_name
from lib.trend import load_trend_config, quality_trend, trend_table


@dataclass(frozen=True)
class QualityTrendConfig:
    evaluate_conf: str  # conf/evaluate.yaml: its `trend:` block (model, splits, tolerance)
    out_dir: str  # reports/trend


@script("quality_trend")
def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0], "conf/quality_trend.yaml")
    p.add_argument("--out", help="output folder (default: out_dir of the config)")
    args = p.parse_args(argv)
    cfg = load_config(QualityTrendConfig, args.conf, args.overrides)
    settings = load_trend_config(cfg.evaluate_conf)
    name = registered_model_name(settings.register_conf)

    trend = quality_trend(name, settings)
    out = Path(args.out or cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "trend.png").write_bytes(trend_png(trend))
    write_json(out / "trend.json", trend_table(trend))
    write_text(out / "index.html", trend_page(trend))

    evaluated = [p for p in trend.points if p.test_dice is not None]
    flagged = [p.label for p in trend.points if p.regression]
    summary = f"{len(trend.points)} version(s), {len(evaluated)} evaluated, regressions: {flagged or 'none'}"
    note = f" ({trend.note})" if trend.note else ""
    print(f"quality_trend: {name}: {summary}{note} -> {out}/index.html")
    return 0


if __name__ == "__main__":
    sys.exit(main())
