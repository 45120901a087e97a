"""The API through falcon.testing.TestClient, with a tiny real ONNX model (no mocks)."""

import base64
import json
import logging
import time

import cv2
import falcon
import falcon.testing
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from lib.decision import Decision
from lib.rle import decode_rle
from serve.app import create_app, get_app
from serve.predictor import load_local
from serve.resources import NOTICE
from serve.settings import Settings
from tests.support.harness import sample_image_bytes
from tests.support.tinymodel import TINY_VERSION, write_tiny_model

MAX_BODY = 300_000  # bytes, small so the 413 test stays cheap
MAX_PIXELS = 4_000_000


@pytest.fixture
def settings():
    return Settings(max_body_bytes=MAX_BODY, max_pixels=MAX_PIXELS)


@pytest.fixture
def client(predictor, settings):
    return falcon.testing.TestClient(create_app(predictor, settings))


def client_for(tmp_path, settings, min_area_fraction: float):
    """A client around the tiny model exported with this image-level rule in its model.json."""
    decision = Decision(threshold=0.5, min_area_fraction=min_area_fraction, chosen_on="test")
    path = write_tiny_model(tmp_path / f"model-{min_area_fraction}", size=64, decision=decision)
    return falcon.testing.TestClient(create_app(load_local(path), settings))


def image(h=53, w=37):
    """A synthetic BGR image, non-square so a mask at the wrong size would show."""
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def jpeg(array=None):
    return cv2.imencode(".jpg", image() if array is None else array)[1].tobytes()


def png(array=None):
    return cv2.imencode(".png", image() if array is None else array)[1].tobytes()


def post(client, body, content_type="image/jpeg", **kwargs):
    headers = {"Content-Type": content_type, **kwargs.pop("headers", {})}
    return client.simulate_post("/predict", body=body, headers=headers, **kwargs)


def decode_png(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)


def samples(client, name):
    """{labels-tuple: value} of one metric's samples from /metrics."""
    text = client.simulate_get("/metrics").text
    return {
        tuple(sorted(s.labels.items())): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == name
    }


def count(client, name, **labels):
    return sum(v for k, v in samples(client, name).items() if labels.items() <= dict(k).items())


def assert_json_error(result, status):
    assert result.status_code == status, result.text
    assert result.headers["content-type"].startswith("application/json")
    body = result.json
    assert set(body) == {"title", "description"} and body["title"] and body["description"]


# Probes and metadata


def test_healthz(client):
    assert client.simulate_get("/healthz").json == {"status": "ok"}


def test_readyz_names_the_model(client):
    result = client.simulate_get("/readyz")
    assert result.status_code == 200 and result.json["model_version"] == TINY_VERSION


def test_version_reports_model_and_notice(client):
    body = client.simulate_get("/version").json
    assert body["model_version"] == TINY_VERSION
    assert body["model"]["input_size"] == 64 and body["model"]["git_sha"] == "0000000"
    assert body["model"]["threshold"] == 0.5 and body["model"]["min_area_fraction"] == 0.0
    assert "stand-in" in body["model"]["decision_chosen_on"]
    assert body["notice"] == NOTICE


def test_demo_page_is_served_with_banner_and_csp(client):
    page = client.simulate_get("/")
    assert page.status_code == 200 and "NOT FOR CLINICAL USE" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset in ("/static/app.js", "/static/style.css"):
        assert client.simulate_get(asset).status_code == 200


def test_unknown_static_file_is_404(client):
    assert_json_error(client.simulate_get("/static/../app.py"), 404)


# Missing or broken model: 503, never a crash


def test_no_model_gives_503_on_predict_and_readyz(settings):
    client = falcon.testing.TestClient(create_app(None, settings))
    assert_json_error(client.simulate_get("/readyz"), 503)
    assert_json_error(post(client, jpeg()), 503)
    assert client.simulate_get("/healthz").status_code == 200
    assert client.simulate_get("/version").json["model_version"] == "none"


def test_get_app_with_missing_model_file_serves_503(monkeypatch, tmp_path):
    logger = logging.getLogger("polypseg")  # get_app configures it; undo that for the other tests
    monkeypatch.setattr(logger, "handlers", [])
    monkeypatch.setattr(logger, "propagate", True)
    monkeypatch.setenv("POLYPSEG_MODEL_PATH", str(tmp_path / "absent.onnx"))
    monkeypatch.delenv("POLYPSEG_MODEL_URI", raising=False)
    client = falcon.testing.TestClient(get_app())
    deadline = time.monotonic() + 5  # the first load attempt runs in the background
    while "loading" in (result := client.simulate_get("/readyz")).json["description"]:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert_json_error(result, 503)
    assert "absent.onnx" in result.json["description"] and str(tmp_path) not in result.json["description"]
    assert client.simulate_get("/healthz").status_code == 200


