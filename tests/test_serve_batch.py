"""Several images in one /predict request, and the model metadata endpoint (GET /v2/models/...).

Falcon's TestClient around the tiny real ONNX model, and one request through a real gunicorn.
"""

import base64
import functools
import http.client
import json

import cv2
import falcon
import falcon.testing
import numpy as np
import pytest

from serve.app import create_app
from serve.settings import Settings
from tests.support.harness import Gunicorn, http_get, sample_image_bytes
from tests.support.tinymodel import TINY_VERSION
from tests.test_serve_app import assert_json_error, count, decode_png
from tests.test_serve_gunicorn import metric_total

MAX_PIXELS = 4_000_000
BOUNDARY = "batchXyZ"


@pytest.fixture
def settings():
    return Settings(max_body_bytes=2_000_000, max_pixels=MAX_PIXELS, max_batch_images=4)


@pytest.fixture
def client(predictor, settings):
    return falcon.testing.TestClient(create_app(predictor, settings))


def synthetic(h, w, seed, ext):
    rng = np.random.default_rng(seed)
    return cv2.imencode(ext, rng.integers(0, 256, (h, w, 3), dtype=np.uint8))[1].tobytes()


NOISE_JPEG = synthetic(53, 37, 1, ".jpg")


@functools.cache
def three_images() -> tuple[tuple[str, bytes], ...]:
    """A real Kvasir frame (622x529 JPEG), a synthetic JPEG and a synthetic PNG: (filename, bytes)."""
    return (
        ("kvasir.jpg", sample_image_bytes()),
        ("noise.jpg", NOISE_JPEG),
        ("noise.png", synthetic(40, 71, 2, ".png")),
    )


def form(*parts) -> bytes:
    """A multipart/form-data body: each part (field, filename or None, bytes)."""
    body = b""
    for field, filename, data in parts:
        disposition = f'form-data; name="{field}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
    return body + f"--{BOUNDARY}--\r\n".encode()


def post_form(client, body, **kwargs):
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}", **kwargs.pop("headers", {})}
    return client.simulate_post("/predict", body=body, headers=headers, **kwargs)


def post_raw(client, data, **kwargs):
    content_type = "image/png" if data.startswith(b"\x89PNG") else "image/jpeg"
    headers = {"Content-Type": content_type, **kwargs.pop("headers", {})}
    return client.simulate_post("/predict", body=data, headers=headers, **kwargs)


def batch_of(images=None):
    return form(*[("image", name, data) for name, data in images or three_images()])


# Batch answers


def test_a_batch_answers_one_result_per_image_equal_to_the_single_answers(client):
    result = post_form(client, batch_of(), headers={"X-Request-ID": "batch-1"})
    assert result.status_code == 200, result.text
    body = result.json
    assert body["count"] == 3 and len(body["results"]) == 3
    assert body["model_version"] == TINY_VERSION and body["notice"] == "NOT FOR CLINICAL USE"
    for index, (item, (name, data)) in enumerate(zip(body["results"], three_images())):
        single = post_raw(client, data).json
        assert item["index"] == index and item["filename"] == name
        assert set(item) == set(single) | {"index", "filename"}
        assert item["request_id"] == "batch-1"
        for key in ("width", "height", "polyp_fraction", "polyp_detected", "threshold", "mask_format"):
            assert item[key] == single[key], (name, key)
        batch_mask = decode_png(base64.b64decode(item["mask"]))
        np.testing.assert_array_equal(batch_mask, decode_png(base64.b64decode(single["mask"])))
        assert batch_mask.shape == (item["height"], item["width"])


def test_threshold_and_format_apply_to_every_image(client):
    body = post_form(client, batch_of(), params={"threshold": "0", "format": "rle"}).json
    assert body["count"] == 3
    for item, (_, data) in zip(body["results"], three_images()):
        h, w = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR).shape[:2]
        assert item["mask_format"] == "rle" and item["threshold"] == 0.0
        assert item["mask"] == {"size": [h, w], "counts": [0, h * w]}  # threshold 0: every pixel
        assert item["polyp_fraction"] == 1.0


def test_one_image_in_a_form_is_answered_exactly_as_a_raw_body(client):
    name, data = three_images()[0]
    raw = post_raw(client, data, headers={"X-Request-ID": "one"}).json
    in_form = post_form(client, form(("image", name, data)), headers={"X-Request-ID": "one"}).json
    assert "results" not in in_form and set(in_form) == set(raw)
    assert {k: v for k, v in in_form.items() if k != "latency_ms"} == {
        k: v for k, v in raw.items() if k != "latency_ms"
    }
    png = post_form(client, form(("image", name, data)), headers={"Accept": "image/png"})
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"


