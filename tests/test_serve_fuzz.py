"""Fuzz /predict with mutated real images: no 5xx, every refusal is a JSON 4xx, the server stays up."""

import collections
import json
import os
import struct
import time
import urllib.parse
from pathlib import Path

import cv2
import falcon.testing
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_image_bombs import (
    jpeg_smuggled_frame,
    jpeg_with_size,
    png_chunk,
    png_inflation_bomb,
    png_metadata_bomb,
)

from serve.app import create_app
from serve.predictor import load_local
from serve.settings import Settings
from tests.support.harness import Gunicorn, raw_exchange, sample_image_bytes
from tests.support.tinymodel import write_tiny_model

# Payloads: 1000 in make ci (a few seconds); `make bench-fuzz` runs 10,000 and writes a report.
CASES = int(os.environ.get("POLYPSEG_FUZZ_CASES", "1000"))
REPORT = os.environ.get("POLYPSEG_FUZZ_REPORT")  # a JSON summary of the run, when set
MAX_PIXELS = 4_000_000
BOMB_SECONDS = 1.0  # a bomb must be refused within this, whatever it would inflate to
# Mostly valid request framing, so most payloads reach the image checks and the decoder.
GOOD_CONTENT_TYPES = ["image/jpeg", "image/png", "multipart/form-data; boundary=fuzz"]
BAD_CONTENT_TYPES = [
    "image/jpg",
    "multipart/form-data",
    "application/octet-stream",
    "text/plain",
    "image/gif",
    "",
    "image/png; charset=utf-8",
    "IMAGE/JPEG",
    "multipart/form-data; boundary=" + "b" * 80,
]
GOOD_THRESHOLDS = [None, "0", "0.5", "1", "1e-3", "0.25"]
BAD_THRESHOLDS = ["-1", "2", "nan", "inf", "", "abc", "0x1", "0.5" * 20]
GOOD_FORMATS = [None, "png", "rle", "prob"]
BAD_FORMATS = ["", "PNG", "json"]
ACCEPTS = [
    None,
    "application/json",
    "image/png",
    "*/*",
    "text/html",
    "image/png;q=0.1, application/json",
    "@@@",
]


def pick(rng, good, bad, p_good):
    return rng.choice(good) if rng.random() < p_good else rng.choice(bad)


HTTP = os.environ.get("POLYPSEG_FUZZ_HTTP") == "1"  # through a real gunicorn instead of in process


class HttpResult:
    def __init__(self, status: int, headers: dict, body: bytes):
        self.status_code, self.status, self.headers, self.content = status, str(status), headers, body
        self.text = body.decode("utf-8", "replace")

    @property
    def json(self):
        return json.loads(self.content)