def test_loader_is_retried_until_the_model_appears(tmp_path, settings):
    path = tmp_path / "model.onnx"
    retrying = Settings(max_body_bytes=MAX_BODY, model_retry_s=0.0)
    client = falcon.testing.TestClient(create_app(None, retrying, loader=lambda: load_local(path)))
    assert client.simulate_get("/readyz").status_code == 503
    write_tiny_model(tmp_path, size=64)
    deadline = time.monotonic() + 5  # loaded by the background loader, not by the request
    while client.simulate_get("/readyz").status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert post(client, jpeg()).status_code == 200


# Predictions


def test_predict_png_mask_has_the_original_size(client):
    result = post(client, jpeg())
    assert result.status_code == 200
    body = result.json
    assert (body["width"], body["height"]) == (37, 53)
    assert body["mask_format"] == "png" and body["model_version"] == TINY_VERSION
    assert body["threshold"] == 0.5 and body["latency_ms"] > 0 and body["request_id"]
    assert body["polyp_detected"] is (body["polyp_fraction"] > 0) and body["min_area_fraction"] == 0.0
    mask = decode_png(base64.b64decode(body["mask"]))
    assert mask.shape == (53, 37) and mask.dtype == np.uint8
    assert set(np.unique(mask)) <= {0, 255}
    assert body["polyp_fraction"] == pytest.approx((mask > 0).mean(), abs=1e-6)


def test_predict_accepts_png_body(client):
    assert post(client, png(), "image/png").json["height"] == 53


def test_predict_on_a_real_kvasir_image(client):
    result = post(client, sample_image_bytes())
    body = result.json
    assert (body["width"], body["height"]) == (622, 529)
    assert 0.0 < body["polyp_fraction"] < 1.0  # the tiny model's colour rule splits a real frame
    assert body["polyp_detected"] is True


def test_min_area_fraction_from_model_json_decides_polyp_detected(tmp_path, settings):
    anything = post(client_for(tmp_path, settings, 0.0), sample_image_bytes()).json
    strict = post(client_for(tmp_path, settings, 0.99), sample_image_bytes()).json
    assert anything["polyp_fraction"] == strict["polyp_fraction"] < 0.99  # same mask, other rule
    assert anything["polyp_detected"] is True and anything["min_area_fraction"] == 0.0
    assert strict["polyp_detected"] is False and strict["min_area_fraction"] == 0.99


def test_polyp_detected_follows_the_threshold_of_the_request(tmp_path, settings):
    strict = client_for(tmp_path, settings, 0.99)
    everything = post(strict, sample_image_bytes(), params={"threshold": "0"}).json
    assert everything["polyp_fraction"] == 1.0 and everything["polyp_detected"] is True
    nothing = post(client_for(tmp_path, settings, 0.0), sample_image_bytes(), params={"threshold": "1"}).json
    assert nothing["polyp_fraction"] == 0.0 and nothing["polyp_detected"] is False  # sigmoid never reaches 1


@pytest.mark.parametrize("shape", [(1, 1), (1, 20_000), (20_000, 1)], ids=["1x1", "wide", "tall"])
def test_tiny_and_extreme_aspect_images_keep_their_size(client, shape):
    data = png(np.full((*shape, 3), 128, np.uint8))
    body = post(client, data, "image/png", params={"format": "rle"}).json
    assert body["mask"]["size"] == list(shape) and (body["height"], body["width"]) == shape


def test_rle_mask_matches_png_mask(client):
    png_mask = decode_png(base64.b64decode(post(client, jpeg()).json["mask"])) > 0
    rle = post(client, jpeg(), params={"format": "rle"}).json["mask"]
    assert rle["size"] == [53, 37]
    np.testing.assert_array_equal(decode_rle(rle), png_mask.astype(np.uint8))


def test_prob_format_is_an_8_bit_probability_map(client):
    body = post(client, jpeg(), params={"format": "prob"}).json
    prob = decode_png(base64.b64decode(body["mask"]))
    assert prob.shape == (53, 37) and prob.dtype == np.uint8
    png_mask = decode_png(base64.b64decode(post(client, jpeg()).json["mask"])) > 0
    # Thresholding the 8-bit map reproduces the server's mask up to the 1/255 quantisation.
    assert ((prob >= 128) != png_mask).mean() < 0.01


