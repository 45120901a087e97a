"""Fine-tuning on a user's folder: the data it trains on, the base training data it rehearses, the verdict.

The user's folder is split by its own groups (bin/make_splits.py); the base's training split
(Kvasir-SEG's train.csv) is mixed into every epoch so the model keeps what it knew (rehearsal), and the
base's other frames are kept for evaluation only. The comparison that decides whether fine-tuning helped
is on the folder's held-out groups (its test split), where neither model was trained or tuned.
"""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

import numpy as np

from lib.sources import Catalog, Entry


def own_data_config(name: str, path: str, kind: str, work: Path, timeout_s: float) -> dict:
    """conf/data.yaml-shaped mapping with the one folder as source `name` (stems prefixed `<name>-`)."""
    return {
        "sources": {name: {"kind": kind, "path": path, "role": "train", "weight": 1.0}},
        "catalog": str(work / "own_catalog.csv"),
        "summary": str(work / "own_sources.json"),
        "manifest_dir": str(work / "manifests"),
        "timeout_s": timeout_s,
        "dvc_stage": False,  # a folder given on the command line: no DVC stage watches it
    }


def merged_entries(base: Catalog, base_train: set[str], own: Catalog) -> list[Entry]:
    """The user's frames (role train) and the base's: its training split rehearsed (role train), every
    other frame evaluation only (role external), so the cache holds just what training reads."""
    kept = [replace(e, role="train" if s in base_train else "external") for s, e in base.entries.items()]
    return kept + list(own.entries.values())


def rehearsal_weight(share: float, n_own_train: int, n_base_train: int) -> float:
    """Sampling weight of the base's training frames so that `share` of each epoch's images are theirs."""
    if not 0.0 <= share < 1.0:
        raise ValueError(f"rehearsal_share must be in [0, 1), got {share}")
    if share == 0.0 or not n_base_train:
        return 0.0
    return share / (1.0 - share) * n_own_train / n_base_train


def paired_gain(base_per_image: Path, finetuned_per_image: Path) -> tuple[float, float, int]:
    """(mean, standard error, n) of the per-image Dice gain on the same images (evaluate's per_image.csv)."""

    def dice(path: Path) -> dict[str, float]:
        with open(path, newline="") as fh:
            return {row["stem"]: float(row["dice"]) for row in csv.DictReader(fh)}

    base, tuned = dice(base_per_image), dice(finetuned_per_image)
    if set(base) != set(tuned):
        raise ValueError(f"{base_per_image} and {finetuned_per_image} list different images")
    gains = np.array([tuned[s] - base[s] for s in sorted(base)])
    se = float(gains.std(ddof=1) / np.sqrt(len(gains))) if len(gains) > 1 else float("nan")
    return float(gains.mean()), se, len(gains)


def verdict(base_dice: float, finetuned_dice: float, min_gain: float, se: float) -> tuple[bool, str]:
    """(better, sentence) for the held-out comparison; better only with a gain above `min_gain`. The
    sentence gives the paired standard error, so a gain inside the noise reads as what it is."""
    gain = finetuned_dice - base_dice
    spread = f"gain {gain:+.4f}, paired standard error {se:.4f}"
    if gain > min_gain:
        noise = "; under two standard errors: not a clear gain" if gain <= 2 * se else ""
        return True, (
            f"fine-tuned is better on the held-out groups: Dice {base_dice:.4f} -> {finetuned_dice:.4f} "
            f"({spread}{noise})"
        )
    return False, (
        f"fine-tuned is NOT better on the held-out groups: Dice {base_dice:.4f} -> {finetuned_dice:.4f} "
        f"({spread}; needed > {min_gain:+.4f}); keep the base model"
    )
