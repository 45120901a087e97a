"""Video overlay: decode, segment and encode in a pipeline of threads so both cores stay busy.

Three stages joined by bounded queues: the reader decodes frames (OpenCV VideoCapture), the segmenter
runs the shared preprocessing and the ONNX model, the writer draws the overlay and encodes (VideoWriter).
OpenCV and onnxruntime release the GIL while they work, so threads overlap for real; bounded queues keep
memory flat on long videos. Each stage counts its busy time, so a report says which stage limits the rate.

Optional temporal smoothing keeps an exponential moving average of the probability map at model
resolution: `alpha` = weight of the newest frame (1.0 = off).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np

from lib.model_contract import ModelMeta
from lib.overlay import PRED_COLOUR
from lib.preprocess import prepare_input, restore_mask, sigmoid

NOTICE = "NOT FOR CLINICAL USE"
_END = object()  # sentinel passed down the queues


@dataclass(frozen=True)
class PredictVideoConfig:
    """conf/predict_video.yaml (bin/predict_video.py; bin/bench_video.py reads the same file)."""

    model: str  # ONNX model with model.json beside it (batch 1)
    threads: int  # onnxruntime intra-op threads for the segmentation stage
    smoothing_alpha: float  # weight of the newest frame's probabilities in a running average; 1.0 = off
    codec: str  # FourCC of the output video
    report: str  # frames per second and per-stage timings (JSON)
    queue_depth: int  # frames buffered between stages


def load_predict_video_config(path: str, overrides: list[str] | None = None) -> PredictVideoConfig:
    """conf/predict_video.yaml: what bin/predict_video.py and bin/bench_video.py run with."""
    from lib.config import load_config

    return load_config(PredictVideoConfig, path, overrides or [])


@dataclass
class StageTimes:
    """Busy seconds per stage and the frame count: per-frame ms and the bottleneck for the report."""

    seconds: dict[str, float] = field(
        default_factory=lambda: {"decode": 0.0, "segment": 0.0, "overlay": 0.0, "encode": 0.0}
    )
    frames: int = 0

    def per_frame_ms(self) -> dict[str, float]:
        n = max(self.frames, 1)
        return {k: round(v / n * 1e3, 3) for k, v in self.seconds.items()}


def overlay_frame(bgr: np.ndarray, mask: np.ndarray, label: str, alpha: float = 0.35) -> np.ndarray:
    """Fill and outline the predicted mask on a BGR frame and burn in `label` and the notice.

    The frame as decoded (never the normalised model input); colours as lib/overlay.py (RGB there).
    cv2 primitives only: a 720p frame takes a few milliseconds, where float blending takes tens.
    """
    colour = tuple(int(c) for c in PRED_COLOUR[::-1])  # RGB -> BGR
    out = bgr.copy()
    if mask.any():
        x, y, w, h = cv2.boundingRect(mask)  # blend only where the mask is
        roi, m = out[y : y + h, x : x + w], mask[y : y + h, x : x + w].astype(bool)
        blended = cv2.addWeighted(roi, 1 - alpha, np.full_like(roi, colour), alpha, 0)
        roi[m] = blended[m]
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, colour, max(1, round(min(bgr.shape[:2]) / 200)), cv2.LINE_AA)
    scale = max(0.4, min(bgr.shape[:2]) / 720)
    band = int(30 * scale)
    cv2.rectangle(out, (0, 0), (out.shape[1], band), (0, 0, 0), -1)
    cv2.putText(
        out,
        f"{NOTICE} | model {label}",
        (6, int(21 * scale)),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.6 * scale,
        (255, 255, 255),
        1,
        cv2.LINE_AA,
    )
    return out


class FrameSegmenter:
    """Frame (BGR) -> {0, 1} mask at the frame's size, with optional temporal smoothing."""

    def __init__(self, run_model: Callable[[np.ndarray], np.ndarray], meta: ModelMeta, alpha: float = 1.0):
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"smoothing alpha must be in (0, 1], got {alpha}")
        self.run_model, self.meta, self.alpha = run_model, meta, alpha
        self._ema: np.ndarray | None = None

    def __call__(self, bgr: np.ndarray) -> np.ndarray:
        m = self.meta
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        x, geometry = prepare_input(rgb, m.input_size, m.mean, m.std)  # the one preprocessing path
        prob = sigmoid(np.asarray(self.run_model(x), np.float32).reshape(m.input_size, m.input_size))
        if self.alpha < 1.0:
            self._ema = prob if self._ema is None else self.alpha * prob + (1 - self.alpha) * self._ema
            prob = self._ema
        return m.mask(restore_mask(prob, geometry)).astype(np.uint8)  # as /predict does


