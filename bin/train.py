#!/usr/bin/env python3
"""Train the polyp U-Net on the preprocessing cache, tracked in MLflow; saves the best checkpoint.

Usage: bin/train.py --conf conf/train.yaml [--set optim.epochs=3 ...]
"""

from __future__ import annotations

import csv
import resource
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader

from lib.cli import parser, script
from lib.config import flatten, load_config, save_config, to_dict
from lib.data import SegmentationDataset, load_cache, source_blocks, split_rows
from lib.init_weights import load_init_weights, resolve_init_checkpoint
from lib.io import read_image, read_json, read_mask, write_json
from lib.losses import build_loss
from lib.memory import keep_freed_memory
from lib.model import ModelConfig, build_model, freeze_encoder_stages, normalisation
from lib.negatives import CropSpec, crop_negatives
from lib.sources import Catalog, read_catalog
from lib.tracking import data_revision, git_state, setup_mlflow
from lib.training import (
    Trainer,
    WeightAverage,
    count_parameters,
    mixed_loader,
    pick_device,
    resolve_speed_switches,
    seed_everything,
    set_epoch,
    size_for_epoch,
    train_one_epoch,
    validate,
    warmup_cosine,
)
from lib.transforms import AugmentConfig


@dataclass(frozen=True)
class Optim:
    epochs: int  # upper bound on epochs
    batch_size: int  # images per step
    lr: float  # peak learning rate
    weight_decay: float  # AdamW decoupled weight decay
    warmup_epochs: int  # linear warm-up epochs
    lr_floor: float  # final LR as a share of the peak
    patience: int  # epochs without improvement before stopping
    ema_decay: float  # per-step decay of a weight average used for validation and saving; 0 = off
    progressive: tuple[tuple[float, int], ...]  # ((until share of epochs, side px), ...); then full size
    freeze_encoder_stages: int  # 0 = train all; k = stem and the first k-1 encoder blocks frozen


@dataclass(frozen=True)
class Loss:
    kind: Literal["bce_dice", "structure"]  # structure = PraNet's weighted BCE + weighted IoU
    bce_weight: float  # bce_dice only
    dice_weight: float  # bce_dice only
    structure_kernel: int  # structure only: boundary window side, px


@dataclass(frozen=True)
class Runtime:
    device: str  # auto, cpu or cuda
    amp: bool | str  # bf16 autocast on CPU, fp16 on CUDA; auto = only where it is faster
    channels_last: bool | str  # NHWC memory format; auto = only where it is faster
    threads: int  # torch intra-op threads
    workers: int  # data-loader processes
    log_every: int  # steps between progress lines; 0 = none
    keep_freed_memory: bool  # pin glibc malloc's thresholds: each step reuses the last one's buffers


@dataclass(frozen=True)
class Negatives:
    per_batch: int  # polyp-free crops in each batch (of optim.batch_size); 0 = off
    crops: CropSpec  # sizes, margin and darkness limits of the crops (lib/negatives.py)


@dataclass(frozen=True)
class TrainConfig:
    """conf/train.yaml (or conf/smoke/train.yaml). No field here, in Optim, Loss, Runtime, Negatives or
    ModelConfig has a default: every value lives in the YAML, and a missing key is a config error
    naming the file and the key."""

    seed: int
    catalog: str  # data/catalog.csv: originals of every source (negative crops), source of each stem
    sources_summary: str  # data/sources.json: each source's sampling weight, data_rev
    cache_dir: str
    train_split: str
    val_split: str
    out_dir: str
    metrics: str
    limit: int | None  # first N stems per split; None = all
    experiment: str  # MLflow experiment name
    threshold: float  # pixel probability threshold: validated at, stored in best.pt, evaluate starts from it
    init_from: str | None  # start from these weights: a checkpoint path, models:/NAME@alias or models:/NAME/N
    run_name: str | None  # the MLflow run's name; None = "train <git sha>"
    model: ModelConfig  # architecture, encoder, input size (lib/model.py)
    optim: Optim  # schedule and early stopping
    loss: Loss  # training loss
    runtime: Runtime  # device, precision, threads
    augment: AugmentConfig  # training-time augmentation (lib/transforms.py)
    negatives: Negatives  # polyp-free crops mixed into batches


