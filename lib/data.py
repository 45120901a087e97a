"""Torch dataset over the preprocessing cache (data/processed), with seeded augmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from lib.io import read_csv_stems
from lib.preprocess import normalise
from lib.transforms import AugmentConfig, augment


def load_cache(folder: str | Path) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Memory-mapped images `(N, S, S, 3) uint8`, masks `(N, S, S) uint8` and {stem: row}."""
    folder = Path(folder)
    images = np.load(folder / "images.npy", mmap_mode="r")
    masks = np.load(folder / "masks.npy", mmap_mode="r")
    rows = {}
    for line in (folder / "index.csv").read_text().splitlines()[1:]:
        row, stem = line.split(",")
        rows[stem] = int(row)
    return images, masks, rows


def split_rows(split_csv: str | Path, rows: dict[str, int], limit: int | None = None) -> list[int]:
    """Cache rows for the stems of a split CSV (the first `limit` of them, when given)."""
    stems = read_csv_stems(split_csv)[:limit] if limit else read_csv_stems(split_csv)
    missing = [s for s in stems if s not in rows]
    if missing:
        raise KeyError(f"{len(missing)} stems of {split_csv} are not in the cache, e.g. {missing[:3]}")
    return [rows[s] for s in stems]


def source_blocks(train_rows: list[int], rows: dict[str, int], catalog, weights: dict[str, float]):
    """(rows regrouped by source, ((count, weight), ...) per source) for MixedBatchSampler.

    Sources follow the catalog's order and each keeps its rows' order, so one source (Kvasir alone,
    the default) gives back `train_rows` unchanged.
    """
    stem_of = {row: stem for stem, row in rows.items()}
    order = {name: k for k, name in enumerate(catalog.sources())}
    source = [catalog.entries[stem_of[r]].source for r in train_rows]
    regrouped = [r for _, _, r in sorted(zip((order[s] for s in source), range(len(source)), train_rows))]
    counts = {name: source.count(name) for name in order if name in source}
    return regrouped, tuple((n, float(weights.get(name, 1.0))) for name, n in counts.items())


class SegmentationDataset(Dataset):
    """Items are (image `(3, S, S) float32`, mask `(1, S, S) float32`) tensors.

    Augmentation randomness comes from (seed, epoch, index), so a run gives the same samples
    whatever the number of loader workers.
    """

    def __init__(
        self, images, masks, rows, mean, std, augment_cfg: AugmentConfig | None = None, seed: int = 0
    ):
        self.images, self.masks, self.rows = images, masks, list(rows)
        self.mean, self.std = mean, std
        self.augment_cfg, self.seed, self.epoch = augment_cfg, seed, 0

    def __len__(self) -> int:
        return len(self.rows)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, i: int):
        image, mask = np.asarray(self.images[self.rows[i]]), np.asarray(self.masks[self.rows[i]])
        if self.augment_cfg is not None:
            rng = np.random.default_rng((self.seed, self.epoch, i))
            image, mask = augment(image, mask, self.augment_cfg, rng)
        x = torch.from_numpy(normalise(image, self.mean, self.std))
        y = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None]
        return x, y
