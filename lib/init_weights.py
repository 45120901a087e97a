"""Initial weights for fine-tuning (`train.init_from`): a checkpoint path or a registered model version.

Contract (bin/train.py calls both right after `build_model`, before the optimiser is made):

- `resolve_init_checkpoint(spec, cache_dir) -> Path`: the local checkpoint file `spec` names.
  `spec` is one of
    * a path to a checkpoint in bin/train.py's format (models/best.pt); it must exist;
    * `models:/NAME@ALIAS` or `models:/NAME/N`: a version of a registered model, resolved with
      MlflowClient against lib.tracking.set_tracking()'s store (alias -> version -> run_id); the
      checkpoint is the run's artifact CHECKPOINT_ARTIFACT (bin/export.py logs it beside
      the ONNX model it registers), downloaded into `cache_dir/<NAME>-v<N>/` (overwritten each time).
  Raises InitWeightsError (a ValueError) naming the spec and what is missing: the file, the registered
  model, the alias, the version, its run, or the checkpoint artifact (versions exported before the
  checkpoint was logged have none: re-export and register them, or pass the checkpoint's path).

- `load_init_weights(model, checkpoint_path, model_config) -> dict`: load the checkpoint's state dict
  into `model` (already built from `model_config`, the ModelConfig of this training run) and return a
  copy of the checkpoint's `metadata` (model_version, run_id, git_sha, data_rev, epoch, val_dice), for
  the training run to record what it started from. Raises InitWeightsError when the checkpoint's
  architecture (ARCHITECTURE_FIELDS of its model_config) differs from `model_config`'s, naming each
  field, or when the file is not such a checkpoint. Only the weights are taken: the optimiser, the
  schedule, the normalisation and the threshold come from this run's config. The file is read with
  `torch.load(weights_only=True)`: a downloaded file runs no code.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

# Where a registered version keeps the PyTorch weights its ONNX came from (lib/registry.py logs it there;
# defined here so training, which reads it, does not depend on the registry code).
CHECKPOINT_ARTIFACT = "checkpoint/best.pt"

MODELS_SCHEME = "models:/"
# The ModelConfig fields that make a state dict fit a model (encoder_weights only picks the start point).
ARCHITECTURE_FIELDS = ("arch", "encoder", "decoder_channels", "input_size")
_MODEL_URI = re.compile(r"models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>[0-9]+))")


class InitWeightsError(ValueError):
    """`train.init_from` names no usable checkpoint, or one that does not fit the model."""


def resolve_init_checkpoint(spec: str, cache_dir: str | Path) -> Path:
    """The local checkpoint file of `spec` (a path, `models:/NAME@ALIAS` or `models:/NAME/N`)."""
    spec = str(spec).strip()
    if not spec:
        raise InitWeightsError(
            "init_from is empty: give a checkpoint path, models:/NAME@ALIAS or models:/NAME/N"
        )
    if not spec.startswith(MODELS_SCHEME):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise InitWeightsError(f"init_from {spec}: no such checkpoint file")
        return path
    match = _MODEL_URI.fullmatch(spec)
    if match is None:
        raise InitWeightsError(
            f"init_from {spec}: not a registered model version; use models:/NAME@ALIAS or models:/NAME/N"
        )
    return _download_version_checkpoint(
        spec, match["name"], match["alias"], match["version"], Path(cache_dir)
    )


def _download_version_checkpoint(
    spec: str, name: str, alias: str | None, version: str | None, cache_dir: Path
) -> Path:
    from mlflow.exceptions import MlflowException

    from lib.tracking import set_tracking

    mlflow = set_tracking()
    client = mlflow.MlflowClient()
    where = mlflow.get_tracking_uri()
    try:
        registered = client.get_registered_model(name)
    except MlflowException:
        raise InitWeightsError(f"init_from {spec}: no registered model {name!r} in {where}") from None
    try:
        if alias is not None:
            mv = client.get_model_version_by_alias(name, alias)
        else:
            mv = client.get_model_version(name, version)
    except MlflowException:
        if alias is not None:
            known = ", ".join(sorted(registered.aliases)) or "none"
            raise InitWeightsError(
                f"init_from {spec}: {name} has no alias {alias!r} (aliases: {known})"
            ) from None
        versions = sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
        known = ", ".join(map(str, versions)) or "none"
        raise InitWeightsError(
            f"init_from {spec}: {name} has no version {version} (versions: {known})"
        ) from None
    label = f"{name} v{mv.version}"
    if not mv.run_id:
        raise InitWeightsError(f"init_from {spec}: {label} records no source run, so no checkpoint")
    folder = CHECKPOINT_ARTIFACT.rsplit("/", 1)[0]
    try:
        listed = {f.path for f in client.list_artifacts(mv.run_id, folder)}
    except (MlflowException, OSError) as exc:
        raise InitWeightsError(
            f"init_from {spec}: cannot list the artifacts of run {mv.run_id} of {label}: {exc}"
        ) from exc
    if CHECKPOINT_ARTIFACT not in listed:
        raise InitWeightsError(
            f"init_from {spec}: run {mv.run_id} of {label} has no checkpoint artifact {CHECKPOINT_ARTIFACT} "
            "(registered before bin/export.py logged the checkpoint?); re-export and register it, "
            "or give the checkpoint's path"
        )
    dest = cache_dir / f"{re.sub(r'[^A-Za-z0-9._-]', '_', name)}-v{mv.version}"
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # bars garble logs, as in registry
    try:
        local = mlflow.artifacts.download_artifacts(
            run_id=mv.run_id, artifact_path=CHECKPOINT_ARTIFACT, dst_path=str(dest)
        )
    except (MlflowException, OSError) as exc:
        raise InitWeightsError(
            f"init_from {spec}: cannot download {CHECKPOINT_ARTIFACT} of {label}: {exc}"
        ) from exc
    return Path(local)


def _architecture(config) -> dict:
    values = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    arch = {k: values.get(k) for k in ARCHITECTURE_FIELDS}
    if isinstance(arch["decoder_channels"], (list, tuple)):
        arch["decoder_channels"] = tuple(int(c) for c in arch["decoder_channels"])
    return arch


def load_init_weights(model, checkpoint_path: str | Path, model_config) -> dict:
    """Load the checkpoint's weights into `model` (built from `model_config`); returns its metadata."""
    import torch

    path = Path(checkpoint_path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling, a truncated file, a foreign format: all mean "not usable"
        raise InitWeightsError(f"init_from {path}: cannot read it as a checkpoint: {exc}") from None
    if not isinstance(ckpt, dict) or not {"state_dict", "model_config"} <= set(ckpt):
        raise InitWeightsError(
            f"init_from {path}: not a bin/train.py checkpoint (no state_dict/model_config)"
        )
    theirs, ours = _architecture(ckpt["model_config"]), _architecture(model_config)
    differ = [f"{k} {theirs[k]!r} != {ours[k]!r}" for k in ARCHITECTURE_FIELDS if theirs[k] != ours[k]]
    if differ:
        raise InitWeightsError(
            f"init_from {path}: its architecture differs from model config ({'; '.join(differ)}; "
            "checkpoint != this run)"
        )
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        raise InitWeightsError(f"init_from {path}: its weights do not fit the model: {exc}") from None
    return dict(ckpt.get("metadata") or {})
