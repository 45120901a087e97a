"""Decompression bombs and parser differentials (issue 10), each reproducer built here byte by byte.

A bomb must be refused from its headers or a bounded scan: a 4xx in well under a second, with the
process's resident memory (now and at its peak) growing by less than 200 MB. The JPEG checks are
also held against libjpeg itself: the size the walk reads must be the size OpenCV decodes.
"""

from __future__ import annotations

import contextlib
import functools
import os
import resource
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import cv2
import falcon.testing
import numpy as np
import pytest

from serve.app import create_app
from serve.imagecheck import BadImage, ImageTooLarge, decode_checked, read_header, read_jpeg_size
from serve.png_stream import (
    PNG_IDAT_MARGIN,
    PNG_METADATA_LIMIT,
    PNG_SIGNATURE,
    check_png_stream,
    png_raw_size,
)
from serve.predictor import load_local
from serve.settings import Settings
from tests.support.tinymodel import write_tiny_model

MIB = 1 << 20
MAX_PIXELS = 25_000_000  # the serving default
MAX_SECONDS = 1.0  # per bomb, decode check or whole request
MAX_RSS_GROWTH = 200 * MIB
ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------
# Builders (also used by tests/test_serve_fuzz.py)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_ihdr(width: int, height: int, depth: int = 8, colour_type: int = 2, interlace: int = 0) -> bytes:
    return png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, interlace))


PNG_IEND = png_chunk(b"IEND", b"")


def png_file(ihdr: bytes, idat_stream: bytes, extra: bytes = b"") -> bytes:
    return PNG_SIGNATURE + ihdr + extra + png_chunk(b"IDAT", idat_stream) + PNG_IEND


def png_chunk_length_bomb() -> bytes:
    """Item 1, 61 bytes: a valid 1x1 IHDR, then a chunk that claims 0xff000000 bytes."""
    data = PNG_SIGNATURE + png_ihdr(1, 1) + b"\xff\x00\x00\x00" + b"IDAT" + bytes(8) + PNG_IEND
    assert len(data) == 61
    return data


@functools.cache
def _zero_blocks() -> tuple[bytes, bytes, bytes]:
    """zlib header + 1 MiB of zeros, the next 1 MiB of zeros, the empty final block (deflate level 9).

    After a full flush the compressor forgets its history, so every further MiB of zeros deflates
    to the same ~1 KB: a stream of N such blocks costs nothing to build and inflates to N MiB.
    """
    deflate = zlib.compressobj(9)
    head = deflate.compress(bytes(MIB)) + deflate.flush(zlib.Z_FULL_FLUSH)
    block = deflate.compress(bytes(MIB)) + deflate.flush(zlib.Z_FULL_FLUSH)
    final = deflate.flush()[:-4]  # drop the checksum: it covers only the two MiB fed here
    return head, block, final


def zeros_zlib_stream(compressed_bytes: int) -> bytes:
    """A valid zlib stream of zeros about `compressed_bytes` long that inflates about 1000 times larger."""
    head, block, final = _zero_blocks()
    blocks = max(0, (compressed_bytes - len(head)) // len(block))
    size = (1 + blocks) * MIB
    adler = ((size % 65521) << 16) | 1  # adler32 of `size` zero bytes
    return head + block * blocks + final + struct.pack(">I", adler)


def png_inflation_bomb(idat_bytes: int, width: int = 16, height: int = 16) -> bytes:
    """Item 3: an 8-bit RGB PNG whose IDAT (about `idat_bytes`) inflates to ~1000x as much."""
    return png_file(png_ihdr(width, height), zeros_zlib_stream(idat_bytes))


def png_metadata_bomb(chunks: int = 2) -> bytes:
    """A valid 16x16 PNG plus zTXt chunks that libpng inflates to 8 MB each (16-18 ms apiece)."""
    text = zlib.compress(bytes(PNG_METADATA_LIMIT - 1024), 9)
    ztxt = b"".join(png_chunk(b"zTXt", b"Comment%d\x00\x00" % i + text) for i in range(chunks))
    return png_file(png_ihdr(16, 16), zlib.compress(bytes(png_raw_size(16, 16, 8, 2, False))), ztxt)


def jpeg_image(height: int, width: int, progressive: bool = False) -> bytes:
    y, x = np.mgrid[:height, :width]
    bgr = np.dstack([x * 7 % 256, y * 5 % 256, (x + y) % 256]).astype(np.uint8)
    return cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_PROGRESSIVE, int(progressive)])[1].tobytes()


