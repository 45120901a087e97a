#!/usr/bin/env python3
"""Split each training source 70/15/15 by groups: no video, patient or near-duplicate set crosses splits.

Usage: bin/make_splits.py --conf conf/make_splits.yaml

Groups are the connected components of two kinds of link: the same group label (a source's
groups.csv or its one-subfolder-per-video layout, lib/sources.py) and near-duplicate frames (perceptual
hash or thumbnail correlation, across sources too). Each source is dealt out on its own, so each gets
its own 70/15/15; a group that reaches into an earlier source's split follows it there. Sources with
`role: external` are not split: their frames go to external.csv, for evaluation only.
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
from lib.io import read_image, read_json, write_json, write_text
from lib.sources import read_catalog
from lib.splits import (
    group_near_duplicates,
    near_duplicate_pairs,
    perceptual_hash,
    split_csv,
    split_groups,
    thumbnail_signature,
)

SIMILARITY_WARNING = (
    "grouped by image similarity only: frames of one video that do not look alike may sit on both "
    "sides of a split; give the source a groups.csv or one subfolder per video (docs/own_data.md)"
)


@dataclass(frozen=True)
class SplitConfig:
    catalog: str  # data/catalog.csv from bin/fetch_data.py
    sources_summary: str  # data/sources.json: how each source is grouped
    out_dir: str  # where {split}.csv and external.csv are written
    report: str  # JSON summary path
    seed: int  # random seed for dealing groups
    fractions: dict[str, float]  # split name -> share of images
    hash_crop: float  # share of each border ignored by both signals
    max_hash_distance: int  # perceptual-hash Hamming bits (of 64) at or below which frames match
    min_correlation: float  # thumbnail correlation at or above which frames match


def deal_by_source(sources: list[str], groups: np.ndarray, cfg: SplitConfig) -> dict[str, list[int]]:
    """{split: frame indices}: each source dealt out on its own; a group already dealt keeps its split."""
    splits: dict[str, list[int]] = {name: [] for name in cfg.fractions}
    placed: dict[int, str] = {}
    names = np.asarray(sources)
    for source in dict.fromkeys(sources):
        idx = np.flatnonzero(names == source)
        follow = [i for i in idx if groups[i] in placed]
        for i in follow:
            splits[placed[groups[i]]].append(int(i))
        fresh = np.asarray([i for i in idx if groups[i] not in placed], dtype=int)
        if not len(fresh):
            continue
        for name, sub in split_groups(groups[fresh], cfg.fractions, cfg.seed).items():
            for i in fresh[sub]:
                splits[name].append(int(i))
                placed[int(groups[i])] = name
    return {name: sorted(ix) for name, ix in splits.items()}


@script("make_splits")
def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__.splitlines()[0], "conf/make_splits.yaml").parse_args(argv)
    cfg = load_config(SplitConfig, args.conf, args.overrides)
    catalog = read_catalog(cfg.catalog)
    groupings = {n: s["grouping"] for n, s in read_json(cfg.sources_summary)["sources"].items()}
    stems = catalog.select(role="train")
    if not stems:
        print(f"make_splits: {cfg.catalog} has no source with role train", file=sys.stderr)
        return 2
    entries = [catalog.entries[s] for s in stems]

    def signals(path: Path) -> tuple[np.ndarray, np.ndarray]:
        rgb = read_image(path)
        return perceptual_hash(rgb, cfg.hash_crop), thumbnail_signature(rgb, cfg.hash_crop)

    with ThreadPoolExecutor(max_workers=2) as pool:
        hashes, signatures = map(np.stack, zip(*pool.map(signals, [catalog.images[s] for s in stems])))
    adjacent = near_duplicate_pairs(hashes, signatures, cfg.max_hash_distance, cfg.min_correlation)
    labels = np.asarray([e.group for e in entries])
    if (labels != "").any():  # frames with one group label belong together, whatever they look like
        same = (labels[:, None] == labels[None, :]) & (labels != "")[:, None]
        np.fill_diagonal(same, False)
        adjacent = adjacent | same
    groups = group_near_duplicates(adjacent)
    splits = deal_by_source([e.source for e in entries], groups, cfg)
    for name, indices in splits.items():
        write_text(Path(cfg.out_dir) / f"{name}.csv", split_csv(stems, groups, indices))
    external = catalog.select(role="external")
    write_text(Path(cfg.out_dir) / "external.csv", "stem,group\n" + "".join(f"{s},-1\n" for s in external))
    sizes = Counter(groups.tolist())
    largest_id, largest = sizes.most_common(1)[0]
    per_source = {}
    for source in dict.fromkeys(e.source for e in entries):
        mine = {i for i, e in enumerate(entries) if e.source == source}
        per_source[source] = {
            "grouping": groupings.get(source, "unknown"),
            "n_groups": len({int(groups[i]) for i in mine}),
            "splits": {name: sum(i in mine for i in ix) for name, ix in splits.items()},
        }
        if groupings.get(source) == "near-duplicate similarity":
            per_source[source]["warning"] = SIMILARITY_WARNING
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
        "sources": per_source,
        "n_external": len(external),
    }
    write_json(cfg.report, summary)
    shares = " ".join(f"{n}={len(ix)}" for n, ix in splits.items())
    print(
        f"make_splits: {len(stems)} images in {len(sizes)} groups (largest {largest}), "
        f"{shares}, external={len(external)} -> {cfg.out_dir}"
    )
    for source, info in per_source.items():
        if "warning" in info:
            print(f"make_splits: warning: {source}: {info['warning']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
