"""The model contract: what `model.json` beside a `model.onnx` holds, with its one writer and one reader.

bin/export.py (fp32), bin/quantize.py (INT8) and the tests' tiny model write it with
`write_model_json`; serving, the MLflow pyfunc model and the benchmark read it with `read_model_json`,
which checks every field and names the one that is missing or malformed. The graph's tensors are
called INPUT_NAME `(batch, 3, S, S) float32` and OUTPUT_NAME `(batch, 1, S, S)` logits.

No torch and no mlflow here: the serving container imports this module.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from lib.decision import LEGACY_MIN_AREA, binary_mask
from lib.io import write_json

INPUT_NAME, OUTPUT_NAME = "input", "logits"
PRECISIONS = ("fp32", "int8")

log = logging.getLogger("polypseg.model")


class ModelContractError(ValueError):
    """A model.json that is missing, unreadable, or has a missing or malformed field."""


@dataclass(frozen=True)
class ModelMeta:
    """Everything a runtime needs besides the graph; field names are model.json's keys."""

    input_size: int  # side of the square model input in pixels
    input_name: str  # graph input tensor
    output_name: str  # graph output tensor (logits)
    mean: tuple[float, float, float]  # per-channel normalisation of [0, 1] RGB, from the checkpoint
    std: tuple[float, float, float]
    threshold: float  # default probability threshold for the mask, chosen on validation (lib/decision.py)
    min_area_fraction: float  # polyp detected when the mask's polyp share reaches this (lib/decision.py)
    decision_chosen_on: str  # where threshold and min_area_fraction were chosen
    model_version: str  # <git sha>-<training run>, from the checkpoint
    git_sha: str  # commit the model was trained at
    data_rev: str  # revision of the data trained on: every source's manifest (data/sources.json)
    opset: int  # ONNX opset of the graph
    sha256: str  # of the ONNX file this model.json describes
    # Provenance the export step adds; absent (None) in hand-made stand-in models.
    run_id: str | None = None  # MLflow training run
    git_dirty: bool | None = None  # trained from a working tree with uncommitted changes
    val_dice: float | None = None  # validation Dice of the checkpoint
    epoch: int | None = None  # epoch of the checkpoint
    encoder: str | None = None  # smp encoder name
    precision: str = "fp32"  # fp32, or int8 (bin/quantize.py's quantized variant)
    fp32_sha256: str | None = None  # int8 only: sha256 of the fp32 graph it was quantized from
    quantization: dict | None = None  # int8 only: the quantization settings
    # Mask regions smaller than this share of the largest are dropped (lib/decision.py binary_mask),
    # chosen on validation with the threshold; 0 (off) for model.json files written before it existed.
    min_component_ratio: float = 0.0

    def mask(self, prob, threshold: float | None = None):
        """The served `(H, W)` bool mask of a probability map: lib.decision.binary_mask at this model's
        threshold (or a client's `threshold`) with this model's component filter."""
        return binary_mask(prob, self.threshold if threshold is None else threshold, self.min_component_ratio)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _text(value: Any) -> bool:
    return isinstance(value, str) and value.strip() != ""


def _triple(positive: bool):
    def ok(value: Any) -> bool:
        return (
            isinstance(value, list)
            and len(value) == 3
            and all(_number(v) and (v > 0 or not positive) for v in value)
        )

    return ok


