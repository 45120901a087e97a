"""bin/predict_video.py on a short 720p video made from real Kvasir frames, with the tiny real ONNX model."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from lib.io import read_image, read_mask
from lib.model_contract import read_model_json
from lib.onnx_session import make_session, session_runner
from lib.video import FrameSegmenter, overlay_frame, pan_frames
from tests.bin_helpers import run_script

SIZE = (1280, 720)
FRAMES_PER_IMAGE = 8


@pytest.fixture(scope="module")
def video(real_samples, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("video") / "kvasir720.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, SIZE)
    for image in sorted((real_samples / "images").glob("*.jpg"))[:3]:
        mask = read_mask(real_samples / "masks" / image.name)
        for frame, _ in pan_frames(read_image(image), mask, FRAMES_PER_IMAGE, SIZE):
            writer.write(frame)
    writer.release()
    return path


def conf_for(tmp_path: Path, model_path: Path, **changes) -> Path:
    conf = yaml.safe_load(Path("conf/predict_video.yaml").read_text())
    conf.update(model=str(model_path), report=str(tmp_path / "video.json"), **changes)
    path = tmp_path / "predict_video.yaml"
    path.write_text(yaml.safe_dump(conf))
    return path


def test_video_overlay_keeps_every_frame_and_draws_the_mask(video, model_path, tmp_path):
    out = tmp_path / "overlay.mp4"
    result = run_script(
        "predict_video.py",
        "--conf",
        str(conf_for(tmp_path, model_path)),
        "--input",
        str(video),
        "--output",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    src, dst = cv2.VideoCapture(str(video)), cv2.VideoCapture(str(out))
    assert int(dst.get(cv2.CAP_PROP_FRAME_COUNT)) == 3 * FRAMES_PER_IMAGE
    assert (int(dst.get(cv2.CAP_PROP_FRAME_WIDTH)), int(dst.get(cv2.CAP_PROP_FRAME_HEIGHT))) == SIZE
    changed = []
    for _ in range(3 * FRAMES_PER_IMAGE):
        (ok_a, a), (ok_b, b) = src.read(), dst.read()
        assert ok_a and ok_b
        # Overlay pixels: the prediction colour (red, BGR) where the input had none; the notice band is black.
        red = (b[40:, :, 2].astype(int) - b[40:, :, 1] > 150) & (
            a[40:, :, 2].astype(int) - a[40:, :, 1] <= 150
        )
        changed.append(red.mean())
        assert b[:20, :200].mean() < a[:20, :200].mean()  # the burned-in band
    assert np.mean(changed) > 0.001, "no overlay colour found in the output frames"

    report = json.loads((tmp_path / "video.json").read_text())
    assert report["frames"] == 3 * FRAMES_PER_IMAGE and report["size"] == list(SIZE)
    assert report["fps"] > 0 and set(report["stage_ms_per_frame"]) == {
        "decode",
        "segment",
        "overlay",
        "encode",
    }
    assert report["model_version"] == read_model_json(model_path.with_name("model.json")).model_version


def test_overlay_burns_in_the_notice_and_leaves_an_empty_mask_alone():
    frame = np.full((720, 1280, 3), 90, np.uint8)
    out = overlay_frame(frame, np.zeros((720, 1280), np.uint8), "v1")
    assert np.array_equal(out[100:], frame[100:])  # nothing drawn below the band without a mask
    assert (out[:30] != 90).any()  # band and text
    mask = np.zeros((720, 1280), np.uint8)
    mask[300:400, 500:700] = 1
    drawn = overlay_frame(frame, mask, "v1")
    assert drawn[350, 600, 2] > frame[350, 600, 2]  # filled towards red inside
    assert np.array_equal(drawn[600:], frame[600:])  # untouched far away


def test_smoothing_averages_probabilities_across_frames(model_path):
    meta = read_model_json(model_path.with_name("model.json"))
    runner = session_runner(make_session(model_path, 1), meta.input_name, meta.output_name)
    red = np.zeros((120, 160, 3), np.uint8)
    red[..., 2] = 220  # BGR: red -> the tiny model's polyp colour
    green = np.zeros_like(red)
    green[..., 1] = 220
    plain, smooth = FrameSegmenter(runner, meta, 1.0), FrameSegmenter(runner, meta, 0.3)
    assert plain(red).all() and not plain(green).any()
    smooth(red)
    assert smooth(green).all()  # 0.3 * low + 0.7 * high stays above the threshold one frame later
    with pytest.raises(ValueError, match="alpha"):
        FrameSegmenter(runner, meta, 0.0)


def test_a_file_that_is_not_a_video_is_a_clear_error(model_path, tmp_path):
    bad = tmp_path / "clip.mp4"
    bad.write_bytes(b"not a video at all")
    result = run_script(
        "predict_video.py", "--conf", str(conf_for(tmp_path, model_path)), "--input", str(bad),
        "--output", str(tmp_path / "o.mp4"),
    )  # fmt: skip
    assert result.returncode == 2 and "cannot decode" in result.stderr
