"""Checks on untrusted image bytes, done before any full decode.

Only JPEG and PNG are accepted, recognised by their leading bytes (the Content-Type header only
says which kinds of body are allowed). The width and height are read from the PNG IHDR chunk or
the JPEG frame header (SOF) and checked against a pixel limit, so a small file that declares a
huge image (a decompression bomb) is refused without allocating it. Pixel formats are converted,
never refused: 16-bit to 8-bit, grayscale to RGB, RGBA to RGB (alpha dropped), palette expanded.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from lib.io import DecodeError, decode_image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SOI = b"\xff\xd8"
# Start-of-frame markers that carry the image size (C4 DHT, C8 JPG and CC DAC are not frames).
JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
JPEG_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # TEM and RSTn carry no length field


class BadImage(ValueError):
    """Bytes that are not a complete JPEG or PNG image (answered with 400)."""


class ImageTooLarge(ValueError):
    """An image whose declared width x height exceeds the pixel limit (answered with 413)."""


@dataclass(frozen=True)
class ImageHeader:
    format: str  # "jpeg" or "png"
    width: int  # pixels, as declared by the header
    height: int


def sniff_format(data: bytes) -> str | None:
    if data.startswith(PNG_SIGNATURE):
        return "png"
    if data.startswith(JPEG_SOI):
        return "jpeg"
    return None


def read_png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the IHDR chunk, which the PNG spec requires to come first."""
    if len(data) < 33 or data[12:16] != b"IHDR" or int.from_bytes(data[8:12], "big") != 13:
        raise BadImage("PNG header (IHDR chunk) is missing or malformed")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def read_jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the first frame header, walking the marker segments after SOI.

    Segments before the frame (APPn with EXIF thumbnails, quantisation tables, ...) are skipped by
    their length fields, so a thumbnail's own frame header is never mistaken for the image's.
    """
    pos, end = 2, len(data)
    while pos < end:
        if data[pos] != 0xFF:
            raise BadImage(f"JPEG marker expected at byte {pos}")
        while pos < end and data[pos] == 0xFF:  # any number of fill bytes may precede a marker
            pos += 1
        if pos >= end:
            break
        marker = data[pos]
        pos += 1
        if marker in JPEG_STANDALONE:
            continue
        if marker in (0xD9, 0xDA):  # end of image, or scan data: no frame header came first
            break
        if pos + 2 > end:
            break
        length = int.from_bytes(data[pos : pos + 2], "big")
        if length < 2:
            raise BadImage(f"JPEG segment length {length} at byte {pos} is invalid")
        if marker in JPEG_SOF:
            if pos + 7 > end:
                break
            return int.from_bytes(data[pos + 5 : pos + 7], "big"), int.from_bytes(
                data[pos + 3 : pos + 5], "big"
            )
        pos += length
    raise BadImage("JPEG has no frame header (SOF) before its image data")


def read_header(data: bytes, max_pixels: int) -> ImageHeader:
    """Format and declared size of `data`; raises BadImage or ImageTooLarge."""
    if not data:
        raise BadImage("the image is empty (0 bytes)")
    kind = sniff_format(data)
    if kind == "png":
        width, height = read_png_size(data)
    elif kind == "jpeg":
        width, height = read_jpeg_size(data)
    else:
        raise BadImage("the body is not a JPEG or PNG image (unrecognised leading bytes)")
    if width == 0 or height == 0:
        raise BadImage(f"the image declares a zero size ({width}x{height})")
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"the image declares {width}x{height} = {width * height} pixels; the limit is {max_pixels}"
        )
    return ImageHeader(kind, width, height)


def decode_checked(data: bytes, max_pixels: int) -> tuple[ImageHeader, np.ndarray]:
    """Header checks, then the shared decoder: -> (header, `(H, W, 3) uint8` RGB)."""
    header = read_header(data, max_pixels)
    try:
        rgb = decode_image(data)
    except DecodeError as err:
        raise BadImage(f"the {header.format.upper()} image cannot be decoded: {err}") from err
    except cv2.error as err:  # libpng/libjpeg refusals surface as OpenCV errors
        reason = str(err).strip().splitlines()[-1] if str(err).strip() else "OpenCV error"
        raise BadImage(f"the {header.format.upper()} image cannot be decoded: {reason}") from err
    return header, rgb
