#!/usr/bin/env python3
"""Split the dataset 70/15/15 by groups of near-duplicate frames, so no near-duplicate crosses splits.

Usage: bin/make_splits.py --conf conf/make_splits.yaml
"""

from __future__ import annotations

import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lib.cli import parser, script
from lib.config import load_config
from lib.io import find_pair_dirs, list_images, read_image, write_json, write_text
from lib.splits import (
    group_near_duplicates,
    near_duplicate_pairs,
    perceptual_hash,
    split_csv,
    split_groups,
    thumbnail_signature,
)


@dataclass(frozen=True)
class SplitConfig:
    data_dir: str  # folder holding images/ and masks/
    out_dir: str  # where {split}.csv are written
    report: str  # JSON summary path
    seed: int  # random seed for dealing groups
    fractions: dict[str, float]  # split name -> share of images
    hash_crop: float  # share of each border ignored by both signals
    max_hash_distance: int  # perceptual-hash Hamming bits (of 64) at or below which frames match
    min_correlation: float  # thumbnail correlation at or above which frames match


@script("make_splits")
def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__.splitlines()[0], "conf/make_splits.yaml").parse_args(argv)
    cfg = load_config(SplitConfig, args.conf, args.overrides)
    images_dir, _ = find_pair_dirs(cfg.data_dir)
    paths = list_images(images_dir)
    stems = list(paths)

    def signals(path: Path) -> tuple[np.ndarray, np.ndarray]:
        rgb = read_image(path)
        return perceptual_hash(rgb, cfg.hash_crop), thumbnail_signature(rgb, cfg.hash_crop)

    with ThreadPoolExecutor(max_workers=2) as pool:
        hashes, signatures = map(np.stack, zip(*pool.map(signals, paths.values())))
    adjacent = near_duplicate_pairs(hashes, signatures, cfg.max_hash_distance, cfg.min_correlation)
    groups = group_near_duplicates(adjacent)
    splits = split_groups(groups, cfg.fractions, cfg.seed)
    for name, indices in splits.items():
        write_text(Path(cfg.out_dir) / f"{name}.csv", split_csv(stems, groups, indices))
    sizes = Counter(groups.tolist())
    largest_id, largest = sizes.most_common(1)[0]
    summary = {
        "n_images": len(stems),
        "n_groups": len(sizes),
        "n_groups_with_near_duplicates": sum(1 for c in sizes.values() if c > 1),
        "largest_group_size": largest,
        "largest_group_members": sorted(stems[i] for i in np.flatnonzero(groups == largest_id)),
        "n_near_duplicate_pairs": int(adjacent.sum() // 2),
        "max_hash_distance": cfg.max_hash_distance,
        "min_correlation": cfg.min_correlation,
        "seed": cfg.seed,
        "splits": {name: {"n": len(ix), "fraction": len(ix) / len(stems)} for name, ix in splits.items()},
    }
    write_json(cfg.report, summary)
    shares = " ".join(f"{n}={len(ix)}" for n, ix in splits.items())
    print(
        f"make_splits: {len(stems)} images in {len(sizes)} groups (largest {largest}), "
        f"{shares} -> {cfg.out_dir}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