def jpeg_frame_header(data: bytes) -> tuple[int, int]:
    """(start, end) of the one frame header OpenCV writes (SOF0/SOF2), from its FF marker to its end."""
    start = min(i for i in (data.find(b"\xff\xc0"), data.find(b"\xff\xc2")) if i >= 0)
    return start, start + 2 + int.from_bytes(data[start + 2 : start + 4], "big")


def jpeg_with_size(data: bytes, width: int, height: int) -> bytes:
    """The same file with its frame header declaring width x height."""
    start, _ = jpeg_frame_header(data)
    return data[: start + 5] + struct.pack(">HH", height, width) + data[start + 9 :]


def jpeg_smuggled_frame(data: bytes, fake_width: int = 16, fake_height: int = 16) -> bytes:
    """Item 2: a stray FF 00 after SOI, two bytes, then a COM segment holding a fake frame header.

    libjpeg discards FF 00, skips the next two bytes as garbage and the COM segment by its length,
    and decodes the file's real frame. A walk that takes FF 00 for a marker reads the two bytes as
    its length (6) and lands inside the COM payload, on the fake frame header.
    """
    start, end = jpeg_frame_header(data)
    fake = jpeg_with_size(data[start:end], fake_width, fake_height)
    comment = b"\xff\xfe" + struct.pack(">H", 2 + len(fake)) + fake
    return b"\xff\xd8" + b"\xff\x00" + struct.pack(">H", 6) + comment + data[2:]


def jpeg_smuggled_frame_bomb() -> bytes:
    """Item 2's reproducer: headers of a 16000x16000 JPEG (256 Mpx) behind a fake 16x16 frame."""
    return jpeg_smuggled_frame(jpeg_with_size(jpeg_image(16, 16), 16_000, 16_000))


# ---------------------------------------------------------------------------------------------
# Cost of one refusal


def resident() -> tuple[int, int]:
    """(current, peak) resident set size of this process in bytes."""
    with open("/proc/self/status") as fh:
        current = next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))
    return current * 1024, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@contextlib.contextmanager
def bounded_cost():
    """The block must take under MAX_SECONDS and grow current and peak RSS by under MAX_RSS_GROWTH."""
    rss, peak = resident()
    start = time.perf_counter()
    yield
    elapsed = time.perf_counter() - start
    rss_after, peak_after = resident()
    assert elapsed < MAX_SECONDS, f"took {elapsed:.2f} s"
    assert rss_after - rss < MAX_RSS_GROWTH, f"RSS grew by {(rss_after - rss) / MIB:.0f} MiB"
    assert peak_after - peak < MAX_RSS_GROWTH, f"peak RSS grew by {(peak_after - peak) / MIB:.0f} MiB"


# ---------------------------------------------------------------------------------------------
# Item 1: chunk lengths


def test_png_chunk_length_bomb_is_refused_from_the_chunk_table():
    with bounded_cost(), pytest.raises(BadImage, match="claims 4278190080 bytes; only 16 follow"):
        decode_checked(png_chunk_length_bomb(), MAX_PIXELS)


@pytest.mark.parametrize("beyond, claim", [(1, 0), (1000, 0), (0, 2**31 - 1), (0, 2**31), (0, 2**32 - 1)])
def test_any_chunk_longer_than_the_rest_of_the_body_is_refused(beyond, claim):
    text = png_chunk(b"tEXt", b"a\x00b")
    data = bytearray(png_file(png_ihdr(4, 4), zlib.compress(bytes(png_raw_size(4, 4, 8, 2, False))), text))
    start = data.index(text)
    rest = len(data) - start - 12  # bytes that can follow the chunk's length, type and CRC
    data[start : start + 4] = struct.pack(">I", claim or rest + beyond)
    with bounded_cost(), pytest.raises(BadImage, match="claims"):
        check_png_stream(bytes(data))


def test_png_chunk_with_a_wrong_crc_is_refused():
    data = bytearray(png_file(png_ihdr(4, 4), zlib.compress(bytes(png_raw_size(4, 4, 8, 2, False)))))
    data[-20] ^= 1  # inside the IDAT chunk's data
    with pytest.raises(BadImage, match="IDAT at byte 33 has a wrong CRC"):
        check_png_stream(bytes(data))