def test_a_single_image_form_with_a_broken_tail_is_read_as_before(client):
    # A one-image form was always read up to its image part only; what follows it is not looked at.
    body = form(("file", "x.jpg", NOISE_JPEG))[: -len(f"--{BOUNDARY}--\r\n")] + b"--" + BOUNDARY.encode()
    result = post_form(client, body)
    assert result.status_code == 200 and result.json["width"] == 37


# Refusals: a JSON 4xx, nothing computed


def test_more_images_than_allowed_is_413_naming_the_limit(client):
    result = post_form(client, batch_of(three_images() * 2))  # 6 > max_batch_images = 4
    assert_json_error(result, 413)
    assert result.json["title"] == "Too many images" and "at most 4 images" in result.json["description"]
    assert "POLYPSEG_MAX_BATCH_IMAGES" in result.json["description"]


def test_a_corrupt_image_refuses_the_whole_batch_naming_it_and_computes_nothing(client):
    truncated = NOISE_JPEG[:300]
    result = post_form(client, batch_of([three_images()[0], ("cut.jpg", truncated), three_images()[2]]))
    assert_json_error(result, 400)
    assert result.json["title"] == "Invalid image"
    assert result.json["description"].startswith("image 1 ('cut.jpg'): ")
    assert count(client, "polypseg_images_total") == 0
    assert count(client, "polypseg_inference_duration_seconds_count") == 0
    assert post_form(client, batch_of()).status_code == 200  # and the next batch is served


def test_an_image_over_the_pixel_limit_is_413_naming_it(client):
    big = cv2.imencode(".png", np.zeros((2100, 2000, 3), np.uint8))[1].tobytes()  # 4.2 MP > 4 MP
    result = post_form(client, batch_of([three_images()[1], ("big.png", big)]))
    assert_json_error(result, 413)
    assert result.json["title"] == "Image too large" and "image 1 ('big.png')" in result.json["description"]


def test_images_together_over_the_pixel_limit_are_413(client):
    part = cv2.imencode(".png", np.zeros((1500, 1000, 3), np.uint8))[1].tobytes()  # 1.5 MP each, 4.5 MP
    result = post_form(client, batch_of([("a.png", part), ("b.png", part), ("c.png", part)]))
    assert_json_error(result, 413)
    assert result.json["title"] == "Batch too large" and "POLYPSEG_MAX_PIXELS" in result.json["description"]
    assert count(client, "polypseg_images_total") == 0


def test_a_batch_asked_for_as_png_only_is_406(client):
    result = post_form(client, batch_of(), headers={"Accept": "image/png"})
    assert_json_error(result, 406)
    assert "JSON" in result.json["description"]
    assert count(client, "polypseg_images_total") == 0


@pytest.mark.parametrize(
    "extra",
    [("note", None, b"hello"), ("file", "x.jpg", NOISE_JPEG), ("image", None, NOISE_JPEG)],
    ids=["text-field", "other-field-name", "part-without-filename"],
)
def test_a_batch_with_anything_but_image_file_parts_is_400(client, extra):
    result = post_form(client, form(*[("image", n, d) for n, d in three_images()[:2]], extra))
    assert_json_error(result, 400)
    assert result.json["title"] == "Invalid batch form" and "form part 2" in result.json["description"]


def test_a_batch_waits_for_one_turn_and_is_refused_with_429_when_the_worker_is_full(predictor):
    app = create_app(predictor, Settings(max_running=1, max_waiting=0))
    client = falcon.testing.TestClient(app)
    gate = app._router.find("/predict")[0].gate
    with gate.turn():  # the one slot is busy
        busy = post_form(client, batch_of())
    assert busy.status_code == 429 and busy.headers["Retry-After"] == "1"
    assert count(client, "polypseg_images_total") == 0
    assert post_form(client, batch_of()).status_code == 200 and gate.admitted == 0


# Metrics, log, shadow copy


def test_metrics_count_the_request_once_and_each_image(client):
    post_form(client, batch_of())
    post_raw(client, NOISE_JPEG)
    assert count(client, "polypseg_requests_total", route="/predict", status="200") == 2
    assert count(client, "polypseg_images_total", model_version=TINY_VERSION) == 4
    assert count(client, "polypseg_inference_duration_seconds_count") == 4
    assert count(client, "polypseg_predicted_polyp_share_count") == 4
    assert count(client, "polypseg_request_duration_seconds_count", route="/predict") == 2