def test_threshold_zero_marks_everything_and_one_almost_nothing(client):
    assert post(client, jpeg(), params={"threshold": "0"}).json["polyp_fraction"] == 1.0
    assert post(client, jpeg(), params={"threshold": "1"}).json["polyp_fraction"] < 0.01


def test_accept_png_returns_the_mask_directly_with_headers(client):
    result = post(client, jpeg(), headers={"Accept": "image/png"}, params={"threshold": "0.3"})
    assert result.status_code == 200 and result.headers["content-type"] == "image/png"
    assert decode_png(result.content).shape == (53, 37)
    h = result.headers
    assert (h["x-width"], h["x-height"], h["x-threshold"]) == ("37", "53", "0.3")
    assert h["x-model-version"] == TINY_VERSION and float(h["x-latency-ms"]) > 0
    assert 0.0 <= float(h["x-polyp-fraction"]) <= 1.0 and h["x-request-id"]
    assert h["x-polyp-detected"] in ("true", "false") and h["x-min-area-fraction"] == "0.0"


def test_accept_png_with_rle_format_is_not_acceptable(client):
    assert_json_error(post(client, jpeg(), headers={"Accept": "image/png"}, params={"format": "rle"}), 406)


def test_multipart_upload(client):
    form = (
        b'--XyZ\r\nContent-Disposition: form-data; name="note"\r\n\r\nhello\r\n'
        b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="x.jpg"\r\n'
        b"Content-Type: image/jpeg\r\n\r\n" + jpeg() + b"\r\n--XyZ--\r\n"
    )
    result = post(client, form, "multipart/form-data; boundary=XyZ")
    assert result.status_code == 200 and result.json["width"] == 37


def test_multipart_without_a_file_is_400(client):
    form = b'--XyZ\r\nContent-Disposition: form-data; name="note"\r\n\r\nhello\r\n--XyZ--\r\n'
    assert_json_error(post(client, form, "multipart/form-data; boundary=XyZ"), 400)


def test_multipart_without_boundary_is_400(client):
    assert_json_error(post(client, jpeg(), "multipart/form-data"), 400)


def test_multipart_header_that_is_not_utf8_is_400(client):
    form = (
        b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="b\xe9b\xe9.jpg"\r\n\r\n'
        + jpeg()
        + b"\r\n--XyZ--\r\n"
    )
    result = post(client, form, "multipart/form-data; boundary=XyZ")
    assert_json_error(result, 400)
    assert result.json["title"] == "Malformed multipart/form-data request media"
    assert "UTF-8" in result.json["description"]


@pytest.mark.parametrize(
    "array",
    [
        (image().astype(np.uint16) << 8),  # 16-bit colour
        image()[..., 0],  # grayscale
        np.dstack([image(), np.full((53, 37), 255, np.uint8)]),  # RGBA
    ],
    ids=["16-bit", "gray", "rgba"],
)
def test_other_pixel_formats_are_converted(client, array):
    result = post(client, png(array), "image/png")
    assert result.status_code == 200 and (result.json["width"], result.json["height"]) == (37, 53)


# Bad input: 4xx JSON, counted as an error, and the next good request still works


def huge_png_header():
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", 50_000, 50_000, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", 13)
        + b"IHDR"
        + ihdr
        + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    )


def zero_size_png_header():
    data = bytearray(png())
    data[16:20] = bytes(4)  # width 0
    return bytes(data)