def run_pipeline(
    reader: cv2.VideoCapture,
    writer: cv2.VideoWriter,
    segment: Callable[[np.ndarray], np.ndarray],
    label: str,
    on_mask: Callable[[int, np.ndarray], None] | None = None,
    progress: Callable[[int], None] | None = None,
    depth: int = 4,
) -> StageTimes:
    """Read every frame, segment it, overlay and write it, in three threads; returns the stage times."""
    times = StageTimes()
    decoded: queue.Queue = queue.Queue(depth)
    segmented: queue.Queue = queue.Queue(depth)
    errors: list[BaseException] = []

    def read_frames() -> None:
        try:
            while True:
                t0 = time.perf_counter()
                ok, frame = reader.read()
                times.seconds["decode"] += time.perf_counter() - t0
                if not ok:
                    break
                decoded.put(frame)
        except BaseException as err:  # noqa: BLE001 - handed to the caller below
            errors.append(err)
        finally:
            decoded.put(_END)

    def write_frames() -> None:
        try:
            while (item := segmented.get()) is not _END:
                frame, mask = item
                t0 = time.perf_counter()
                out = overlay_frame(frame, mask, label)
                t1 = time.perf_counter()
                writer.write(out)
                times.seconds["overlay"] += t1 - t0
                times.seconds["encode"] += time.perf_counter() - t1
        except BaseException as err:  # noqa: BLE001
            errors.append(err)
            while segmented.get() is not _END:  # drain so the segmenter never blocks on a full queue
                pass

    threads = [
        threading.Thread(target=read_frames, daemon=True),
        threading.Thread(target=write_frames, daemon=True),
    ]
    for t in threads:
        t.start()
    try:
        while (frame := decoded.get()) is not _END:
            t0 = time.perf_counter()
            mask = segment(frame)
            times.seconds["segment"] += time.perf_counter() - t0
            if on_mask is not None:
                on_mask(times.frames, mask)
            segmented.put((frame, mask))
            times.frames += 1
            if progress is not None:
                progress(times.frames)
    finally:
        segmented.put(_END)
        for t in threads:
            t.join()
    if errors:
        raise errors[0]
    return times


def pan_frames(rgb: np.ndarray, mask: np.ndarray, n: int, size: tuple[int, int], step: float = 0.004):
    """`n` frames of a slow pan and zoom over one image, each with its ground-truth mask at `size` (w, h):
    a stand-in for colonoscopy motion, for tests and the smoothing measurement."""
    h, w = rgb.shape[:2]
    for i in range(n):
        crop = 0.85 - step * (i % 20)  # share of the image kept
        cw, ch = int(w * crop), int(h * crop)
        x0 = int((w - cw) * (0.5 + 0.4 * np.sin(i / 7)))
        y0 = int((h - ch) * (0.5 + 0.4 * np.cos(i / 9)))
        frame = cv2.resize(rgb[y0 : y0 + ch, x0 : x0 + cw], size, interpolation=cv2.INTER_LINEAR)
        gt = cv2.resize(mask[y0 : y0 + ch, x0 : x0 + cw], size, interpolation=cv2.INTER_NEAREST)
        yield cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), gt
