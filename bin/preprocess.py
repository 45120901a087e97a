#!/usr/bin/env python3
"""Resize every image/mask pair of the training sources once to the model input size and cache them.

Usage: bin/preprocess.py --conf conf/preprocess.yaml

Pairs come from the catalog (bin/fetch_data.py); sources with `role: external` are evaluated at their
original size only and are not cached.
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lib.cli import parser, script
from lib.config import load_config, save_config
from lib.io import read_image, read_mask, write_text
from lib.preprocess import cache_pair
from lib.sources import read_catalog


@dataclass(frozen=True)
class PreprocessConfig:
    catalog: str  # data/catalog.csv from bin/fetch_data.py
    out_dir: str  # cache folder
    size: int  # model input side in pixels


@script("preprocess")
def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__.splitlines()[0], "conf/preprocess.yaml").parse_args(argv)
    cfg = load_config(PreprocessConfig, args.conf, args.overrides)
    catalog = read_catalog(cfg.catalog)
    images, masks = catalog.images, catalog.masks
    stems = catalog.select(role="train")  # sorted by stem: the cache's row order

    def load_pair(stem: str) -> tuple[np.ndarray, np.ndarray]:
        # read_mask binarises at lib/io.py MASK_THRESHOLD; cache_pair resizes as prepare_input does.
        return cache_pair(read_image(images[stem]), read_mask(masks[stem]), cfg.size)

    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    x = np.lib.format.open_memmap(out / "images.npy", "w+", np.uint8, (len(stems), cfg.size, cfg.size, 3))
    y = np.lib.format.open_memmap(out / "masks.npy", "w+", np.uint8, (len(stems), cfg.size, cfg.size))
    with ThreadPoolExecutor(max_workers=2) as pool:
        for i, (img, mask) in enumerate(pool.map(load_pair, stems)):
            x[i], y[i] = img, mask
            if (i + 1) % 100 == 0 or i + 1 == len(stems):
                print(f"preprocess: {i + 1}/{len(stems)}", flush=True)
    x.flush()
    y.flush()
    write_text(out / "index.csv", "row,stem\n" + "".join(f"{i},{s}\n" for i, s in enumerate(stems)))
    save_config(cfg, out / "config.yaml")
    print(f"preprocess: {len(stems)} pairs at {cfg.size}x{cfg.size}, polyp share {y.mean():.3f} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
