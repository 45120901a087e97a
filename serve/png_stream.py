"""A PNG's structure checked completely before libpng sees it.

Chunk lengths against the body, CRCs, nothing after IEND, and the compressed streams (IDAT, and
zTXt/iTXt/iCCP metadata) inflated in bounded steps, counted and discarded, never beyond what the
declared image needs: an inflation bomb costs milliseconds instead of gigabytes.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable

from serve.image_errors import BadImage

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_MAX_LENGTH = 2**31 - 1  # the spec's limit on a chunk length (libpng refuses larger)
PNG_MAX_CHUNKS = 50_000  # libpng writes 8 KiB IDAT chunks: a 20 MiB PNG has ~2,600 chunks
PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel
PNG_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
PNG_IDAT_MARGIN = 64 * 1024  # bytes tolerated beyond the exact image size (libpng ignores them)
PNG_METADATA_LIMIT = 8 * 1024 * 1024  # inflated bytes of zTXt/iTXt/iCCP in all; libpng's per-chunk cap
INFLATE_STEP = 1 << 20  # bytes of output per zlib call: memory stays bounded whatever the stream
INFLATE_INPUT_STEP = 1 << 16  # bytes of compressed input per zlib call


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