def train_negatives(cfg: TrainConfig, catalog: Catalog, stems: list[str]) -> np.ndarray:
    """Polyp-free crops of the training frames (every training source) at the model input size."""
    images, masks = catalog.images, catalog.masks
    crops = []
    for stem in sorted(stems):
        crops += crop_negatives(
            read_image(images[stem]),
            read_mask(masks[stem]),
            cfg.negatives.crops,
            cfg.seed,
            stem,
            cfg.model.input_size,
        )
    if not crops:
        raise ValueError(f"no polyp-free crops found in {len(stems)} training frames")
    print(f"train: {len(crops)} polyp-free crops from {len(stems)} training frames", flush=True)
    return np.stack(crops)


@script("train")
def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__.splitlines()[0], "conf/train.yaml").parse_args(argv)
    cfg = load_config(TrainConfig, args.conf, args.overrides)
    if cfg.runtime.keep_freed_memory:  # before the first large buffer, so none is ever given back
        keep_freed_memory()
    seed_everything(cfg.seed)
    torch.set_num_threads(cfg.runtime.threads)
    cv2.setNumThreads(1)  # OpenCV's own thread pool would fight torch's OpenMP threads for the cores
    device = pick_device(cfg.runtime.device)
    amp, channels_last = resolve_speed_switches(device, cfg.runtime.amp, cfg.runtime.channels_last)
    mean, std = normalisation(cfg.model.encoder)

    images, masks, rows = load_cache(cfg.cache_dir)
    if images.shape[1] != cfg.model.input_size:
        print(
            f"train: cache is {images.shape[1]}px but model.input_size is {cfg.model.input_size}",
            file=sys.stderr,
        )
        return 2
    catalog = read_catalog(cfg.catalog)
    weights = {name: s["weight"] for name, s in read_json(cfg.sources_summary)["sources"].items()}
    train_rows = split_rows(cfg.train_split, rows, cfg.limit)
    val_rows = split_rows(cfg.val_split, rows, cfg.limit)
    # Rows grouped by source (order kept within one), each source's block drawn by its weight.
    train_rows, blocks = source_blocks(train_rows, rows, catalog, weights)
    train_set = SegmentationDataset(images, masks, train_rows, mean, std, cfg.augment, cfg.seed)
    val_set = SegmentationDataset(images, masks, val_rows, mean, std)
    negatives, n_neg = None, 0
    if cfg.negatives.per_batch:
        wanted = set(train_rows)
        neg_images = train_negatives(cfg, catalog, [stem for stem, row in rows.items() if row in wanted])
        n_neg = len(neg_images)
        neg_masks = np.zeros(neg_images.shape[:3], np.uint8)
        negatives = SegmentationDataset(
            neg_images, neg_masks, range(n_neg), mean, std, cfg.augment, cfg.seed + 1
        )
    train_loader = mixed_loader(
        train_set,
        negatives,
        cfg.optim.batch_size,
        cfg.negatives.per_batch,
        cfg.seed,
        cfg.runtime.workers,
        blocks,
    )
    val_loader = DataLoader(val_set, cfg.optim.batch_size * 2, num_workers=cfg.runtime.workers)

    model = build_model(cfg.model)
    init = {}
    if cfg.init_from:  # fine-tuning: the base's weights, same architecture (checked)
        init = load_init_weights(
            model, resolve_init_checkpoint(cfg.init_from, Path(cfg.out_dir) / "init"), cfg.model
        )
        print(
            f"train: weights from {cfg.init_from} (model_version {init.get('model_version', '?')})",
            flush=True,
        )
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    loss_fn = build_loss(cfg.loss.kind, cfg.loss.bce_weight, cfg.loss.dice_weight, cfg.loss.structure_kernel)
    frozen = freeze_encoder_stages(model, cfg.optim.freeze_encoder_stages)
    # Frozen parameters never get a gradient, so AdamW leaves them (and their weight decay) alone.
    optimiser = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    total_steps = cfg.optim.epochs * len(train_loader)
    warmup = cfg.optim.warmup_epochs * len(train_loader)
    trainer = Trainer(  # the parts every step uses, fixed for the run
        model=model,
        loss_fn=loss_fn,
        optimiser=optimiser,
        scheduler=torch.optim.lr_scheduler.LambdaLR(
            optimiser, lambda s: warmup_cosine(s, total_steps, warmup, cfg.optim.lr_floor)
        ),
        device=device,
        amp=amp,
        channels_last=channels_last,
        scaler=torch.amp.GradScaler("cuda") if device.type == "cuda" and amp else None,
        log_every=cfg.runtime.log_every,
        average=WeightAverage(model, cfg.optim.ema_decay) if cfg.optim.ema_decay else None,
        frozen=frozen,
    )

    sha, dirty = git_state()
    data_rev = data_revision(cfg.sources_summary)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    mlflow = setup_mlflow(cfg.experiment)
    with mlflow.start_run(run_name=cfg.run_name or f"train {sha[:7]}") as run:
        model_version = f"{sha[:7]}-{run.info.run_id[:8]}"
        mlflow.set_tags(
            {
                "git_sha": sha,
                "git_dirty": str(dirty),
                "data_rev": data_rev,
                "model_version": model_version,
                "device": device.type,
                "data_sources": ",".join(weights),  # the catalog's sources (data/sources.json)
                "init_from": cfg.init_from or "",
                "init_model_version": init.get("model_version", ""),
            }
        )
        mlflow.log_params(
            {
                **flatten(to_dict(cfg)),
                "n_train": len(train_set),
                "n_train_negatives": n_neg,
                "n_val": len(val_set),
                "n_parameters": count_parameters(model),
            }
        )
        print(
            f"train: {len(train_set)} train / {len(val_set)} val images on {device} (amp={amp}, "
            f"channels_last={channels_last}), run {run.info.run_id}"
        )
        best, best_epoch, history, start = -1.0, 0, [], time.time()
        for epoch in range(1, cfg.optim.epochs + 1):
            t0 = time.time()
            set_epoch(train_loader, epoch)
            size = size_for_epoch(epoch, cfg.optim.epochs, cfg.optim.progressive, cfg.model.input_size)
            loss = train_one_epoch(trainer, train_loader, size)
            scored = trainer.scored()  # what is validated is what is saved
            val = validate(scored, val_loader, device, amp, channels_last, cfg.threshold)
            elapsed = time.time() - t0
            history.append(
                {
                    "epoch": epoch,
                    "size": size,
                    "loss": loss,
                    **{f"val_{k}": v for k, v in val.items()},
                    "lr": trainer.scheduler.get_last_lr()[0],
                    "seconds": elapsed,
                }
            )
            mlflow.log_metrics({k: v for k, v in history[-1].items() if k != "epoch"}, step=epoch)
            improved = val["dice"] > best
            if improved:
                best, best_epoch = val["dice"], epoch
                torch.save(
                    {
                        "state_dict": scored.state_dict(),
                        "model_config": asdict(cfg.model),
                        "config": to_dict(cfg),
                        "mean": list(mean),
                        "std": list(std),
                        "threshold": cfg.threshold,  # the operating threshold's one source
                        "metadata": {
                            "git_sha": sha,
                            "git_dirty": dirty,
                            "data_rev": data_rev,
                            "model_version": model_version,
                            "run_id": run.info.run_id,
                            "epoch": epoch,
                            "val_dice": val["dice"],
                            "init_from": cfg.init_from,
                            "init_model_version": init.get("model_version"),
                        },
                    },
                    out / "best.pt",
                )
            eta = (time.time() - start) / epoch * (cfg.optim.epochs - epoch)
            print(
                f"epoch {epoch}/{cfg.optim.epochs} loss {loss:.4f} val_dice {val['dice']:.4f} "
                f"val_iou {val['iou']:.4f} {elapsed:.0f}s eta {eta / 60:.1f}m{' *' if improved else ''}",
                flush=True,
            )
            if epoch - best_epoch >= cfg.optim.patience:
                print(f"train: early stop, no better val Dice for {cfg.optim.patience} epochs")
                break
        wall = time.time() - start
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        with open(out / "history.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(history[0]))
            writer.writeheader()
            writer.writerows(history)
        summary = {
            "best_val_dice": best,
            "best_epoch": best_epoch,
            "epochs_run": len(history),
            "wall_seconds": wall,
            "peak_rss_mb": peak_mb,
            "run_id": run.info.run_id,
            "model_version": model_version,
            "device": device.type,
            "amp": amp,
            "channels_last": channels_last,
        }
        write_json(cfg.metrics, summary)
        mlflow.log_metrics({"best_val_dice": best, "wall_seconds": wall, "peak_rss_mb": peak_mb})
        for path in (out / "config.yaml", out / "history.csv", "requirements.lock", out / "best.pt"):
            mlflow.log_artifact(str(path), artifact_path="training")
    print(
        f"train: best val_dice={best:.4f} at epoch {best_epoch}, {wall / 60:.1f} min, "
        f"peak RSS {peak_mb:.0f} MB -> {out / 'best.pt'} (run {run.info.run_id})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
