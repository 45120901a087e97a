"""Serving settings, read once from environment variables into a frozen structure.

Every variable is optional; a malformed value is an error that names the variable.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_MODEL_PATH = "models/model.onnx"


@dataclass(frozen=True)
class Settings:
    model_path: str = DEFAULT_MODEL_PATH  # local ONNX file; model.json must sit beside it
    model_uri: str = ""  # MLflow registry URI (e.g. models:/polyp-seg-unet@production); wins over model_path
    allow_staging: bool = False  # fall back to the @staging alias when @production is missing
    max_body_bytes: int = 20 * 1024 * 1024  # bytes; larger request bodies get 413
    max_pixels: int = 25_000_000  # width x height from the image header; larger images get 413
    max_batch_images: int = 8  # images one /predict request may carry (multipart); more get 413
    shadow_dir: str = ""  # when set, store every request's image, mask and record here
    ort_threads: int = 1  # onnxruntime intra-op threads per worker (workers x threads <= cores)
    model_retry_s: float = 30.0  # seconds between attempts to load a model that failed to load
    boot_wait_s: float = 10.0  # a worker waits this long at most for a local model before accepting requests
    registry_timeout_s: int = 10  # seconds per MLflow registry HTTP call (one retry) while loading
    read_timeout_s: float = 10.0  # a request's headers and body must arrive within this, from its first byte
    max_running: int = 1  # predictions computed at once per worker (its onnxruntime threads serve one)
    max_waiting: int = 4  # predictions that may wait for a turn per worker; more get 429
    queue_wait_s: float = 2.0  # longest wait for a turn; longer gets 503 (the client would give up anyway)
    shadow_max_request_bytes: int = 20 * 1024 * 1024  # larger inputs: record and mask only
    shadow_max_total_bytes: int = 1024**3  # the shadow directory's cap; the oldest requests are pruned
    metrics_allow: tuple[str, ...] = ()  # client networks allowed to GET /metrics (CIDR); empty = any
    cors_origins: tuple[str, ...] = ()  # other web origins allowed to call /predict from a browser
    log_level: str = "INFO"


def _int(env: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, minimum: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None
    if not value >= minimum:  # also rejects NaN
        raise ValueError(f"{name} must be >= {minimum}, got {raw}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name} must be a boolean (1/0, true/false), got {raw!r}")


def _list(env: Mapping[str, str], name: str, check=None) -> tuple[str, ...]:
    items = tuple(v.strip() for v in env.get(name, "").split(",") if v.strip())
    for item in items:
        if check is not None:
            try:
                check(item)
            except ValueError as err:
                raise ValueError(f"{name}: {item!r} is not valid ({err})") from None
    return items


def _origin(value: str) -> None:
    if value != "*" and not re.fullmatch(r"https?://[A-Za-z0-9.-]+(:\d{1,5})?", value):
        raise ValueError("expected scheme://host[:port], e.g. https://viewer.example.org")


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Settings from `env` (default: os.environ); raises ValueError naming a bad variable."""
    env = os.environ if env is None else env
    defaults = Settings()
    level = env.get("POLYPSEG_LOG_LEVEL", defaults.log_level).strip().upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError(f"POLYPSEG_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {level!r}")
    return Settings(
        model_path=env.get("POLYPSEG_MODEL_PATH", "").strip() or defaults.model_path,
        model_uri=env.get("POLYPSEG_MODEL_URI", "").strip(),
        allow_staging=_bool(env, "POLYPSEG_ALLOW_STAGING", defaults.allow_staging),
        max_body_bytes=_int(env, "POLYPSEG_MAX_BODY_BYTES", defaults.max_body_bytes, 1),
        max_pixels=_int(env, "POLYPSEG_MAX_PIXELS", defaults.max_pixels, 1),
        max_batch_images=_int(env, "POLYPSEG_MAX_BATCH_IMAGES", defaults.max_batch_images, 1),
        shadow_dir=env.get("POLYPSEG_SHADOW_DIR", "").strip(),
        ort_threads=_int(env, "POLYPSEG_ORT_THREADS", defaults.ort_threads, 1),
        model_retry_s=_float(env, "POLYPSEG_MODEL_RETRY_S", defaults.model_retry_s, 0.0),
        boot_wait_s=_float(env, "POLYPSEG_BOOT_WAIT_S", defaults.boot_wait_s, 0.0),
        registry_timeout_s=_int(env, "POLYPSEG_REGISTRY_TIMEOUT_S", defaults.registry_timeout_s, 1),
        read_timeout_s=_float(env, "POLYPSEG_READ_TIMEOUT_S", defaults.read_timeout_s, 0.1),
        max_running=_int(env, "POLYPSEG_MAX_RUNNING", defaults.max_running, 1),
        max_waiting=_int(env, "POLYPSEG_MAX_QUEUE", defaults.max_waiting, 0),
        queue_wait_s=_float(env, "POLYPSEG_QUEUE_WAIT_S", defaults.queue_wait_s, 0.01),
        shadow_max_request_bytes=_int(
            env, "POLYPSEG_SHADOW_MAX_REQUEST_BYTES", defaults.shadow_max_request_bytes, 0
        ),
        shadow_max_total_bytes=_int(
            env, "POLYPSEG_SHADOW_MAX_TOTAL_BYTES", defaults.shadow_max_total_bytes, 1
        ),
        metrics_allow=_list(env, "POLYPSEG_METRICS_ALLOW", lambda v: ipaddress.ip_network(v, strict=False)),
        cors_origins=_list(env, "POLYPSEG_CORS_ORIGINS", _origin),
        log_level=level,
    )
