#!/usr/bin/env python3
"""Write a "foreign centre" copy of a Kvasir-SEG split: other size, colour balance, file format, groups.

Usage: bin/shift_source.py --conf conf/shift_source.yaml [--set layout=folder|nnunet|...] [--force]

The shift, every part of it set in the config: each image is resized so its longer side is `long_side`
(aspect kept; the mask by area average then a 0.5 threshold), then each channel v in [0, 1] becomes
min(1, gain * v) ** gamma, as a camera with another white balance and tone curve would record it. Images
are written as PNG or TIFF, masks as 16-bit {0, 65535} or 8-bit {0, 1} PNGs. The split's near-duplicate
groups are bundled into `n_videos` synthetic videos (a seeded shuffle of the groups, dealt round-robin),
so each video holds several groups and no group spans two videos. File stems stay the Kvasir stems.

Layouts under out_dir (the resolved config is saved there as shift_source.yaml):
  folder         images/<stem>.<ext>, masks/<stem>.png, groups.csv (header stem,group)
  folder-nested  images/<video>/<stem>.<ext>, masks/<video>/<stem>.png (the subfolder is the group)
  nnunet         nnU-Net v2 raw: dataset.json, imagesTr/<stem>_0000<ext>, labelsTr/<stem><ext> with labels
                 8-bit {0, 1} whatever mask_depth says (nnU-Net's convention, one file_ending for both),
                 and the groups in groups.csv beside dataset.json (nnU-Net itself has no place for them)
A non-empty out_dir is refused; --force replaces one this script wrote (it holds shift_source.yaml).
"""

from __future__ import annotations

import csv
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from lib.cli import parser, script
from lib.config import ConfigError, load_config, save_config
from lib.io import read_image, read_mask, write_image, write_json, write_text

MARKER = "shift_source.yaml"  # the resolved config, saved in out_dir: what --force may replace


@dataclass(frozen=True)
class ShiftSourceConfig:
    raw_dir: str  # Kvasir-SEG originals: images/<stem>.jpg and masks/<stem>.jpg
    split_csv: str  # the stems to take, in order; header stem,group (group = near-duplicate group id)
    out_dir: str  # the new dataset
    layout: Literal["folder", "folder-nested", "nnunet"]
    n_images: int  # the first N stems of split_csv; 0 = all of them
    long_side: int  # pixels: each image is resized so its longer side is this, aspect kept
    gain: tuple[float, float, float]  # R, G, B multipliers on intensities in [0, 1], before gamma
    gamma: float  # tone curve exponent after the gain (< 1 lifts the shadows)
    image_format: Literal["png", "tiff"]  # 8-bit RGB; tiff is written as .tif
    mask_depth: Literal[8, 16]  # 16: 16-bit PNG {0, 65535}; 8: 8-bit PNG {0, 1}; nnunet always 8-bit {0, 1}
    n_videos: int  # synthetic videos the near-duplicate groups are dealt into
    seed: int  # seeds the shuffle of groups before they are dealt into videos


