"""Schema checks for an image/mask segmentation folder, hand-written.

`describe_image` / `describe_mask` turn file bytes into small records (the only decoding);
each rule is a pure function over those records returning the offending files. A rule is
critical (the pipeline stops) or a warning (reported, pipeline goes on).
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from lib.io import DecodeError, binarise_mask, decode_raw, mask_to_gray


@dataclass(frozen=True)
class SchemaConfig:
    """The `schema` block of conf/validate_data.yaml; its values live there (only `severity` is optional)."""

    max_grey_fraction: float  # share of mask pixels in 32..223 above which it is not a binary mask
    min_foreground: float  # smallest plausible polyp share of a mask's pixels
    max_foreground: float  # largest plausible polyp share of a mask's pixels
    min_side: int  # smallest plausible image side in pixels
    max_side: int  # largest plausible image side in pixels
    severity: dict[str, str] = field(default_factory=dict)  # rule name -> "critical"/"warning" (optional)


@dataclass(frozen=True)
class FileRecord:
    """What the rules need to know about one image or mask file."""

    name: str  # file name, e.g. "abc.jpg"
    stem: str
    error: str | None = None  # decode error, None when the file decoded
    height: int = 0
    width: int = 0
    channels: int = 0
    dtype: str = ""
    pixel_sha256: str = ""  # hash of decoded pixels: equal for identical images in any container
    foreground: float = 0.0  # masks: polyp share after lib.io.binarise_mask
    grey_fraction: float = 0.0  # masks: share of pixels neither clearly black nor clearly white
    channel_spread: int = 0  # masks: max difference between colour channels


def _stem(name: str) -> str:
    return name.rsplit(".", 1)[0]


def _describe(name: str, data: bytes, fields: Callable[[np.ndarray], dict]) -> FileRecord:
    """Decode once; a record with the decode error, or with the common fields plus `fields(array)`."""
    try:
        array = decode_raw(data)
    except DecodeError as exc:
        return FileRecord(name=name, stem=_stem(name), error=str(exc))
    return FileRecord(
        name=name,
        stem=_stem(name),
        height=array.shape[0],
        width=array.shape[1],
        channels=1 if array.ndim == 2 else array.shape[2],
        dtype=str(array.dtype),
        **fields(array),
    )


def _image_fields(array: np.ndarray) -> dict:
    return {"pixel_sha256": hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()}


def _mask_fields(array: np.ndarray) -> dict:
    spread = 0
    if array.ndim == 3 and array.shape[2] >= 3:
        colour = array[..., :3].astype(np.int32) >> (8 if array.dtype == np.uint16 else 0)
        spread = int((colour.max(axis=2) - colour.min(axis=2)).max())
    gray = mask_to_gray(array)
    return {
        "foreground": float(binarise_mask(gray).mean()),
        "grey_fraction": float(((gray >= 32) & (gray < 224)).mean()),
        "channel_spread": spread,
    }


def describe_image(name: str, data: bytes) -> FileRecord:
    return _describe(name, data, _image_fields)


def describe_mask(name: str, data: bytes) -> FileRecord:
    return _describe(name, data, _mask_fields)


@dataclass(frozen=True)
class Rule:
    name: str
    severity: str  # "critical" or "warning"
    description: str
    check: Callable[[list[FileRecord], list[FileRecord], SchemaConfig], list[str]]


def _decoded(records: list[FileRecord]) -> list[FileRecord]:
    return [r for r in records if r.error is None]


def check_pairing(images, masks, cfg) -> list[str]:
    bad = []
    for kind, records in (("image", images), ("mask", masks)):
        counts = Counter(r.stem for r in records)
        bad += [
            f"{kind}s/{r.name} (stem appears {counts[r.stem]} times)" for r in records if counts[r.stem] > 1
        ]
    image_stems, mask_stems = {r.stem for r in images}, {r.stem for r in masks}
    bad += [f"images/{r.name} (no mask)" for r in images if r.stem not in mask_stems]
    bad += [f"masks/{r.name} (no image)" for r in masks if r.stem not in image_stems]
    return bad


def check_decodable(images, masks, cfg) -> list[str]:
    return [f"images/{r.name} ({r.error})" for r in images if r.error] + [
        f"masks/{r.name} ({r.error})" for r in masks if r.error
    ]


def check_image_format(images, masks, cfg) -> list[str]:
    return [
        f"images/{r.name} ({r.channels} channel(s), {r.dtype})"
        for r in _decoded(images)
        if r.channels not in (3, 4) or r.dtype != "uint8"
    ]


def check_mask_format(images, masks, cfg) -> list[str]:
    bad = []
    for r in _decoded(masks):
        if r.dtype not in ("uint8", "uint16"):
            bad.append(f"masks/{r.name} ({r.dtype})")
        elif r.grey_fraction > cfg.max_grey_fraction:
            bad.append(f"masks/{r.name} ({r.grey_fraction:.1%} grey pixels: not a binary mask)")
    return bad


def check_size_match(images, masks, cfg) -> list[str]:
    mask_by_stem = {r.stem: r for r in _decoded(masks)}
    bad = []
    for r in _decoded(images):
        m = mask_by_stem.get(r.stem)
        if m and (m.height, m.width) != (r.height, r.width):
            bad.append(f"{r.stem} (image {r.width}x{r.height}, mask {m.width}x{m.height})")
    return bad


def check_foreground(images, masks, cfg) -> list[str]:
    return [
        f"masks/{r.name} (foreground {r.foreground:.4f})"
        for r in _decoded(masks)
        if not cfg.min_foreground <= r.foreground <= cfg.max_foreground
    ]


def check_duplicates(images, masks, cfg) -> list[str]:
    groups = defaultdict(list)
    for r in _decoded(images):
        groups[r.pixel_sha256].append(r.name)
    return [" = ".join(sorted(names)) for names in groups.values() if len(names) > 1]


def check_image_size(images, masks, cfg) -> list[str]:
    return [
        f"images/{r.name} ({r.width}x{r.height})"
        for r in _decoded(images)
        if not cfg.min_side <= min(r.height, r.width) <= max(r.height, r.width) <= cfg.max_side
    ]


RULES = (
    Rule(
        "pairing",
        "warning",  # what fails it is left out of the catalog (lib/sources.py) and listed here, not used
        "every file is part of one image/mask pair (files left out are listed with their reason)",
        check_pairing,
    ),
    Rule("decodable", "critical", "every file is a complete, decodable image", check_decodable),
    Rule(
        "image_format",
        "critical",
        "images are 8-bit RGB (an alpha channel is dropped): colour frames, as the model was trained on",
        check_image_format,
    ),
    Rule(
        "mask_format",
        "critical",
        "masks are 8 or 16 bit and binary as lib/io.py mask_to_gray reads them (colour: brightest channel)",
        check_mask_format,
    ),
    Rule(
        "size_match", "critical", "image and mask of a pair have the same height and width", check_size_match
    ),
    Rule("duplicates", "critical", "no two images have identical pixels", check_duplicates),
    Rule(
        "foreground_fraction", "warning", "mask foreground share within configured bounds", check_foreground
    ),
    Rule("image_size", "warning", "image sides within configured bounds", check_image_size),
)


def run_rules(
    images: list[FileRecord], masks: list[FileRecord], cfg: SchemaConfig, left_out: list[str] = ()
) -> list[dict]:
    """Every rule's outcome: name, severity, status ("pass"/"fail"), count and offending files.

    `left_out`: files the sources' scan could not pair ("path (reason)"), reported under `pairing`.
    """
    unknown = set(cfg.severity) - {r.name for r in RULES}
    if unknown:
        raise ValueError(f"severity override for unknown rule(s): {sorted(unknown)}")
    results = []
    for rule in RULES:
        severity = cfg.severity.get(rule.name, rule.severity)
        if severity not in ("critical", "warning"):
            raise ValueError(f"rule {rule.name}: severity must be critical or warning, got {severity!r}")
        offending = rule.check(images, masks, cfg) + (list(left_out) if rule.name == "pairing" else [])
        results.append(
            {
                "rule": rule.name,
                "severity": severity,
                "description": rule.description,
                "status": "fail" if offending else "pass",
                "count": len(offending),
                "offending": offending,
            }
        )
    return results


def _summary(values: list[float]) -> dict:
    if not values:
        return {}
    a = np.asarray(values, dtype=np.float64)
    return {
        "min": float(a.min()),
        "p05": float(np.percentile(a, 5)),
        "median": float(np.median(a)),
        "mean": float(a.mean()),
        "p95": float(np.percentile(a, 95)),
        "max": float(a.max()),
    }


def statistics(images: list[FileRecord], masks: list[FileRecord]) -> dict:
    """Counts, image size distribution and class balance of a folder."""
    ok_images, ok_masks = _decoded(images), _decoded(masks)
    pixels = {r.stem: r.height * r.width for r in ok_images}
    fg_pixels = sum(r.foreground * pixels.get(r.stem, 0) for r in ok_masks)
    return {
        "n_images": len(images),
        "n_masks": len(masks),
        "n_distinct_sizes": len({(r.width, r.height) for r in ok_images}),
        "height": _summary([r.height for r in ok_images]),
        "width": _summary([r.width for r in ok_images]),
        "foreground_fraction_per_mask": _summary([r.foreground for r in ok_masks]),
        "foreground_fraction_pooled": fg_pixels / max(1, sum(pixels.values())),
        "empty_masks": sum(r.foreground == 0 for r in ok_masks),
    }
