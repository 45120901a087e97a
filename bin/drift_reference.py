#!/usr/bin/env python3
"""Compute the drift report's reference: image and model-side features of every validation image.

Writes reports/drift/reference.csv (one row per image, lib.drift.FEATURE_COLUMNS); bin/drift_report.py
compares current images with it, and its `predicted_polyp_share` column is the baseline of the served
polyp share. A DVC stage: it runs again when the model, the split or a feature definition changes.

Usage: bin/drift_reference.py --conf conf/drift_reference.yaml [--set key=value ...]
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from lib.cli import parser, script
from lib.config import ConfigError, load_config
from lib.drift import DriftInputError, feature_table, load_model
from lib.io import read_csv_stems, write_text
from lib.model_contract import ModelContractError
from lib.sources import read_catalog


@dataclass(frozen=True)
class DriftReferenceConfig:
    model: str  # models/model.onnx, with model.json beside it
    catalog: str  # data/catalog.csv: every stem's original image
    split: str  # CSV of stems: the reference population
    out: str  # reports/drift/reference.csv
    threads: int  # onnxruntime intra-op threads


@script("drift_reference", errors=(ModelContractError, DriftInputError))
def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__.splitlines()[0], "conf/drift_reference.yaml").parse_args(argv)
    cfg = load_config(DriftReferenceConfig, args.conf, args.overrides)
    stems = read_csv_stems(cfg.split)
    if not stems:
        raise ConfigError(f"{cfg.split}: no images listed")
    paths = read_catalog(cfg.catalog).images
    unknown = [s for s in stems if s not in paths]
    if unknown:
        raise FileNotFoundError(
            f"{len(unknown)} stem(s) of {cfg.split} not in {cfg.catalog}, e.g. {unknown[0]}"
        )
    images = [(s, paths[s]) for s in stems]
    missing = [str(p) for _, p in images if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} image(s) of {cfg.split} missing, e.g. {missing[0]}")

    model = load_model(cfg.model, cfg.threads)
    table, skipped = feature_table(images, model)
    if skipped:  # the data stage validated every image: an undecodable one means the data changed
        raise DriftInputError(f"{len(skipped)} reference image(s) cannot be decoded, e.g. {skipped[0]}")
    write_text(cfg.out, table.to_csv(index=False))
    share = table["predicted_polyp_share"]
    print(
        f"drift_reference: {len(table)} images of {cfg.split}, model {model.meta.model_version}, "
        f"predicted polyp share mean {share.mean():.4f} (median {share.median():.4f}) -> {cfg.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
