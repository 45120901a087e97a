"""The request edge: query parameters, the body, the image bytes, browser origins; PNG encoding.

Every refusal is a 4xx with a title and a description.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import cv2
import falcon
import numpy as np
from falcon.media.multipart import MultipartFormHandler, MultipartParseError, MultipartParseOptions

from serve.deadline import ReadTimeout

RAW_IMAGE_TYPES = ("image/jpeg", "image/jpg", "image/png")
MASK_FORMATS = ("png", "rle", "prob")
FORM_FILE_FIELDS = ("file", "image")  # a single image may come in either
BATCH_FIELD = "image"  # several images: each a file part of this name (curl -F image=@a.jpg -F image=@b.jpg)


def parse_threshold(raw: str | None, default: float) -> float:
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise falcon.HTTPBadRequest(
            title="Invalid threshold", description=f"threshold must be a number in [0, 1], got {raw[:40]!r}"
        )
    return value


def parse_format(raw: str | None) -> str:
    value = raw or "png"
    if value not in MASK_FORMATS:
        raise falcon.HTTPBadRequest(
            title="Invalid format",
            description=f"format must be one of {', '.join(MASK_FORMATS)}; got {value[:40]!r}",
        )
    return value


def read_body(req: falcon.Request, limit: int) -> bytes:
    """The request body, refusing anything over `limit` bytes (declared or actually sent)."""
    try:
        return _read_body(req, limit)
    except ReadTimeout as err:  # serve/worker.py: the request's read deadline passed
        raise falcon.HTTPError(
            falcon.HTTP_408, title="Request timeout", description=str(err)
        ) from err  # the worker closes the connection after this answer
    except OSError as err:
        # The WSGI server decodes the framing: gunicorn raises InvalidChunkSize, ChunkMissingTerminator,
        # NoMoreData (all IOError) for a broken chunked body or a client that stops sending.
        raise falcon.HTTPBadRequest(
            title="Malformed request body",
            description=f"the request body could not be read ({type(err).__name__}); "
            "check its Transfer-Encoding: chunked framing",
        ) from err


def _read_body(req: falcon.Request, limit: int) -> bytes:
    too_large = falcon.HTTPContentTooLarge(
        title="Body too large", description=f"the request body exceeds the limit of {limit} bytes"
    )
    length = req.content_length
    if length is not None:
        if length > limit:
            # Read and drop a body up to twice the limit, so a client that sends it all before
            # reading the answer sees the 413 instead of a reset; anything larger is cut off unread.
            if length <= 2 * limit:
                while req.bounded_stream.read(1 << 20):
                    pass
            raise too_large
        return req.bounded_stream.read()
    data = req.stream.read(limit + 1)  # no Content-Length (chunked): read one byte past the limit
    if len(data) > limit:
        raise too_large
    return data


@dataclass(frozen=True)
class Upload:
    """One image as received: its bytes and, from a multipart form, the part's filename."""

    data: bytes
    filename: str | None = None


def _part_names(part) -> tuple[str | None, str | None]:
    try:
        return part.name, part.filename
    except UnicodeDecodeError as err:  # falcon decodes Content-Disposition as UTF-8 and lets this escape
        raise MultipartParseError(
            description="a part's Content-Disposition header is not valid UTF-8"
        ) from err


def uploads_from_form(body: bytes, content_type: str, limit: int, max_images: int) -> list[Upload]:
    """The image parts of a multipart/form-data body, in order.

    One image: the first part named `file` or `image`, or with a filename; other parts are ignored.
    Several images (a batch): every part must be a file part (with a filename) named `image`, and
    at most `max_images` of them (413 beyond, counted while reading, so no more parts are read).
    """
    options = MultipartParseOptions()
    options.max_body_part_buffer_size = limit
    form = MultipartFormHandler(options).deserialize(io.BytesIO(body), content_type, len(body))
    images: list[Upload] = []
    parts: list[tuple[int, str | None, str | None]] = []  # (position, name, filename) of every part
    try:
        for position, part in enumerate(form):
            name, filename = _part_names(part)
            parts.append((position, name, filename))
            if name in FORM_FILE_FIELDS or filename:
                if len(images) == max_images:
                    raise falcon.HTTPContentTooLarge(
                        title="Too many images",
                        description=f"a request may carry at most {max_images} images "
                        "(POLYPSEG_MAX_BATCH_IMAGES); send the rest in another request",
                    )
                images.append(Upload(part.get_data(), filename))
    except MultipartParseError:
        # A single-image form was always read only up to its image part, so whatever follows it,
        # even unparseable, was never looked at: keep answering such a form as before.
        if len(images) != 1:
            raise
        return images
    if not images:
        raise falcon.HTTPBadRequest(
            title="No image in form", description="multipart/form-data body needs a file field named 'file'"
        )
    if len(images) > 1:
        for position, name, filename in parts:
            if name != BATCH_FIELD or not filename:
                what = f"field {name!r}" + ("" if filename else " without a filename")
                raise falcon.HTTPBadRequest(
                    title="Invalid batch form",
                    description=f"form part {position} ({what[:80]}): a request with several images must "
                    f"send each as a file part named {BATCH_FIELD!r} and nothing else",
                )
    return images


def read_uploads(req: falcon.Request, limit: int, max_images: int) -> list[Upload]:
    """The request's images: the raw body (one), or the file parts of a multipart form (one or more)."""
    media_type = (req.content_type or "").split(";")[0].strip().lower()
    if media_type not in RAW_IMAGE_TYPES and media_type != "multipart/form-data":
        raise falcon.HTTPUnsupportedMediaType(
            title="Unsupported content type",
            description="send the image as image/jpeg, image/png or multipart/form-data; "
            f"got {media_type[:60] or 'no Content-Type'!r}",
        )
    body = read_body(req, limit)
    if not body:
        raise falcon.HTTPBadRequest(
            title="Empty body", description="the request body is empty; send a JPEG or PNG"
        )
    if media_type == "multipart/form-data":
        return uploads_from_form(body, req.content_type, limit, max_images)
    return [Upload(body)]


def encode_png(gray: np.ndarray) -> bytes:
    # Level 1 with the "up" filter: 2-3x faster than OpenCV's adaptive default, about as small.
    params = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP]
    ok, buf = cv2.imencode(".png", gray, params)
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def allow_cross_origin(req: falcon.Request, resp: falcon.Response, allowed: tuple[str, ...]) -> None:
    """Refuse a browser request from another web origin unless that origin is listed (403).

    Without this a page on any site could make visitors' browsers POST images here: the browser hides
    the answer from that page, but the work is done. Same-origin requests (the demo page) and clients
    that send no Origin header (curl, scripts) pass; listed origins get the CORS headers they need.
    """
    origin = req.get_header("Origin")
    if origin is None:
        return
    if origin in allowed or "*" in allowed:
        resp.set_header("Access-Control-Allow-Origin", origin)
        resp.set_header("Access-Control-Expose-Headers", "X-Request-ID, Retry-After")
        resp.append_header("Vary", "Origin")
        return
    host = (req.get_header("Host") or "").lower()
    if origin.lower().split("://", 1)[-1] == host and host:
        return
    raise falcon.HTTPForbidden(
        title="Cross-origin request refused",
        description="this origin may not call the API from a browser; the operator can list it in "
        "POLYPSEG_CORS_ORIGINS",
    )