_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# field -> (check, what it must be); a field absent from this table is optional and checked below.
_CHECKS = {
    "input_size": (
        lambda v: isinstance(v, int) and not isinstance(v, bool) and 8 <= v <= 4096,
        "an integer in [8, 4096]",
    ),
    "input_name": (_text, "a non-empty string"),
    "output_name": (_text, "a non-empty string"),
    "mean": (_triple(positive=False), "a list of 3 numbers"),
    "std": (_triple(positive=True), "a list of 3 positive numbers"),
    "threshold": (lambda v: _number(v) and 0.0 <= v <= 1.0, "a number in [0, 1]"),
    "min_area_fraction": (lambda v: _number(v) and 0.0 <= v <= 1.0, "a number in [0, 1]"),
    "decision_chosen_on": (_text, "a non-empty string"),
    "model_version": (_text, "a non-empty string"),
    "git_sha": (_text, "a non-empty string"),
    "data_rev": (_text, "a non-empty string"),
    "opset": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "a positive integer"),
    "sha256": (lambda v: isinstance(v, str) and bool(_SHA256.match(v)), "64 lowercase hex digits"),
}
_OPTIONAL = {
    "run_id": (_text, "a non-empty string or null"),
    "git_dirty": (lambda v: isinstance(v, bool), "true, false or null"),
    "val_dice": (_number, "a number or null"),
    "epoch": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer or null"),
    "encoder": (lambda v: isinstance(v, str), "a string or null"),
    "precision": (lambda v: v in PRECISIONS, f"one of {', '.join(PRECISIONS)}"),
    "fp32_sha256": (
        lambda v: isinstance(v, str) and bool(_SHA256.match(v)),
        "64 lowercase hex digits or null",
    ),
    "quantization": (lambda v: isinstance(v, dict), "an object or null"),
    "min_component_ratio": (lambda v: _number(v) and 0.0 <= v <= 1.0, "a number in [0, 1] or null"),
}


def check_fields(raw: Any, where: str = "model.json") -> list[str]:
    """Every problem of a parsed model.json, each naming its field; empty when it is valid.

    `min_area_fraction` (and with it `decision_chosen_on`) may be absent: see `read_model_json`.
    """
    if not isinstance(raw, dict):
        return [f"{where}: expected a JSON object, got {type(raw).__name__}"]
    legacy = "min_area_fraction" not in raw
    problems = []
    for key, (ok, what) in _CHECKS.items():
        if key not in raw:
            if not (legacy and key in ("min_area_fraction", "decision_chosen_on")):
                problems.append(f"{where}: no {key!r}")
        elif not ok(raw[key]):
            problems.append(f"{where}: {key!r} must be {what}, got {raw[key]!r}")
    for key, (ok, what) in _OPTIONAL.items():
        if raw.get(key) is not None and not ok(raw[key]):
            problems.append(f"{where}: {key!r} must be {what}, got {raw[key]!r}")
    return problems


def meta_from_dict(raw: Any, where: str = "model.json", source: str = "") -> ModelMeta:
    """A checked ModelMeta from a parsed model.json; ModelContractError naming every bad field.

    A model.json exported before the image-level rule existed has no `min_area_fraction`: it loads as
    lib.decision.LEGACY_MIN_AREA (any polyp pixel means detected) with one warning, and its
    `decision_chosen_on` as "unknown". Keys the contract does not know are ignored.
    """
    problems = check_fields(raw, where)
    if problems:
        raise ModelContractError("; ".join(problems))
    values = {f.name: raw[f.name] for f in fields(ModelMeta) if raw.get(f.name) is not None}
    if "min_area_fraction" not in raw:
        log.warning(
            f"model.json has no min_area_fraction; using {LEGACY_MIN_AREA} (any polyp pixel means detected)",
            extra={"fields": {"model": source or where}},
        )
        values["min_area_fraction"] = LEGACY_MIN_AREA
        values.setdefault("decision_chosen_on", "unknown")
    for key in ("mean", "std"):
        values[key] = tuple(float(v) for v in values[key])
    for key in ("threshold", "min_area_fraction", "val_dice", "min_component_ratio"):
        if key in values:
            values[key] = float(values[key])
    return ModelMeta(**values)


def read_model_json(path: str | Path, source: str = "") -> ModelMeta:
    """Read and check `model.json`; `source` names the model in the legacy warning (default: the path)."""
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise ModelContractError(f"cannot read model metadata {path}: {err}") from err
    return meta_from_dict(raw, str(path), source)


def meta_to_dict(meta: ModelMeta) -> dict:
    """model.json's content: every field, less the optional ones that are None."""
    plain = asdict(meta)
    plain["mean"], plain["std"] = list(meta.mean), list(meta.std)
    problems = check_fields(plain, "ModelMeta")
    if problems:
        raise ModelContractError("; ".join(problems))
    return {k: v for k, v in plain.items() if v is not None}


def write_model_json(path: str | Path, meta: ModelMeta) -> Path:
    """Write `meta` as `model.json` (checked first, readable by a serving user); returns the path."""
    write_json(path, meta_to_dict(meta))
    return Path(path)
