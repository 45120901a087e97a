"""Checks on untrusted image bytes (serve/imagecheck.py) and the pixel-format conversions it relies on."""

import struct
import time
import zlib

import cv2
import numpy as np
import pytest

from serve.imagecheck import (
    BadImage,
    ImageTooLarge,
    decode_checked,
    read_header,
    read_jpeg_size,
    read_png_size,
)

LIMIT = 1_000_000  # pixels


def png(array: np.ndarray) -> bytes:
    return cv2.imencode(".png", array)[1].tobytes()


def jpeg(array: np.ndarray, progressive: bool = False) -> bytes:
    return cv2.imencode(".jpg", array, [cv2.IMWRITE_JPEG_PROGRESSIVE, int(progressive)])[1].tobytes()


def png_header_only(width: int, height: int) -> bytes:
    """Signature + IHDR (8-bit RGB) and nothing else: what a decompression bomb's header looks like."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk


def jpeg_header_only(width: int, height: int) -> bytes:
    """SOI, a JFIF APP0 segment and a baseline SOF0 frame header declaring width x height."""
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof0 = (
        b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, height, width, 3) + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    )
    return b"\xff\xd8" + app0 + sof0 + b"\xff\xd9"


def rgb_image(h: int = 23, w: int = 17) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_png_size_comes_from_ihdr():
    assert read_png_size(png(rgb_image(23, 17))) == (17, 23)


@pytest.mark.parametrize("progressive", [False, True])
def test_jpeg_size_comes_from_frame_header(progressive):
    assert read_jpeg_size(jpeg(rgb_image(23, 17), progressive)) == (17, 23)


def test_jpeg_fill_bytes_before_a_marker_are_skipped():
    data = jpeg(rgb_image(9, 11))
    padded = data[:2] + b"\xff\xff\xff" + data[2:]  # fill bytes are legal before any marker
    assert read_jpeg_size(padded) == (11, 9)


def test_exif_thumbnail_frame_is_not_mistaken_for_the_image():
    thumb = jpeg(rgb_image(5, 7))
    main = jpeg(rgb_image(40, 30))
    payload = b"Exif\x00\x00" + thumb
    app1 = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    data = main[:2] + app1 + main[2:]
    assert read_jpeg_size(data) == (30, 40)
    header, rgb = decode_checked(data, LIMIT)
    assert (header.width, header.height) == (30, 40)
    assert rgb.shape == (40, 30, 3)


def test_header_format_is_sniffed_from_bytes():
    assert read_header(png(rgb_image()), LIMIT).format == "png"
    assert read_header(jpeg(rgb_image()), LIMIT).format == "jpeg"


@pytest.mark.parametrize(
    "data",
    [b"", b"GIF89a\x01\x00\x01\x00", b"hello world", b"BM" + bytes(60), b"\x89PNG\r\n\x1a\n"],
    ids=["empty", "gif", "text", "bmp", "png-signature-only"],
)
def test_non_jpeg_png_bytes_are_bad(data):
    with pytest.raises(BadImage):
        read_header(data, LIMIT)


def test_png_with_wrong_first_chunk_is_bad():
    data = bytearray(png(rgb_image()))
    data[12:16] = b"IDAT"
    with pytest.raises(BadImage):
        read_header(bytes(data), LIMIT)


def test_jpeg_without_frame_header_is_bad():
    with pytest.raises(BadImage):
        read_header(b"\xff\xd8\xff\xda\x00\x08" + bytes(20) + b"\xff\xd9", LIMIT)


def test_jpeg_soi_not_followed_by_a_marker_is_not_a_jpeg():
    data = b"\xff\xd8\x00\x01" + jpeg(rgb_image(9, 11))[2:]
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) is None  # nor for OpenCV
    with pytest.raises(BadImage, match="not a JPEG or PNG"):
        read_header(data, LIMIT)


def test_jpeg_without_any_marker_after_soi_is_bad():
    with pytest.raises(BadImage, match="no frame header"):
        read_header(b"\xff\xd8\xff\x00\x01\x02\x03" + bytes(20), LIMIT)


def test_jpeg_garbage_between_segments_is_skipped_as_libjpeg_does():
    data = jpeg(rgb_image(9, 11))
    cut = 4 + int.from_bytes(data[4:6], "big")  # after the JFIF APP0 segment
    data = data[:cut] + b"\x00junk\xff\x00" + data[cut:]  # libjpeg warns "extraneous bytes" and decodes
    header, rgb = decode_checked(data, LIMIT)
    assert (header.width, header.height) == (11, 9) and rgb.shape == (9, 11, 3)


@pytest.mark.parametrize("data", [png_header_only(0, 10), png_header_only(10, 0), jpeg_header_only(10, 0)])
def test_zero_size_is_bad(data):
    with pytest.raises(BadImage, match="zero size"):
        read_header(data, LIMIT)


@pytest.mark.parametrize("data", [png_header_only(100_000, 100_000), jpeg_header_only(65_000, 65_000)])
def test_huge_declared_size_is_refused_before_decoding(data):
    start = time.perf_counter()
    with pytest.raises(ImageTooLarge, match="limit"):
        decode_checked(data, LIMIT)
    assert time.perf_counter() - start < 0.1  # nothing was allocated or decoded


def test_size_exactly_at_the_limit_passes_the_header_check():
    assert read_header(png_header_only(1000, 1000), LIMIT).width == 1000


@pytest.mark.parametrize(
    "kind, reason", [("jpeg", "cannot be decoded"), ("png", "claims .* bytes; only .* follow")]
)
def test_truncated_image_is_bad(kind, reason):
    data = jpeg(rgb_image(64, 64)) if kind == "jpeg" else png(rgb_image(64, 64))
    with pytest.raises(BadImage, match=reason):  # a PNG's chunk table already says it is cut short
        decode_checked(data[: len(data) // 2], LIMIT)


def test_corrupt_png_data_is_bad():
    data = bytearray(png(rgb_image(64, 64)))
    data[60:80] = bytes(20)  # inside IDAT: CRC and zlib stream break
    with pytest.raises(BadImage):
        decode_checked(bytes(data), LIMIT)


# Pixel formats: converted, never refused (the documented policy).


def test_colour_png_is_returned_as_rgb():
    bgr = rgb_image()
    _, rgb = decode_checked(png(bgr), LIMIT)
    np.testing.assert_array_equal(rgb, bgr[..., ::-1])


def test_16_bit_png_keeps_the_high_byte():
    bgr16 = (rgb_image().astype(np.uint16) << 8) | 0x7F
    _, rgb = decode_checked(png(bgr16), LIMIT)
    assert rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb, (bgr16 >> 8).astype(np.uint8)[..., ::-1])


@pytest.mark.parametrize("encode", [png, jpeg], ids=["png", "jpeg"])
def test_grayscale_becomes_three_equal_channels(encode):
    gray = np.full((12, 10), 77, np.uint8)
    _, rgb = decode_checked(encode(gray), LIMIT)
    assert rgb.shape == (12, 10, 3)
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()


def test_16_bit_grayscale_png_is_converted():
    gray16 = np.full((8, 8), 0x8000, np.uint16)
    _, rgb = decode_checked(png(gray16), LIMIT)
    assert rgb.shape == (8, 8, 3) and rgb.dtype == np.uint8 and (rgb == 0x80).all()


def test_rgba_png_drops_alpha():
    bgra = np.dstack([rgb_image(), np.zeros((23, 17), np.uint8)])  # fully transparent
    _, rgb = decode_checked(png(bgra), LIMIT)
    np.testing.assert_array_equal(rgb, bgra[..., 2::-1])


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_raw(
    width: int, height: int, depth: int, colour_type: int, rows: list[bytes], extra: bytes = b""
) -> bytes:
    """A hand-made PNG, for pixel formats OpenCV cannot write (palette, gray+alpha, 1-bit)."""
    chunk = png_chunk
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    idat = zlib.compress(b"".join(b"\x00" + row for row in rows))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + extra + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_palette_png_is_expanded():
    palette = struct.pack("9B", 255, 0, 0, 0, 255, 0, 0, 0, 255)
    data = png_raw(3, 1, 8, 3, [bytes([0, 1, 2])], extra=png_chunk(b"PLTE", palette))
    _, rgb = decode_checked(data, LIMIT)
    assert rgb[0].tolist() == [[255, 0, 0], [0, 255, 0], [0, 0, 255]]


def test_gray_alpha_png_drops_alpha():
    data = png_raw(2, 1, 8, 4, [bytes([10, 255, 20, 0])])
    _, rgb = decode_checked(data, LIMIT)
    assert rgb[0].tolist() == [[10, 10, 10], [20, 20, 20]]


def test_one_bit_png_becomes_black_and_white():
    _, rgb = decode_checked(png_raw(4, 1, 1, 0, [bytes([0b10100000])]), LIMIT)
    assert rgb[0, :, 0].tolist() == [255, 0, 255, 0]


def test_cmyk_jpeg_becomes_rgb():
    pil = pytest.importorskip("PIL.Image")
    import io

    buf = io.BytesIO()
    pil.new("CMYK", (5, 4), (0, 255, 255, 0)).save(buf, "JPEG")  # pure red in CMYK
    _, rgb = decode_checked(buf.getvalue(), LIMIT)
    assert rgb.shape == (4, 5, 3) and rgb[0, 0, 0] > 240 and rgb[0, 0, 1:].max() < 20
