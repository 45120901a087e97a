#!/usr/bin/env python3
"""Benchmark one training step of the default model: all stages trained, early encoder stages frozen,
torch.compile; ms per image and the ratio to the full step, same run (the lever "cheaper epochs").

Random inputs at the training size: a step's cost does not depend on the pixels. Data loading and
augmentation are not included (in a real epoch they add a fixed cost per image, so the ratios of whole
epochs are closer to 1 than these).

Usage: bin/bench_train_step.py --conf conf/bench_train_step.yaml [--set 'modes=[...]']
"""

from __future__ import annotations

import resource
import statistics
import sys
import time
from dataclasses import dataclass

import torch

from lib.cli import parser, script
from lib.config import from_dict, load_config, read_yaml_mapping
from lib.io import write_json
from lib.losses import build_loss
from lib.model import ModelConfig, build_model, freeze_encoder_stages
from lib.training import Trainer, pick_device, resolve_speed_switches, seed_everything, train_step


@dataclass(frozen=True)
class Mode:
    name: str
    freeze_encoder_stages: int  # as optim.freeze_encoder_stages in conf/train.yaml
    compile: bool  # torch.compile the model (its first steps compile; timed steps come after)


@dataclass(frozen=True)
class BenchTrainStepConfig:
    train_conf: str  # conf/train.yaml: model, loss, batch size, runtime switches
    modes: tuple[Mode, ...]  # the first is the baseline of the ratios
    warmup_steps: int  # untimed steps per mode (compilation happens here)
    steps: int  # timed steps per mode; the median is reported
    out: str  # reports/bench/train_step.json


def time_mode(mode: Mode, train: dict, cfg: BenchTrainStepConfig, device: torch.device) -> dict:
    """One mode: median ms per image of training's step (forward, loss, backward, AdamW), and more."""
    amp, channels_last = resolve_speed_switches(
        device, train["runtime"]["amp"], train["runtime"]["channels_last"]
    )
    seed_everything(train["seed"])
    model = build_model(from_dict(ModelConfig, train["model"])).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    freeze_encoder_stages(model, mode.freeze_encoder_stages)  # also puts the frozen stages in eval mode
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    loss_cfg = train["loss"]
    loss_fn = build_loss(
        loss_cfg["kind"], loss_cfg["bce_weight"], loss_cfg["dice_weight"], loss_cfg["structure_kernel"]
    )
    optimiser = torch.optim.AdamW(model.parameters(), lr=train["optim"]["lr"])
    trainer = Trainer(  # training's own step (lib.training.train_step), at a constant learning rate
        model=torch.compile(model) if mode.compile else model,
        loss_fn=loss_fn,
        optimiser=optimiser,
        scheduler=torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: 1.0),
        device=device,
        amp=amp,
        channels_last=channels_last,
    )
    batch, size = train["optim"]["batch_size"], train["model"]["input_size"]
    x = torch.rand(batch, 3, size, size, device=device)
    x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    y = (torch.rand(batch, 1, size, size, device=device) > 0.8).float()
    times, faults, first = [], [], None
    for step in range(cfg.warmup_steps + cfg.steps):
        faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start = time.perf_counter()
        train_step(trainer, x, y)
        if device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        first = elapsed if first is None else first
        if step >= cfg.warmup_steps:
            times.append(elapsed)
            # Pages mapped afresh (zero-filled) during the step: memory the allocator gave back to the
            # OS and took again, a cost that is neither forward nor backward (serve/memory.py).
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before)
    median = statistics.median(times)
    print(
        f"bench_train_step: {mode.name}: {median * 1000 / batch:.0f} ms/img (first step {first:.1f} s, "
        f"{statistics.median(faults):.0f} minor page faults a step)",
        flush=True,
    )
    return {
        "ms_per_image": median * 1000 / batch,
        "minor_page_faults_per_step": statistics.median(faults),
        "first_step_s": first,
        "trainable_parameters": trainable,
        "freeze_encoder_stages": mode.freeze_encoder_stages,
        "compile": mode.compile,
    }


@script("bench_train_step")
def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0], "conf/bench_train_step.yaml")
    args = p.parse_args(argv)
    cfg = load_config(BenchTrainStepConfig, args.conf, args.overrides)
    train = read_yaml_mapping(cfg.train_conf)
    device = pick_device(train["runtime"]["device"])
    torch.set_num_threads(train["runtime"]["threads"])
    results = {mode.name: time_mode(mode, train, cfg, device) for mode in cfg.modes}
    base = results[cfg.modes[0].name]["ms_per_image"]
    for result in results.values():
        result["ratio_to_" + cfg.modes[0].name] = result["ms_per_image"] / base
    report = {
        "model": train["model"],
        "batch_size": train["optim"]["batch_size"],
        "device": device.type,
        "threads": torch.get_num_threads(),
        "steps": cfg.steps,
        "results": results,
    }
    write_json(cfg.out, report)
    ratios = ", ".join(f"{n} {r['ratio_to_' + cfg.modes[0].name]:.2f}x" for n, r in results.items())
    print(f"bench_train_step: {ratios} of {cfg.modes[0].name} -> {cfg.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
