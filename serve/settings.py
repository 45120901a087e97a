"""Serving settings, read once from environment variables into a frozen structure.

Every variable is optional; a malformed value is an error that names the variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_MODEL_PATH = "models/model.onnx"
REGISTRY_MODEL_URI = "models:/polyp-seg-unet@production"


@dataclass(frozen=True)
class Settings:
    model_path: str = DEFAULT_MODEL_PATH  # local ONNX file; model.json must sit beside it
    model_uri: str = ""  # MLflow registry URI (e.g. models:/polyp-seg-unet@production); wins over model_path
    allow_staging: bool = False  # fall back to the @staging alias when @production is missing
    max_body_bytes: int = 20 * 1024 * 1024  # bytes; larger request bodies get 413
    max_pixels: int = 25_000_000  # width x height from the image header; larger images get 413
    shadow_dir: str = ""  # when set, store every request's image, mask and record here
    ort_threads: int = 1  # onnxruntime intra-op threads per worker (workers x threads <= cores)
    model_retry_s: float = 30.0  # seconds between attempts to load a model that failed to load
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
        shadow_dir=env.get("POLYPSEG_SHADOW_DIR", "").strip(),
        ort_threads=_int(env, "POLYPSEG_ORT_THREADS", defaults.ort_threads, 1),
        model_retry_s=_float(env, "POLYPSEG_MODEL_RETRY_S", defaults.model_retry_s, 0.0),
        log_level=level,
    )