BAD_REQUESTS = {
    "empty body": (b"", "image/jpeg", {}, 400),
    "not an image": (b"hello, I am text" * 10, "image/jpeg", {}, 400),
    "truncated jpeg": (jpeg()[:300], "image/jpeg", {}, 400),
    "truncated png": (png()[:200], "image/png", {}, 400),
    "gif": (b"GIF89a" + bytes(40), "image/png", {}, 400),
    "unsupported content type": (jpeg(), "text/plain", {}, 415),
    "no content type": (jpeg(), "", {}, 415),
    "zero-size image": (zero_size_png_header(), "image/png", {}, 400),
    "decompression bomb": (huge_png_header(), "image/png", {}, 413),
    "body over the byte limit": (b"\xff\xd8" + bytes(MAX_BODY), "image/jpeg", {}, 413),
    "threshold not a number": (jpeg(), "image/jpeg", {"threshold": "abc"}, 400),
    "threshold above 1": (jpeg(), "image/jpeg", {"threshold": "1.5"}, 400),
    "threshold below 0": (jpeg(), "image/jpeg", {"threshold": "-0.1"}, 400),
    "threshold nan": (jpeg(), "image/jpeg", {"threshold": "nan"}, 400),
    "threshold inf": (jpeg(), "image/jpeg", {"threshold": "inf"}, 400),
    "unknown format": (jpeg(), "image/jpeg", {"format": "gif"}, 400),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_input_is_a_counted_4xx_and_the_next_request_works(client, case):
    body, content_type, params, status = BAD_REQUESTS[case]
    result = post(client, body, content_type, params=params)
    assert_json_error(result, status)
    assert count(client, "polypseg_errors_total", route="/predict", status=str(status)) == 1
    assert post(client, jpeg()).status_code == 200


def test_body_over_the_limit_without_content_length_is_413(predictor, settings):
    app = create_app(predictor, settings)
    env = falcon.testing.create_environ(
        "/predict", method="POST", body=jpeg() + bytes(MAX_BODY), headers={"Content-Type": "image/jpeg"}
    )
    del env["CONTENT_LENGTH"]  # as with Transfer-Encoding: chunked
    seen = {}
    chunks = app(env, lambda status, headers: seen.update(status=status))
    assert seen["status"].startswith("413") and json.loads(b"".join(chunks))["title"] == "Body too large"


@pytest.mark.parametrize(
    "framing", [b"zz\r\nabc\r\n0\r\n\r\n", b"3\r\nabcXX", b"ffffff\r\nabc"], ids=["size", "terminator", "cut"]
)
def test_broken_chunked_body_is_400(predictor, settings, framing):
    """gunicorn decodes Transfer-Encoding: chunked lazily; its parse errors surface while the app reads."""
    from gunicorn.http.body import Body, ChunkedReader
    from gunicorn.http.unreader import IterUnreader

    app = create_app(predictor, settings)
    env = falcon.testing.create_environ("/predict", method="POST", headers={"Content-Type": "image/jpeg"})
    env.pop("CONTENT_LENGTH", None)  # as with Transfer-Encoding: chunked
    env["wsgi.input"] = Body(ChunkedReader(None, IterUnreader([framing])))
    seen = {}
    body = json.loads(b"".join(app(env, lambda status, headers: seen.update(status=status))))
    assert seen["status"].startswith("400") and body["title"] == "Malformed request body"


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_wrong_method_is_405_json(client, method):
    result = client.simulate_request(method, "/predict")
    assert_json_error(result, 405)
    assert count(client, "polypseg_errors_total", status="405") == 1


@pytest.mark.parametrize("path", ["/", "/static/app.js", "/healthz", "/readyz", "/version", "/metrics"])
def test_head_is_answered_on_every_get_route(client, path):
    get, head = client.simulate_get(path), client.simulate_head(path)
    assert head.status_code == get.status_code == 200 and head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"]


def test_predict_answers_are_never_stored(client):
    assert post(client, jpeg()).headers["cache-control"] == "no-store"
    assert post(client, b"").headers["cache-control"] == "no-store"  # errors too


def test_post_to_a_probe_is_405(client):
    assert_json_error(client.simulate_post("/healthz", body=b"x"), 405)


def test_unknown_path_is_404_json(client):
    assert_json_error(client.simulate_get("/no/such/thing"), 404)


def test_errors_are_json_even_when_the_client_accepts_only_png(client):
    assert_json_error(post(client, b"", headers={"Accept": "image/png"}), 400)


# Metrics, request ids, logs, shadow mode


def test_metrics_count_requests_and_latency(client):
    for _ in range(3):
        post(client, jpeg())
    assert (
        count(client, "polypseg_requests_total", route="/predict", status="200", model_version=TINY_VERSION)
        == 3
    )
    assert count(client, "polypseg_request_duration_seconds_count", route="/predict") == 3
    buckets = {dict(k)["le"] for k in samples(client, "polypseg_request_duration_seconds_bucket")}
    assert {"0.005", "0.15", "2.5", "+Inf"} <= buckets  # seconds; 0.15 is the p99 SLO's edge
    assert count(client, "polypseg_inference_duration_seconds_count") == 3
    # Base unit seconds: three tiny-model requests in process take well under a second each.
    assert 0 < count(client, "polypseg_request_duration_seconds_sum", route="/predict") < 3


def test_metrics_show_the_model_served(client):
    assert count(client, "polypseg_model_loaded") == 1
    (info,) = samples(client, "polypseg_model_info").items()
    labels, value = dict(info[0]), info[1]
    assert value == 1 and labels["model_version"] == TINY_VERSION and labels["threshold"] == "0.5"
    assert {"artifact_version", "git_sha", "data_rev", "precision"} <= set(labels)


def test_metrics_say_no_model_until_the_loader_succeeds(tmp_path):
    path = tmp_path / "model.onnx"
    client = falcon.testing.TestClient(
        create_app(None, Settings(model_retry_s=0.0), loader=lambda: load_local(path))
    )
    assert count(client, "polypseg_model_loaded") == 0 and not samples(client, "polypseg_model_info")
    write_tiny_model(tmp_path, size=64)
    deadline = time.monotonic() + 5
    while client.simulate_get("/readyz").status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert count(client, "polypseg_model_loaded") == 1
    assert count(client, "polypseg_model_info", model_version=TINY_VERSION) == 1


def test_in_flight_counts_only_the_scrape_itself_when_idle(client):
    for _ in range(2):
        post(client, jpeg())
    post(client, b"")  # an error leaves the gauge too
    assert count(client, "polypseg_in_flight_requests") == 1  # the GET /metrics being answered


def test_predicted_share_is_at_the_models_threshold_whatever_the_client_asks(client):
    share = post(client, jpeg()).json["polyp_fraction"]
    assert 0 <= share < 1  # else threshold=0 below would not differ
    assert post(client, jpeg(), params={"threshold": "0"}).json["polyp_fraction"] == 1.0
    assert count(client, "polypseg_predicted_polyp_share_count", model_version=TINY_VERSION) == 2
    assert count(client, "polypseg_predicted_polyp_share_sum") == pytest.approx(2 * share, abs=1e-5)
    buckets = {dict(k)["le"] for k in samples(client, "polypseg_predicted_polyp_share_bucket")}
    assert {"0.0", "0.001", "0.01", "0.5", "1.0", "+Inf"} <= buckets


def test_incoming_request_id_is_honoured(client):
    result = post(client, jpeg(), headers={"X-Request-ID": "abc-123"})
    assert result.json["request_id"] == "abc-123" and result.headers["x-request-id"] == "abc-123"


def test_unsafe_request_id_is_replaced(client):
    result = post(client, jpeg(), headers={"X-Request-ID": "../../etc/passwd\n"})
    assert result.json["request_id"] != "../../etc/passwd\n" and "/" not in result.json["request_id"]


def test_one_json_log_line_per_request_with_timings(client, caplog):
    caplog.set_level(logging.INFO, logger="polypseg.request")
    post(client, jpeg(), headers={"X-Request-ID": "log-me"})
    records = [r for r in caplog.records if r.name == "polypseg.request"]
    assert len(records) == 1
    fields = records[0].fields
    assert fields["request_id"] == "log-me" and fields["status"] == 200
    assert fields["model_version"] == TINY_VERSION and fields["input_shape"] == [53, 37, 3]
    for key in ("decode_ms", "inference_ms", "encode_ms", "total_ms"):
        assert fields[key] >= 0
    from serve.logs import JsonFormatter

    assert json.loads(JsonFormatter().format(records[0]))["request_id"] == "log-me"


def test_error_requests_are_logged_with_their_title(client, caplog):
    caplog.set_level(logging.INFO, logger="polypseg.request")
    post(client, b"", headers={"X-Request-ID": "bad-1"})
    (record,) = [r for r in caplog.records if r.name == "polypseg.request"]
    assert record.fields["status"] == 400 and record.fields["error"] == "Empty body"


def test_shadow_mode_is_off_by_default(client, tmp_path):
    post(client, jpeg())
    assert not any(tmp_path.iterdir())


def test_shadow_mode_stores_input_mask_and_record(predictor, tmp_path):
    settings = Settings(shadow_dir=str(tmp_path / "shadow"))
    client = falcon.testing.TestClient(create_app(predictor, settings))
    data = jpeg()
    body = post(client, data, headers={"X-Request-ID": "shadow-1"}, params={"format": "rle"}).json
    (folder,) = list((tmp_path / "shadow").glob("*/*"))
    assert "shadow-1" in folder.name
    assert (folder / "input.jpg").read_bytes() == data
    mask = decode_png((folder / "mask.png").read_bytes())
    np.testing.assert_array_equal(mask > 0, decode_rle(body["mask"]) > 0)
    record = json.loads((folder / "record.json").read_text())
    assert record["request_id"] == "shadow-1" and record["model_version"] == TINY_VERSION
    assert record["polyp_detected"] is body["polyp_detected"]