def test_one_log_line_for_a_batch_lists_its_images(client, caplog):
    caplog.set_level("INFO", logger="polypseg.request")
    post_form(client, batch_of(), headers={"X-Request-ID": "log-batch"})
    (record,) = [r for r in caplog.records if r.name == "polypseg.request"]
    fields = record.fields
    assert fields["images"] == 3 and fields["status"] == 200
    assert fields["input_shape"] == [[529, 622, 3], [53, 37, 3], [40, 71, 3]]
    assert fields["input_format"] == ["jpeg", "jpeg", "png"] and len(fields["polyp_fraction"]) == 3
    assert fields["inference_ms"] > 0 and fields["bytes_in"] == sum(len(d) for _, d in three_images())


def test_shadow_mode_stores_each_image_of_a_batch_with_its_index(predictor, tmp_path):
    settings = Settings(shadow_dir=str(tmp_path / "shadow"))
    client = falcon.testing.TestClient(create_app(predictor, settings))
    body = post_form(client, batch_of(), headers={"X-Request-ID": "shadow-batch"}).json
    folders = sorted((tmp_path / "shadow").glob("*/*"))
    assert len(folders) == 3
    records = {}
    for folder in folders:
        record = json.loads((folder / "record.json").read_text())
        records[record["index"]] = (folder, record)
    assert sorted(records) == [0, 1, 2]
    for index, (name, data) in enumerate(three_images()):
        folder, record = records[index]
        assert record["request_id"] == "shadow-batch" and "shadow-batch" in folder.name
        assert record["filename"] == name and record["count"] == 3
        stored = next(folder.glob("input.*")).read_bytes()
        assert stored == data
        mask = decode_png((folder / "mask.png").read_bytes())
        np.testing.assert_array_equal(mask, decode_png(base64.b64decode(body["results"][index]["mask"])))


# Model metadata (Open Inference Protocol, KServe v2)


def test_model_metadata_is_model_json(client, model_path):
    result = client.simulate_get("/v2/models/polypseg")
    assert result.status_code == 200
    body, model_json = result.json, json.loads(model_path.with_name("model.json").read_text())
    size = model_json["input_size"]
    assert body["name"] == "polypseg" and body["platform"] == "onnxruntime_onnx"
    assert body["versions"] == [model_json["model_version"]]
    assert body["inputs"] == [
        {"name": model_json["input_name"], "datatype": "FP32", "shape": [-1, 3, size, size]}  # dynamic batch
    ]
    assert body["outputs"] == [
        {"name": model_json["output_name"], "datatype": "FP32", "shape": [-1, 1, size, size]}
    ]
    params = body["parameters"]
    for key in ("input_size", "mean", "std", "threshold", "min_area_fraction", "git_sha", "data_rev"):
        assert params[key] == model_json[key], key
    assert params["precision"] == model_json.get("precision", "fp32")
    assert params["model_version"] == params["artifact_version"] == model_json["model_version"]
    assert params["sha256"] == model_json["sha256"] and params["opset"] == model_json["opset"]


def test_model_metadata_of_its_version(client, model_path):
    version = json.loads(model_path.with_name("model.json").read_text())["model_version"]
    by_version = client.simulate_get(f"/v2/models/polypseg/versions/{version}")
    assert (
        by_version.status_code == 200 and by_version.json == client.simulate_get("/v2/models/polypseg").json
    )
    assert client.simulate_head("/v2/models/polypseg").status_code == 200


@pytest.mark.parametrize(
    "path", ["/v2/models/polyp-seg-unet", "/v2/models/other", "/v2/models/polypseg/versions/999"]
)
def test_unknown_model_name_or_version_is_404_json(client, path):
    assert_json_error(client.simulate_get(path), 404)


def test_model_metadata_without_a_model_is_503(settings):
    client = falcon.testing.TestClient(create_app(None, settings))
    result = client.simulate_get("/v2/models/polypseg")
    assert_json_error(result, 503)
    assert result.json["title"] == "Model not loaded"


# A real gunicorn


@pytest.mark.integration
def test_gunicorn_answers_a_batch_request(model_path):
    body = batch_of()
    with Gunicorn(model_path, workers=2) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        conn.request(
            "POST",
            "/predict?format=rle",
            body=body,
            headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}", "X-Request-ID": "g-1"},
        )
        resp = conn.getresponse()
        answer = json.loads(resp.read())
        conn.close()
        assert resp.status == 200, answer
        assert answer["count"] == 3 and [r["filename"] for r in answer["results"]] == [
            n for n, _ in three_images()
        ]
        for item, (_, data) in zip(answer["results"], three_images()):
            h, w = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR).shape[:2]
            assert item["mask"]["size"] == [h, w] and sum(item["mask"]["counts"]) == h * w
            assert item["request_id"] == "g-1" and item["model_version"] == TINY_VERSION
        assert metric_total(server.port, "polypseg_images_total") == 3  # summed over both workers
        status, meta = http_get(server.port, "/v2/models/polypseg")
        assert status == 200 and json.loads(meta)["parameters"]["model_version"] == TINY_VERSION
