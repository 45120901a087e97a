"""Disk and image-codec helpers: decoding, the one mask rule, atomic writes, split CSVs.

Images are returned as `(H, W, 3) uint8` RGB; masks as `(H, W) uint8` with values {0, 1}.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
MASK_THRESHOLD = 128  # Kvasir-SEG masks are JPEGs with grey edges: binarise at mid-grey, never at > 0


class DecodeError(ValueError):
    """Bytes that are not a complete, decodable image."""


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def looks_truncated(data: bytes) -> bool:
    """True for a JPEG without its end-of-image marker, or a PNG without IEND.

    libjpeg decodes a truncated JPEG with a warning and grey fill, so decoding alone misses it.
    """
    if data[:2] == b"\xff\xd8":
        return b"\xff\xd9" not in data[-64:]
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return b"IEND" not in data[-16:]
    return False


def decode_raw(data: bytes) -> np.ndarray:
    """Decode image bytes unchanged (any depth, any channel count); raises DecodeError."""
    if not data:
        raise DecodeError("empty file")
    if looks_truncated(data):
        raise DecodeError("truncated image data (no end marker)")
    array = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None or array.size == 0:
        raise DecodeError("not a decodable image")
    return array


def to_rgb_uint8(array: np.ndarray) -> np.ndarray:
    """Convert a decoded OpenCV array (BGR/BGRA/gray, 8 or 16 bit) to `(H, W, 3) uint8` RGB."""
    if array.dtype == np.uint16:
        array = (array >> 8).astype(np.uint8)
    elif array.dtype != np.uint8:
        raise DecodeError(f"unsupported pixel type {array.dtype}")
    if array.ndim == 2:
        return cv2.cvtColor(array, cv2.COLOR_GRAY2RGB)
    if array.shape[2] == 4:
        return cv2.cvtColor(array, cv2.COLOR_BGRA2RGB)
    if array.shape[2] == 3:
        return cv2.cvtColor(array, cv2.COLOR_BGR2RGB)
    raise DecodeError(f"unsupported channel count {array.shape[2]}")


def decode_image(data: bytes) -> np.ndarray:
    """Bytes -> `(H, W, 3) uint8` RGB (colour TIFFs, 16-bit and grayscale are converted)."""
    return to_rgb_uint8(decode_raw(data))


def mask_to_gray(array: np.ndarray) -> np.ndarray:
    """A decoded mask (grey or colour, 8 or 16 bit) -> `(H, W) uint8` grey levels on the 0..255 scale.

    The one reading of what a mask value means, before `binarise_mask`: a colour mask counts its
    brightest channel; a mask whose values are all 0 or 1 is a label map (nnU-Net's labelsTr, many
    exports), so 1 is polyp; a 16-bit mask ({0, 65535} or grey) keeps its top byte; 8-bit {0, 255} and
    Kvasir-SEG's grey-edged JPEGs are used as they are. Validation, the training cache, evaluation,
    quantisation and the benchmarks all come through here.
    """
    if array.ndim == 3:
        array = array[..., :3].max(axis=2)
    if array.size and array.max() <= 1:
        return array.astype(np.uint8) * np.uint8(255)
    if array.dtype == np.uint16:
        array = array >> 8
    return array.astype(np.uint8, copy=False)


def binarise_mask(gray: np.ndarray) -> np.ndarray:
    """`(H, W) uint8` gray -> `(H, W) uint8` {0, 1}: polyp where the grey level is >= MASK_THRESHOLD.

    The only binarisation of masks: validation, the training cache, evaluation and the benchmarks
    all come through here, so they cannot label the same file differently.
    """
    return (gray >= MASK_THRESHOLD).astype(np.uint8)


def decode_mask(data: bytes) -> np.ndarray:
    """Bytes -> `(H, W) uint8` binary mask {0, 1}."""
    return binarise_mask(mask_to_gray(decode_raw(data)))


def read_image(path: str | Path) -> np.ndarray:
    return decode_image(Path(path).read_bytes())


def read_mask(path: str | Path) -> np.ndarray:
    return decode_mask(Path(path).read_bytes())


def write_image(path: str | Path, rgb: np.ndarray) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) if rgb.ndim == 3 else rgb
    if not cv2.imwrite(str(path), bgr):
        raise OSError(f"could not write image {path}")


def list_images(folder: str | Path) -> dict[str, Path]:
    """{stem: path} for the image files directly in `folder`."""
    folder = Path(folder)
    if not folder.is_dir():
        return {}
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}


def find_pair_dirs(root: str | Path) -> tuple[Path, Path]:
    """The `images/` and `masks/` folders of a dataset root; raises FileNotFoundError."""
    root = Path(root)
    images, masks = root / "images", root / "masks"
    missing = [str(p) for p in (images, masks) if not p.is_dir()]
    if missing:
        raise FileNotFoundError(
            f"dataset folder {root} must hold images/ and masks/; missing: {', '.join(missing)}"
        )
    return images, masks


def write_json(path: str | Path, payload: Any) -> None:
    """Write JSON atomically, so a reader never sees half a file."""
    write_text(path, json.dumps(payload, indent=2, sort_keys=False) + "\n")


def write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, 0o644)  # mkstemp makes 0600: a server running as another user must read model.json
    os.replace(tmp, path)


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def read_csv_stems(path: str | Path) -> list[str]:
    """The `stem` column of a split CSV."""
    lines = Path(path).read_text().splitlines()
    if not lines or lines[0].split(",")[0] != "stem":
        raise ValueError(f"{path}: expected a CSV with a 'stem' header")
    return [line.split(",")[0] for line in lines[1:] if line]