def read_split(path: str) -> list[tuple[str, str]]:
    """[(stem, group)] of a split CSV, in file order."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if rows and not {"stem", "group"} <= set(rows[0]):
        raise ConfigError(f"{path}: expected a CSV with header stem,group")
    return [(r["stem"], r["group"]) for r in rows]


def assign_videos(groups: list[str], n_videos: int, seed: int) -> dict[str, str]:
    """{source group: video name}: groups shuffled with `seed`, then dealt round-robin into `n_videos`."""
    unique = list(dict.fromkeys(groups))
    order = np.random.default_rng(seed).permutation(len(unique))
    width = max(2, len(str(n_videos - 1)))
    return {unique[j]: f"video_{i % n_videos:0{width}d}" for i, j in enumerate(order)}


def resize_pair(rgb: np.ndarray, mask: np.ndarray, long_side: int) -> tuple[np.ndarray, np.ndarray]:
    """`(H, W, 3) uint8`, `(H, W)` {0, 1} -> the same at longer side `long_side`, aspect kept."""
    h, w = mask.shape
    scale = long_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    soft = cv2.resize(mask.astype(np.float32), size, interpolation=cv2.INTER_AREA)
    return cv2.resize(rgb, size, interpolation=interp), (soft >= 0.5).astype(np.uint8)


def colour_lut(gain: tuple[float, float, float], gamma: float) -> np.ndarray:
    """`(1, 256, 3) uint8` per-channel lookup: v -> 255 * min(1, gain * v / 255) ** gamma."""
    v = np.arange(256, dtype=np.float64)[:, None] / 255.0
    out = 255.0 * np.minimum(1.0, v * np.asarray(gain)) ** gamma
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)[None]


def prepare_out(out: Path, force: bool) -> Path:
    """The staging folder beside `out`; refuses a non-empty `out` unless --force and written by us."""
    if out.exists() and any(out.iterdir()):
        if not force:
            raise FileExistsError(f"{out} exists and is not empty; pass --force to replace it")
        if not (out / MARKER).is_file():
            raise FileExistsError(f"{out} was not written by shift_source (no {MARKER}); not replacing it")
    staging = out.parent / f".{out.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)  # a previous interrupted run of ours
    staging.mkdir(parents=True)
    return staging


@script("shift_source", errors=(FileExistsError,))
def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0], "conf/shift_source.yaml")
    p.add_argument("--force", action="store_true", help="replace a non-empty out_dir this script wrote")
    args = p.parse_args(argv)
    cfg = load_config(ShiftSourceConfig, args.conf, args.overrides)
    if cfg.n_videos < 1 or cfg.long_side < 1 or cfg.gamma <= 0 or min(cfg.gain) <= 0:
        raise ConfigError(f"{args.conf}: n_videos, long_side, gamma and gain must be positive")
    rows = read_split(cfg.split_csv)
    rows = rows[: cfg.n_images] if cfg.n_images > 0 else rows
    video_of = assign_videos([g for _, g in rows], cfg.n_videos, cfg.seed)
    raw, out = Path(cfg.raw_dir), Path(cfg.out_dir)
    tmp = prepare_out(out, args.force)

    ext = ".tif" if cfg.image_format == "tiff" else ".png"
    lut = colour_lut(cfg.gain, cfg.gamma)
    nnunet = cfg.layout == "nnunet"
    for i, (stem, group) in enumerate(rows):
        image, mask = read_image(raw / "images" / f"{stem}.jpg"), read_mask(raw / "masks" / f"{stem}.jpg")
        rgb, mask = resize_pair(image, mask, cfg.long_side)
        rgb = cv2.LUT(rgb, lut)
        if nnunet:
            write_image(tmp / "imagesTr" / f"{stem}_0000{ext}", rgb)
            write_image(tmp / "labelsTr" / f"{stem}{ext}", mask)
        else:
            sub = video_of[group] if cfg.layout == "folder-nested" else ""
            write_image(tmp / "images" / sub / f"{stem}{ext}", rgb)
            encoded = mask.astype(np.uint16) * 65535 if cfg.mask_depth == 16 else mask
            write_image(tmp / "masks" / sub / f"{stem}.png", encoded)
        if (i + 1) % 100 == 0:
            print(f"shift_source: {i + 1}/{len(rows)}", flush=True)

    if cfg.layout != "folder-nested":
        write_text(tmp / "groups.csv", "stem,group\n" + "".join(f"{s},{video_of[g]}\n" for s, g in rows))
    if nnunet:
        write_json(
            tmp / "dataset.json",
            {
                # One RGB file per case (_0000), read as three channels by nnU-Net's natural-image IO.
                "channel_names": {"0": "R", "1": "G", "2": "B"},
                "labels": {"background": 0, "polyp": 1},
                "numTraining": len(rows),
                "file_ending": ext,
                "name": "kvasir-shifted",
                "description": f"Kvasir-SEG {Path(cfg.split_csv).name} under a synthetic domain shift "
                f"(bin/shift_source.py): long side {cfg.long_side} px, RGB gain {list(cfg.gain)}, "
                f"gamma {cfg.gamma}; groups (synthetic videos) in groups.csv",
            },
        )
    save_config(cfg, tmp / MARKER)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    n_videos = len({video_of[g] for _, g in rows})
    print(
        f"shift_source: {len(rows)} images, {len(set(video_of))} source groups in {n_videos} videos, "
        f"layout {cfg.layout}, {cfg.image_format} at long side {cfg.long_side} px -> {out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
