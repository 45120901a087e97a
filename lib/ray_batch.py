"""Batch segmentation on Ray Data: the Segmenter of lib/batch_predict.py in a pool of actors.

`ray.init()` starts a local instance on this machine; RAY_ADDRESS (or `ray_address`) points the same code
at a cluster. Results stream back to the caller batch by batch, which writes masks and the manifest.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from lib.batch_predict import Segmenter
from lib.config import ConfigError, load_config


@dataclass(frozen=True)
class PredictBatchConfig:
    """conf/predict_batch.yaml (bin/predict_batch.py; bin/bench_batch.py reads the same file)."""

    model: str  # ONNX model with model.json beside it; a dynamic batch axis runs a batch per call
    ray_address: str | None  # null: RAY_ADDRESS if set, else a local instance on this machine
    num_cpus: int | None  # CPUs for the local instance (null: all); ignored on a cluster
    actors: int  # Segmenter actors (one onnxruntime session each)
    threads_per_actor: int  # onnxruntime intra-op threads per actor; actors x threads <= cores
    batch_size: int  # images per map_batches call
    max_pixels: int  # larger images are error rows (a decompression bomb must not exhaust memory)
    manifest: str  # file name of the manifest inside the output folder
    progress_every: int  # print a progress line every N finished images

    def check(self, where: str) -> None:
        if min(self.actors, self.threads_per_actor, self.batch_size, self.progress_every) < 1:
            raise ConfigError(f"{where}: actors, threads_per_actor, batch_size, progress_every must be >= 1")


def load_predict_batch_config(path: str, overrides: list[str] | None = None) -> PredictBatchConfig:
    """conf/predict_batch.yaml, checked: what bin/predict_batch.py and bin/bench_batch.py run with."""
    cfg = load_config(PredictBatchConfig, path, overrides or [])
    cfg.check(path)
    return cfg


def start_ray(cfg: PredictBatchConfig):
    """Connect to RAY_ADDRESS / `ray_address`, else start a local instance; returns the ray module."""
    import ray

    address = cfg.ray_address or os.environ.get("RAY_ADDRESS")
    quiet = {"log_to_driver": False, "logging_level": logging.WARNING}
    if address:
        ray.init(address=address, **quiet)
    else:  # a local instance; the dashboard would only cost start-up time here
        ray.init(num_cpus=cfg.num_cpus, include_dashboard=False, **quiet)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the caller prints progress lines
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    return ray


def segment_on_ray(ray, cfg: PredictBatchConfig, items: list[dict]) -> Iterator[dict[str, np.ndarray]]:
    """Result batches (Segmenter columns) for `items` = [{"path", "name"}], as the actors finish them."""
    blocks = max(cfg.actors, -(-len(items) // cfg.batch_size))  # enough blocks to keep every actor busy
    results = ray.data.from_items(items, override_num_blocks=blocks).map_batches(
        Segmenter,
        fn_constructor_kwargs={
            "model_path": cfg.model,
            "threads": cfg.threads_per_actor,
            "max_pixels": cfg.max_pixels,
        },
        batch_size=cfg.batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=cfg.actors),
        num_cpus=cfg.threads_per_actor,
    )
    yield from results.iter_batches(batch_size=None, batch_format="numpy")