def test_bytes_after_iend_are_refused():
    good = png_file(png_ihdr(4, 4), zlib.compress(bytes(png_raw_size(4, 4, 8, 2, False))))
    decode_checked(good, MAX_PIXELS)
    with pytest.raises(BadImage, match="3 bytes after its IEND"):
        check_png_stream(good + b"abc")


def test_split_idat_runs_are_refused():
    stream = zlib.compress(bytes(png_raw_size(4, 4, 8, 2, False)))
    idat = png_chunk(b"IDAT", stream[:5]) + png_chunk(b"tEXt", b"a\x00b") + png_chunk(b"IDAT", stream[5:])
    with pytest.raises(BadImage, match="not consecutive"):
        check_png_stream(PNG_SIGNATURE + png_ihdr(4, 4) + idat + PNG_IEND)


def test_many_tiny_chunks_are_refused_quickly():
    data = PNG_SIGNATURE + png_ihdr(4, 4) + png_chunk(b"tEXt", b"") * (20 * MIB // 12) + PNG_IEND
    with bounded_cost(), pytest.raises(BadImage, match="more than 50000 chunks"):
        check_png_stream(data)


# Item 3: inflation


@pytest.mark.parametrize("idat_mb", [1, 8, 16])
def test_png_inflation_bomb_is_refused_after_the_declared_size(idat_mb):
    data = png_inflation_bomb(idat_mb * 1_000_000)  # 16 MB of IDAT inflates to ~15.8 GB
    assert len(data) > idat_mb * 1_000_000 - 2000
    with bounded_cost(), pytest.raises(BadImage, match="inflates to more than"):
        decode_checked(data, MAX_PIXELS)


def test_idat_must_inflate_to_the_declared_size_plus_at_most_the_margin():
    expected = png_raw_size(16, 16, 8, 2, False)
    ihdr = png_ihdr(16, 16)
    _, rgb = decode_checked(png_file(ihdr, zlib.compress(bytes(expected))), MAX_PIXELS)
    assert rgb.shape == (16, 16, 3)
    check_png_stream(png_file(ihdr, zlib.compress(bytes(expected + PNG_IDAT_MARGIN))))
    with pytest.raises(BadImage, match="inflates to more than"):
        check_png_stream(png_file(ihdr, zlib.compress(bytes(expected + PNG_IDAT_MARGIN + 1))))
    with pytest.raises(BadImage, match=f"needs {expected}"):
        check_png_stream(png_file(ihdr, zlib.compress(bytes(expected - 1))))


def test_data_after_the_zlib_stream_is_refused():
    stream = zlib.compress(bytes(png_raw_size(4, 4, 8, 2, False)))
    with pytest.raises(BadImage, match="after the end of its compressed stream"):
        check_png_stream(png_file(png_ihdr(4, 4), stream + b"\x00"))
    idat = png_chunk(b"IDAT", stream) + png_chunk(b"IDAT", b"\x00")  # the same, one chunk later
    with pytest.raises(BadImage, match="after the end of its compressed stream"):
        check_png_stream(PNG_SIGNATURE + png_ihdr(4, 4) + idat + PNG_IEND)


def test_unfinished_or_corrupt_zlib_stream_is_refused():
    stream = zlib.compress(bytes(png_raw_size(4, 4, 8, 2, False)))
    with pytest.raises(BadImage, match="ends before its compressed stream"):
        check_png_stream(png_file(png_ihdr(4, 4), stream[:-4]))
    with pytest.raises(BadImage, match="corrupt"):
        check_png_stream(png_file(png_ihdr(4, 4), b"\x78\x9c\xff\xff\xff"))


def test_compressed_metadata_is_bounded_too():
    check_png_stream(png_metadata_bomb(chunks=1))  # one chunk fits the metadata allowance
    reason = r"zTXt chunk \(metadata may inflate to 8388608 bytes in all\) inflates to more than"
    with bounded_cost(), pytest.raises(BadImage, match=reason):
        decode_checked(png_metadata_bomb(chunks=2), MAX_PIXELS)


# The expected size must be exactly libpng's, interlaced or not, at every depth and colour type.
COLOUR_DEPTHS = [(0, 1), (0, 2), (0, 4), (0, 16), (2, 8), (2, 16), (3, 1), (3, 4), (4, 8), (6, 16)]
SIZE_CASES = [
    (w, h, depth, colour_type, interlace)
    for colour_type, depth in COLOUR_DEPTHS
    for w, h in [(1, 1), (3, 2), (5, 9), (9, 5)]
    for interlace in (0, 1)
]


@pytest.mark.parametrize("w, h, depth, colour_type, interlace", SIZE_CASES)
def test_png_raw_size_is_what_libpng_needs(w, h, depth, colour_type, interlace):
    size = png_raw_size(w, h, depth, colour_type, bool(interlace))
    ihdr = png_ihdr(w, h, depth, colour_type, interlace)
    palette = png_chunk(b"PLTE", bytes(3 * 256)) if colour_type == 3 else b""

    def decode(n):
        return cv2.imdecode(np.frombuffer(png_file(ihdr, zlib.compress(bytes(n)), palette), np.uint8), -1)

    assert decode(size) is not None and decode(size).shape[:2] == (h, w)
    assert decode(size - 1) is None  # libpng: "Not enough image data"
    check_png_stream(png_file(ihdr, zlib.compress(bytes(size)), palette))


# ---------------------------------------------------------------------------------------------
# Item 2: the JPEG frame header libjpeg uses


def test_smuggled_frame_bomb_is_413_from_its_headers():
    data = jpeg_smuggled_frame_bomb()
    assert len(data) < 2000
    with bounded_cost(), pytest.raises(ImageTooLarge, match="16000x16000"):
        decode_checked(data, MAX_PIXELS)


def jpeg_layouts() -> dict[str, bytes]:
    """Files libjpeg accepts (some with warnings) whose frame header a naive walk can misread."""
    real = jpeg_image(30, 40)
    start, end = jpeg_frame_header(real)
    fake_sof = jpeg_with_size(real[start:end], 16, 16)
    thumb = jpeg_image(5, 7)
    app1 = b"\xff\xe1" + struct.pack(">H", 2 + 6 + len(thumb)) + b"Exif\x00\x00" + thumb
    comment = b"\xff\xfe" + struct.pack(">H", 2 + len(fake_sof)) + fake_sof
    app0_end = 4 + int.from_bytes(real[4:6], "big")  # garbage right after SOI: OpenCV sees no JPEG at all
    return {
        "stray FF 00 then COM with a fake frame": jpeg_smuggled_frame(real),
        "FF FF 00 then COM": b"\xff\xd8\xff\xff\x00\x00\x06" + comment + real[2:],
        "garbage before a marker": real[:app0_end] + b"\x00\x01\x02garbage" + real[app0_end:],
        "fill bytes before markers": real[:2] + b"\xff" * 9 + real[2:start] + b"\xff\xff" + real[start:],
        "EXIF thumbnail": real[:2] + app1 + real[2:],
        "COM with a fake frame": real[:2] + comment + real[2:],
        "garbage that looks like a length": real[:app0_end] + b"\x00\x40" + comment + real[app0_end:],
        "progressive": jpeg_image(30, 40, progressive=True),
    }


@pytest.mark.parametrize("name", list(jpeg_layouts()))
def test_jpeg_walk_reads_the_frame_libjpeg_decodes(name):
    data = jpeg_layouts()[name]
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert decoded is not None and decoded.shape[:2] == (30, 40)  # what libjpeg itself sees
    assert read_jpeg_size(data) == (40, 30)
    header, rgb = decode_checked(data, MAX_PIXELS)
    assert (header.width, header.height) == (40, 30) and rgb.shape == (30, 40, 3)


def test_jpeg_walk_agrees_with_libjpeg_on_random_layouts():
    """Garbage, FF 00 pairs, fill bytes and fake frames in COM/APPn, between real segments."""
    rng = np.random.default_rng(10)
    real = jpeg_image(30, 40)
    start, end = jpeg_frame_header(real)
    fake_sof = jpeg_with_size(real[start:end], 16, 16)
    cuts = [2, start, end]  # segment boundaries before the scan
    agreed = 0
    for _ in range(200):
        data = real
        for cut in sorted(rng.choice(cuts, size=int(rng.integers(1, 4))), reverse=True):
            kind = rng.integers(0, 4)
            if kind == 0:
                insert = bytes(rng.integers(0, 255, int(rng.integers(1, 9)), dtype=np.uint8))  # no 0xFF
            elif kind == 1:
                garbage = bytes(rng.integers(0, 255, 2, dtype=np.uint8))
                insert = b"\xff\x00" * int(rng.integers(1, 4)) + garbage
            elif kind == 2:
                insert = b"\xff" * int(rng.integers(1, 5))
            else:
                marker = bytes([int(rng.choice([0xFE, 0xE0, 0xE1, 0xED]))])
                insert = b"\xff" + marker + struct.pack(">H", 2 + len(fake_sof)) + fake_sof
            data = data[:cut] + insert + data[cut:]
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        try:
            size = read_jpeg_size(data)
        except BadImage:
            assert decoded is None, "refused a file libjpeg decodes"
            continue
        if decoded is not None:
            assert size == (decoded.shape[1], decoded.shape[0])
            agreed += 1
    assert agreed > 150


@pytest.mark.parametrize(
    "marker", [b"\xff\xc5", b"\xff\xc8", b"\xff\xcf", b"\xff\xde", b"\xff\xf0", b"\xff\x02", b"\xff\xd8"]
)
def test_markers_libjpeg_refuses_are_refused(marker):
    data = jpeg_image(8, 8)
    data = data[:2] + marker + b"\x00\x04\x00\x00" + data[2:]
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) is None
    with pytest.raises(BadImage):
        read_jpeg_size(data)


