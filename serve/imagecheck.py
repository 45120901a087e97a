"""Checks on untrusted image bytes, done before any full decode.

Only JPEG and PNG are accepted, recognised by their leading bytes (the Content-Type header only
says which kinds of body are allowed). The width and height are read from the PNG IHDR chunk or
the JPEG frame header (SOF) and checked against a pixel limit, so a small file that declares a
huge image (a decompression bomb) is refused without allocating it. A PNG's structure is then
checked completely by serve/png_stream.py (chunk lengths, CRCs, nothing after IEND, bounded
inflation), so an inflation bomb costs milliseconds instead of gigabytes. Pixel formats are
converted, never refused: 16-bit to 8-bit, grayscale to RGB, RGBA to RGB (alpha dropped), palette
expanded.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

import cv2
import numpy as np

from lib.io import DecodeError, decode_image
from serve.image_errors import BadImage, ImageTooLarge
from serve.png_stream import PNG_SIGNATURE, check_png_stream

JPEG_SIGNATURE = b"\xff\xd8\xff"  # SOI and the next marker's 0xFF: what OpenCV needs to pick its JPEG decoder

# JPEG markers as libjpeg(-turbo)'s read_markers() (jdmarker.c) treats them before the first scan.
JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC9, 0xCA, 0xCB}  # frame headers libjpeg-turbo 3 decodes
JPEG_SOF_UNSUPPORTED = {0xC5, 0xC6, 0xC7, 0xC8, 0xCD, 0xCE, 0xCF}  # libjpeg stops with an error
JPEG_SEGMENTS = {0xC4, 0xCC, 0xDB, 0xDC, 0xDD, *range(0xE0, 0xF0), 0xFE}  # DHT DAC DQT DNL DRI APPn COM
JPEG_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # TEM and RSTn carry no length field
# libjpeg's next_marker(): bytes that are not 0xFF are skipped as garbage, any run of 0xFF is fill,
# and FF 00 (a stuffed zero) is discarded; the marker is the first byte after an 0xFF that is
# neither 00 nor FF. This search finds exactly that byte (the match's last byte).
JPEG_NEXT_MARKER = re.compile(rb"\xff[^\x00\xff]")
JPEG_MAX_SEGMENTS = 1000  # before the frame header; real files have < 50, more is a slow-walk attack


@dataclass(frozen=True)
class ImageHeader:
    format: str  # "jpeg" or "png"
    width: int  # pixels, as declared by the header
    height: int


def sniff_format(data: bytes) -> str | None:
    if data.startswith(PNG_SIGNATURE):
        return "png"
    if data.startswith(JPEG_SIGNATURE):
        return "jpeg"
    return None


def read_png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the IHDR chunk, which the PNG spec requires to come first."""
    if len(data) < 33 or data[12:16] != b"IHDR" or int.from_bytes(data[8:12], "big") != 13:
        raise BadImage("PNG header (IHDR chunk) is missing or malformed")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def read_jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the frame header libjpeg will use: the first SOF marker it reads.

    The walk follows libjpeg's own marker rules (jdmarker.c: next_marker, read_markers), so it
    lands on the same SOF as the decoder: garbage between segments and stuffed FF 00 pairs are
    skipped as libjpeg skips them, and every segment (APPn with an EXIF thumbnail, COM, tables)
    is skipped by its length field, so a frame header hidden in a segment's payload is never read.
    Wherever libjpeg would stop with an error before the frame (a duplicate SOI, an unknown or
    unsupported marker, a scan or EOI before any SOF, a bad SOF length) the file is refused here;
    a segment length below 2, which libjpeg tolerates in APPn/COM, is refused too. So the size
    checked is the size decoded, or the file never reaches the decoder.
    """
    pos, end, segments = 2, len(data), 0
    while True:
        found = JPEG_NEXT_MARKER.search(data, pos)
        if found is None:
            raise BadImage("JPEG has no frame header (SOF) before its image data")
        pos = found.end()
        marker = data[pos - 1]
        segments += 1
        if segments > JPEG_MAX_SEGMENTS:
            raise BadImage(f"JPEG has more than {JPEG_MAX_SEGMENTS} marker segments before its frame header")
        if marker in JPEG_STANDALONE:
            continue
        if marker in (0xD9, 0xDA):  # end of image, or scan data: no frame header came first
            raise BadImage("JPEG has no frame header (SOF) before its image data")
        if marker == 0xD8:
            raise BadImage(f"JPEG has a second start-of-image marker at byte {pos - 2}")
        if marker in JPEG_SOF_UNSUPPORTED or (marker not in JPEG_SOF and marker not in JPEG_SEGMENTS):
            raise BadImage(f"JPEG marker 0x{marker:02X} at byte {pos - 2} is not supported")
        if pos + 2 > end:
            break
        length = int.from_bytes(data[pos : pos + 2], "big")
        if length < 2:
            raise BadImage(f"JPEG segment length {length} at byte {pos} is invalid")
        if pos + length > end:
            break
        if marker in JPEG_SOF:
            components = data[pos + 7] if length >= 8 else 0
            if length != 8 + 3 * components or components == 0:
                raise BadImage(f"JPEG frame header at byte {pos - 2} has an invalid length ({length})")
            height, width = struct.unpack_from(">HH", data, pos + 3)
            return width, height
        pos += length
    raise BadImage("JPEG ends inside a marker segment, before its frame header")


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
    """Header and structure checks, then the shared decoder: -> (header, `(H, W, 3) uint8` RGB)."""
    header = read_header(data, max_pixels)
    if header.format == "png":
        check_png_stream(data)
    try:
        rgb = decode_image(data)
    except DecodeError as err:
        raise BadImage(f"the {header.format.upper()} image cannot be decoded: {err}") from err
    except cv2.error as err:  # libpng/libjpeg refusals surface as OpenCV errors
        reason = str(err).strip().splitlines()[-1] if str(err).strip() else "OpenCV error"
        raise BadImage(f"the {header.format.upper()} image cannot be decoded: {reason}") from err
    if rgb.shape[:2] != (header.height, header.width):  # cannot happen if the walk matches the codec
        raise BadImage(
            f"the {header.format.upper()} image decodes to {rgb.shape[1]}x{rgb.shape[0]}, "
            f"not the {header.width}x{header.height} its header declares"
        )
    return header, rgb


def image_end(data: bytes, image_format: str) -> int:
    """Where the image ends in `data`: bytes after it (padding, appended files) are not part of it.

    PNG: the whole body (check_png_stream refuses anything after IEND). JPEG: just past the first
    end-of-image marker after the first scan header, found by walking the segments by their length
    fields as read_jpeg_size does, so an EXIF thumbnail's own markers are skipped.
    """
    if image_format != "jpeg":
        return len(data)
    pos = 2
    while True:
        found = JPEG_NEXT_MARKER.search(data, pos)
        if found is None:
            return len(data)
        pos = found.end()
        marker = data[pos - 1]
        if marker in JPEG_STANDALONE:
            continue
        if pos + 2 > len(data):
            return len(data)
        pos += int.from_bytes(data[pos : pos + 2], "big")
        if marker == 0xDA:
            eoi = data.find(b"\xff\xd9", pos)
            return len(data) if eoi < 0 else eoi + 2
