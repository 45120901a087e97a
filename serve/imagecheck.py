"""Checks on untrusted image bytes, done before any full decode.

Only JPEG and PNG are accepted, recognised by their leading bytes (the Content-Type header only
says which kinds of body are allowed). The width and height are read from the PNG IHDR chunk or
the JPEG frame header (SOF) and checked against a pixel limit, so a small file that declares a
huge image (a decompression bomb) is refused without allocating it. A PNG's structure is then
checked completely (chunk lengths, CRCs, nothing after IEND) and its compressed streams are
inflated, counted and discarded, never beyond what the declared image needs, so an inflation bomb
costs milliseconds instead of gigabytes. Pixel formats are converted, never refused: 16-bit to
8-bit, grayscale to RGB, RGBA to RGB (alpha dropped), palette expanded.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

import cv2
import numpy as np

from lib.io import DecodeError, decode_image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
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

PNG_MAX_LENGTH = 2**31 - 1  # the spec's limit on a chunk length (libpng refuses larger)
PNG_MAX_CHUNKS = 50_000  # libpng writes 8 KiB IDAT chunks: a 20 MiB PNG has ~2,600 chunks
PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel
PNG_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
PNG_IDAT_MARGIN = 64 * 1024  # bytes tolerated beyond the exact image size (libpng ignores them)
PNG_METADATA_LIMIT = 8 * 1024 * 1024  # inflated bytes of zTXt/iTXt/iCCP in all; libpng's per-chunk cap
INFLATE_STEP = 1 << 20  # bytes of output per zlib call: memory stays bounded whatever the stream
INFLATE_INPUT_STEP = 1 << 16  # bytes of compressed input per zlib call


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


def png_raw_size(width: int, height: int, depth: int, colour_type: int, interlaced: bool) -> int:
    """Bytes of filtered scanlines the IDAT stream must inflate to (one filter byte per row)."""
    bits = depth * PNG_CHANNELS[colour_type]

    def rows(w: int, h: int) -> int:
        return h * (1 + (w * bits + 7) // 8) if w and h else 0  # an empty Adam7 pass has no rows

    if not interlaced:
        return rows(width, height)
    return sum(rows((width - x0 + dx - 1) // dx, (height - y0 + dy - 1) // dy) for x0, y0, dx, dy in ADAM7)


def inflate_bounded(pieces: Iterable[memoryview], limit: int, what: str) -> int:
    """Bytes that the zlib stream split over `pieces` inflates to; raises BadImage past `limit`.

    The output is counted and dropped INFLATE_STEP bytes at a time, so neither memory nor time
    depends on how far the stream would inflate. The stream must be valid, complete, and end
    exactly where its last piece ends.
    """
    inflater = zlib.decompressobj()
    produced = 0
    try:
        for piece in pieces:
            for start in range(0, len(piece), INFLATE_INPUT_STEP):  # slices keep unconsumed_tail small
                if inflater.eof:
                    raise BadImage(f"PNG {what} has data after the end of its compressed stream")
                chunk = piece[start : start + INFLATE_INPUT_STEP]
                while True:
                    want = min(INFLATE_STEP, limit + 1 - produced)
                    out = inflater.decompress(chunk, want)
                    produced += len(out)
                    if produced > limit:
                        raise BadImage(f"PNG {what} inflates to more than {limit} bytes")
                    chunk = inflater.unconsumed_tail
                    if not chunk and len(out) < want:  # input used up and nothing left inside zlib
                        break
                if inflater.unused_data:
                    raise BadImage(f"PNG {what} has data after the end of its compressed stream")
    except zlib.error as err:
        raise BadImage(f"PNG {what} is corrupt: {err}") from err
    if not inflater.eof:
        raise BadImage(f"PNG {what} ends before its compressed stream does")
    return produced


def png_metadata_stream(kind: bytes, body: memoryview) -> memoryview | None:
    """The compressed part of a zTXt, iCCP or compressed iTXt chunk (None: libpng inflates nothing)."""
    keyword_end = bytes(body[:80]).find(b"\x00")  # keywords are 1-79 bytes; libpng skips others
    if keyword_end < 1:
        return None
    if kind in (b"zTXt", b"iCCP"):
        return body[keyword_end + 2 :]  # after the NUL and the compression method byte
    if len(body) < keyword_end + 3 or body[keyword_end + 1] != 1:  # iTXt stored uncompressed
        return None
    rest = bytes(body[keyword_end + 3 :])
    language_end = rest.find(b"\x00")
    translated_end = rest.find(b"\x00", language_end + 1) if language_end >= 0 else -1
    return None if translated_end < 0 else body[keyword_end + 3 + translated_end + 1 :]


def check_png_stream(data: bytes) -> None:
    """Refuse a PNG whose chunk structure or compressed data is not what its IHDR declares.

    Every chunk must fit in the bytes that follow it and carry a valid CRC; IHDR must be valid and
    first, the IDAT chunks consecutive, IEND last with nothing after it. The IDAT stream must
    inflate to the declared image's scanlines (plus PNG_IDAT_MARGIN) and end there, and the
    compressed metadata libpng inflates (zTXt, iTXt, iCCP) to PNG_METADATA_LIMIT bytes in all.
    Called after read_header, so the image already fits the pixel limit.
    """
    view, end = memoryview(data), len(data)
    width, height, depth, colour_type, compression, filtering, interlace = struct.unpack_from(
        ">IIBBBBB", data, 16
    )
    if depth not in PNG_DEPTHS.get(colour_type, ()) or compression or filtering or interlace > 1:
        raise BadImage(
            f"PNG IHDR is invalid (bit depth {depth}, colour type {colour_type}, "
            f"compression {compression}, filter {filtering}, interlace {interlace})"
        )
    idat: list[memoryview] = []
    metadata: list[tuple[bytes, memoryview]] = []
    pos, count, idat_ended = 8, 0, False
    while True:
        if pos + 12 > end:
            raise BadImage(f"PNG ends at byte {end} without an IEND chunk")
        length, kind = struct.unpack_from(">I4s", data, pos)
        if length > PNG_MAX_LENGTH or length > end - pos - 12:
            raise BadImage(
                f"PNG chunk {kind!r} at byte {pos} claims {length} bytes; only {end - pos - 12} follow"
            )
        if not kind.isalpha():
            raise BadImage(f"PNG chunk type {kind!r} at byte {pos} is invalid")
        body = view[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack_from(">I", data, pos + 8 + length)
        if zlib.crc32(body, zlib.crc32(kind)) != crc:
            raise BadImage(f"PNG chunk {kind.decode()} at byte {pos} has a wrong CRC")
        pos += 12 + length
        count += 1
        if count > PNG_MAX_CHUNKS:
            raise BadImage(f"PNG has more than {PNG_MAX_CHUNKS} chunks")
        if kind == b"IDAT":
            if idat_ended:
                raise BadImage("PNG IDAT chunks are not consecutive")
            idat.append(body)
            continue
        idat_ended = bool(idat)
        if kind == b"IEND":
            break
        if kind == b"IHDR" and count > 1:
            raise BadImage("PNG has a second IHDR chunk")
        if kind in (b"zTXt", b"iTXt", b"iCCP"):
            stream = png_metadata_stream(kind, body)
            if stream is not None:
                metadata.append((kind, stream))
    if pos != end:
        raise BadImage(f"PNG has {end - pos} bytes after its IEND chunk")
    if not idat:
        raise BadImage("PNG has no image data (IDAT chunk)")

    expected = png_raw_size(width, height, depth, colour_type, bool(interlace))
    produced = inflate_bounded(idat, expected + PNG_IDAT_MARGIN, "image data (IDAT)")
    if produced < expected:
        raise BadImage(f"PNG image data inflates to {produced} bytes; {width}x{height} needs {expected}")
    budget = PNG_METADATA_LIMIT
    for kind, stream in metadata:
        what = f"{kind.decode()} chunk (metadata may inflate to {PNG_METADATA_LIMIT} bytes in all)"
        budget -= inflate_bounded([stream], budget, what)


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