@pytest.mark.parametrize(
    "body",
    [b"\xff\x00" * (5 * MIB), b"\xff" * (10 * MIB), bytes(10 * MIB), b"\xff\xfe\x00\x02" * (2 * MIB)],
    ids=["stuffed zeros", "fill bytes", "garbage", "empty comments"],
)
def test_jpeg_header_floods_are_refused_quickly(body):
    with bounded_cost(), pytest.raises(BadImage):
        read_header(b"\xff\xd8" + body + b"\xff\xd9", MAX_PIXELS)


def test_opencv_refuses_images_over_the_serving_limit_by_itself():
    """The backstop: importing serve sets OPENCV_IO_MAX_IMAGE_PIXELS before cv2 is loaded."""
    code = (
        "import serve, cv2, numpy as np\n"
        "data = cv2.imencode('.jpg', np.zeros((20, 20, 3), np.uint8))[1]\n"
        "try:\n    print(cv2.imdecode(data, cv2.IMREAD_UNCHANGED).shape)\n"
        "except cv2.error:\n    print('refused')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OPENCV_IO_MAX_IMAGE_PIXELS"}
    for limit, expected in (("399", "refused"), ("400", "(20, 20, 3)")):
        run = subprocess.run(
            [sys.executable, "-c", code],
            env={**env, "POLYPSEG_MAX_PIXELS": limit},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.stdout.strip() == expected, run.stderr[-2000:]


# ---------------------------------------------------------------------------------------------
# Through the API


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    model = load_local(write_tiny_model(tmp_path_factory.mktemp("model"), size=64))
    settings = Settings(max_body_bytes=32 * MIB, max_pixels=MAX_PIXELS)
    return falcon.testing.TestClient(create_app(model, settings))


BAD_PNG = ("image/png", 400, "Invalid image")
API_BOMBS = {  # name: (build, content type, status, title)
    "png chunk length (item 1)": (png_chunk_length_bomb, *BAD_PNG),
    "png 1 MB inflation (item 3)": (lambda: png_inflation_bomb(1_000_000), *BAD_PNG),
    "png 8 MB inflation (item 3)": (lambda: png_inflation_bomb(8_000_000), *BAD_PNG),
    "png 16 MB inflation (item 3)": (lambda: png_inflation_bomb(16_000_000), *BAD_PNG),
    "png zTXt inflation": (lambda: png_metadata_bomb(3), *BAD_PNG),
    "jpeg smuggled frame (item 2)": (jpeg_smuggled_frame_bomb, "image/jpeg", 413, "Image too large"),
}


@pytest.mark.parametrize("name", list(API_BOMBS))
def test_bombs_are_fast_json_4xx_through_the_api(client, name):
    build, content_type, status, title = API_BOMBS[name]
    body = build()
    with bounded_cost():
        result = client.simulate_post("/predict", body=body, headers={"Content-Type": content_type})
    assert result.status_code == status, result.text
    assert result.json["title"] == title and result.json["description"]
    good = client.simulate_post("/predict", body=jpeg_image(30, 40), headers={"Content-Type": "image/jpeg"})
    assert good.status_code == 200 and good.json["width"] == 40