class HttpClient:
    """falcon.testing.TestClient's calls used below, sent as raw HTTP/1.1 to a gunicorn on loopback.

    Raw bytes, not http.client: header values with control characters go out as they are, as an
    attacker would send them.
    """

    def __init__(self, port: int):
        self.port = port

    def simulate_request(self, method, path, body=b"", headers=None, params=None):
        query = ("?" + urllib.parse.urlencode(params)) if params else ""
        lines = [f"{method} {path}{query} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        lines.append(f"Content-Length: {len(body)}")
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace") + body
        status, resp_headers, content = raw_exchange(self.port, request, timeout=30)
        return HttpResult(status, resp_headers, content)

    def simulate_post(self, path, **kwargs):
        return self.simulate_request("POST", path, **kwargs)

    def simulate_get(self, path, **kwargs):
        return self.simulate_request("GET", path, **kwargs)


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    model_path = write_tiny_model(tmp_path_factory.mktemp("model"), size=64)
    if HTTP:
        env = {"POLYPSEG_MAX_BODY_BYTES": "2000000", "POLYPSEG_MAX_PIXELS": str(MAX_PIXELS)}
        with Gunicorn(model_path, workers=2, env=env) as server:
            yield HttpClient(server.port)
        return
    settings = Settings(max_body_bytes=2_000_000, max_pixels=MAX_PIXELS)
    yield falcon.testing.TestClient(create_app(load_local(model_path), settings))


@pytest.fixture(scope="module")
def seeds():
    """A real Kvasir JPEG, and the same frame as a smaller PNG and progressive JPEG."""
    jpeg = sample_image_bytes()
    bgr = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    small = cv2.resize(bgr, (160, 136), interpolation=cv2.INTER_AREA)
    png = cv2.imencode(".png", small)[1].tobytes()
    progressive = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes()
    return [jpeg, png, progressive]


def bomb(data: bytes, rng: np.random.Generator) -> tuple[str, bytes]:
    """One of the issue-10 bomb families (tests/test_image_bombs.py) with random sizes: a fast 4xx each."""
    if data.startswith(b"\x89PNG"):
        family = str(rng.choice(["png-chunk-length", "png-inflation", "png-after-iend", "png-ztxt"]))
        if family == "png-chunk-length":  # any chunk after IHDR claims more bytes than follow it
            starts, pos = [], 33
            while pos + 8 <= len(data):
                starts.append(pos)
                pos += 12 + int.from_bytes(data[pos : pos + 4], "big")
            start = int(rng.choice(starts))
            claim = int(rng.integers(len(data) - start - 11, 2**32))
            return family, data[:start] + struct.pack(">I", claim) + data[start + 4 :]
        if family == "png-inflation":  # up to ~1.5 GB from a 1.5 MB body
            width, height = (int(v) for v in rng.integers(1, 200, 2))
            return family, png_inflation_bomb(int(rng.integers(2_000, 1_500_000)), width, height)
        if family == "png-after-iend":
            return family, data + png_chunk(b"IDAT", rng.bytes(int(rng.integers(0, 100))))
        return family, png_metadata_bomb(int(rng.integers(2, 4)))
    # JPEG: the real frame declares more than MAX_PIXELS, behind a fake small frame or none
    family = str(rng.choice(["jpeg-smuggled-frame", "jpeg-huge-frame"]))
    width = int(rng.integers(MAX_PIXELS // 65_535 + 1, 65_536))
    height = int(rng.integers(MAX_PIXELS // width + 1, 65_536))
    huge = jpeg_with_size(data, width, height)
    if family == "jpeg-huge-frame":
        return family, huge
    fake_width, fake_height = (int(v) for v in rng.integers(1, 2000, 2))
    return family, jpeg_smuggled_frame(huge, fake_width, fake_height)


def mutate(data: bytes, rng: np.random.Generator) -> tuple[str, bytes]:
    buf = bytearray(data)
    kind = rng.choice(
        ["flip", "flip-header", "truncate", "random-header", "splice", "zero-run", "random", "repeat", "bomb"]
    )
    if kind == "bomb":
        return bomb(data, rng)
    if kind == "flip":
        for pos in rng.integers(0, len(buf), rng.integers(1, 30)):
            buf[pos] ^= 1 << int(rng.integers(0, 8))
    elif kind == "flip-header":  # the first bytes hold the IHDR / SOF sizes the server checks first
        for pos in rng.integers(0, min(len(buf), 400), rng.integers(1, 6)):
            buf[pos] = int(rng.integers(0, 256))
    elif kind == "truncate":
        buf = buf[: int(rng.integers(0, len(buf)))]
    elif kind == "random-header":
        n = int(rng.integers(1, 64))
        buf[:n] = rng.bytes(n)
    elif kind == "splice":  # a valid signature followed by another image's bytes
        cut = int(rng.integers(0, len(buf)))
        buf = buf[:cut] + bytearray(rng.bytes(int(rng.integers(0, 2000)))) + buf[cut:]
    elif kind == "zero-run":
        start = int(rng.integers(0, len(buf)))
        buf[start : start + int(rng.integers(1, 500))] = bytes(min(500, len(buf) - start))
    elif kind == "random":
        buf = bytearray(rng.bytes(int(rng.integers(0, 5000))))
    elif kind == "repeat":
        buf = buf * int(rng.integers(2, 4))
    return str(kind), bytes(buf)


def as_multipart(data: bytes, rng: np.random.Generator) -> bytes:
    name = rng.choice([b"file", b"image", b"other"])
    head = b'--fuzz\r\nContent-Disposition: form-data; name="' + name + b'"; filename="x.jpg"\r\n\r\n'
    tail = rng.choice([b"\r\n--fuzz--\r\n", b"", b"\r\n--fuzz", b"--"])
    return head + data + tail


def test_fuzzed_payloads_never_cause_5xx(client, seeds):
    rng = np.random.default_rng(20261123)
    statuses, titles, kinds = collections.Counter(), collections.Counter(), collections.Counter()
    slowest_bomb, started = 0.0, time.perf_counter()
    for i in range(CASES):
        kind, body = mutate(seeds[i % len(seeds)], rng)
        content_type = str(pick(rng, GOOD_CONTENT_TYPES, BAD_CONTENT_TYPES, 0.8))
        if content_type.startswith("multipart") and rng.random() < 0.8:
            body = as_multipart(body, rng)
        params = {}
        if (t := pick(rng, GOOD_THRESHOLDS, BAD_THRESHOLDS, 0.9)) is not None:
            params["threshold"] = t
        if (f := pick(rng, GOOD_FORMATS, BAD_FORMATS, 0.9)) is not None:
            params["format"] = f
        headers = {"Content-Type": content_type} if content_type else {}
        if (accept := rng.choice(ACCEPTS)) is not None:
            headers["Accept"] = accept
        start = time.perf_counter()
        result = client.simulate_post("/predict", body=body, headers=headers, params=params)
        elapsed = time.perf_counter() - start
        statuses[result.status_code] += 1
        kinds[kind] += 1
        titles[result.json["title"] if result.status_code >= 400 else "ok"] += 1
        context = f"case {i}: {kind}, {len(body)} bytes, {content_type!r}, {params}, accept={accept!r}"
        assert result.status_code < 500, f"{context}: {result.status} {result.text[:300]}"
        if kind.startswith(("png-", "jpeg-")):
            slowest_bomb = max(slowest_bomb, elapsed)
            assert result.status_code >= 400 and elapsed < BOMB_SECONDS, f"{context}: {elapsed:.2f} s"
        if result.status_code >= 400:
            body_json = result.json
            assert body_json["title"] and body_json["description"], context

    if REPORT:
        summary = {
            "requests": CASES,
            "seconds": round(time.perf_counter() - started, 1),
            "statuses": {str(k): v for k, v in sorted(statuses.items())},
            "server_errors_5xx": sum(v for k, v in statuses.items() if k >= 500),
            "mutation_kinds": dict(sorted(kinds.items())),
            "bombs": sum(v for k, v in kinds.items() if k.startswith(("png-", "jpeg-"))),
            "slowest_bomb_ms": round(slowest_bomb * 1e3, 1),
            "refusal_titles": dict(titles.most_common()),
            "through": "gunicorn over HTTP" if HTTP else "in process (falcon.testing)",
            "command": "make bench-fuzz",
        }
        Path(REPORT).parent.mkdir(parents=True, exist_ok=True)
        Path(REPORT).write_text(json.dumps(summary, indent=2) + "\n")
    # Both outcomes were exercised, and the server is still healthy and correct afterwards.
    assert statuses[200] > 100 and titles["Invalid image"] > 200, (statuses, titles)
    metrics = client.simulate_get("/metrics").text
    errors = sum(
        s.value
        for family in text_string_to_metric_families(metrics)
        for s in family.samples
        if s.name == "polypseg_errors_total" and s.labels["route"] == "/predict"
    )
    assert errors == sum(v for k, v in statuses.items() if k >= 400)
    good = client.simulate_post("/predict", body=seeds[0], headers={"Content-Type": "image/jpeg"})
    assert good.status_code == 200 and good.json["width"] == 622
    assert client.simulate_get("/readyz").status_code == 200


def test_fuzzed_headers_and_methods_never_cause_5xx(client, seeds):
    rng = np.random.default_rng(7)
    for _ in range(100):
        method = str(rng.choice(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]))
        path = str(
            rng.choice(
                ["/predict", "/", "/readyz", "/metrics", "/version", "/static/app.js", "/x", "/predict/"]
            )
        )
        headers = {
            "Content-Type": str(rng.choice(GOOD_CONTENT_TYPES + BAD_CONTENT_TYPES)) or "image/png",
            "X-Request-ID": rng.bytes(int(rng.integers(0, 40))).decode("latin-1"),
            "Accept": str(rng.choice([a for a in ACCEPTS if a])),
        }
        result = client.simulate_request(
            method, path, body=seeds[1][: int(rng.integers(0, 3000))], headers=headers
        )
        assert result.status_code < 500, (method, path, headers, result.text[:200])
    assert client.simulate_get("/healthz").status_code == 200
