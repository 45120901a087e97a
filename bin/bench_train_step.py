#!/usr/bin/env python3
"""Benchmark one training step of the default model: all stages trained, early encoder stages frozen,
torch.compile, malloc left to tune itself; ms per image and the ratio to the first mode, same run
(the lever "cheaper epochs").

Random inputs at the training size: a step's cost does not depend on the pixels. Data loading and
augmentation are not included (in a real epoch they add a fixed cost per image, so the ratios of whole
epochs are closer to 1 than these). Each mode runs in a new Python process of its own (this script
with the internal `--one-mode NAME`): malloc's thresholds (lib/memory.py) cannot be unset once pinned,
and one mode's heap, thread pool or compiled graphs must not carry into the next. The modes take
turns for `rounds` rounds, so a machine that slows down during the run slows every mode alike.

Usage: bin/bench_train_step.py --conf conf/bench_train_step.yaml [--set 'modes=[...]']
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from lib.cli import parser, script
from lib.config import from_dict, load_config, read_yaml_mapping
from lib.io import write_json
from lib.losses import build_loss
from lib.memory import keep_freed_memory
from lib.model import ModelConfig, build_model, freeze_encoder_stages
from lib.training import Trainer, pick_device, resolve_speed_switches, seed_everything, train_step

ROOT = Path(__file__).resolve().parents[1]  # the repository: children import lib/ from here
MODE_TIMEOUT_S = 3600  # one mode's process; a cold torch.compile takes minutes on 2 cores, a hang forever


@dataclass(frozen=True)
class Mode:
    name: str
    freeze_encoder_stages: int  # as optim.freeze_encoder_stages in conf/train.yaml
    compile: bool  # torch.compile the model (its first steps compile; timed steps come after)
    keep_freed_memory: bool  # pin glibc malloc's thresholds first, as runtime.keep_freed_memory in training


@dataclass(frozen=True)
class BenchTrainStepConfig:
    train_conf: str  # conf/train.yaml: model, loss, batch size, runtime switches
    modes: tuple[Mode, ...]  # the first is the baseline of the ratios
    warmup_steps: int  # untimed steps per mode and round (compilation happens here)
    steps: int  # timed steps per mode and round; the median over all rounds is reported
    rounds: int  # the modes take turns this many times, each turn in a fresh process
    out: str  # reports/bench/train_step.json


def time_mode(mode: Mode, train: dict, cfg: BenchTrainStepConfig) -> dict:
    """One mode in this (fresh) process: the seconds of each timed step of training's own step (forward,
    loss, backward, AdamW), its page faults, and more."""
    pinned = keep_freed_memory() if mode.keep_freed_memory else False  # before the first tensor
    device = pick_device(train["runtime"]["device"])
    torch.set_num_threads(train["runtime"]["threads"])
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
            # OS and took again, a cost that is neither forward nor backward (lib/memory.py).
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before)
    return {
        "step_seconds": times,
        "minor_page_faults": faults,
        "first_step_s": first,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "trainable_parameters": trainable,
        "malloc_thresholds_pinned": pinned,
        "device": device.type,
        "threads": torch.get_num_threads(),
        "pid": os.getpid(),
    }


def time_mode_in_fresh_process(mode: Mode, argv: list[str]) -> dict:
    """time_mode in a new Python process running this script for one mode: its allocator settings, heap
    and threads end with it. (A forked child would inherit the parent's OpenMP and allocator state, and
    hangs once the parent has run a tensor operation.)"""
    with tempfile.TemporaryDirectory(prefix="bench_train_step_") as tmp:
        result = Path(tmp) / "mode.json"
        env = dict(os.environ)  # lib/ must import in the child as it does here
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        done = subprocess.run(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                *argv,
                "--one-mode",
                mode.name,
                "--result",
                str(result),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
            timeout=MODE_TIMEOUT_S,
        )
        if done.returncode != 0 or not result.is_file():
            reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"mode {mode.name}: exit {done.returncode}: {reason}")
        return json.loads(result.read_text())


def summarise(mode: Mode, rounds: list[dict], batch: int) -> dict:
    """One mode over its rounds: median ms per image over every timed step, and each round's median."""
    times = [t for r in rounds for t in r["step_seconds"]]
    median = statistics.median(times)
    faults = statistics.median(f for r in rounds for f in r["minor_page_faults"])
    peak_rss_mb = max(r["peak_rss_mb"] for r in rounds)
    print(
        f"bench_train_step: {mode.name}: {median * 1000 / batch:.0f} ms/img over {len(rounds)} round(s) "
        f"(first step {rounds[0]['first_step_s']:.1f} s, {faults:.0f} minor page faults a step, "
        f"peak RSS {peak_rss_mb:.0f} MB)",
        flush=True,
    )
    return {
        "ms_per_image": median * 1000 / batch,
        "ms_per_image_by_round": [statistics.median(r["step_seconds"]) * 1000 / batch for r in rounds],
        "minor_page_faults_per_step": faults,
        "first_step_s": rounds[0]["first_step_s"],
        "peak_rss_mb": peak_rss_mb,
        "trainable_parameters": rounds[0]["trainable_parameters"],
        "freeze_encoder_stages": mode.freeze_encoder_stages,
        "compile": mode.compile,
        "keep_freed_memory": mode.keep_freed_memory,
        "malloc_thresholds_pinned": rounds[0]["malloc_thresholds_pinned"],
        "pids": [r["pid"] for r in rounds],
    }


@script("bench_train_step", errors=(ValueError, RuntimeError, subprocess.TimeoutExpired))
def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0], "conf/bench_train_step.yaml")
    p.add_argument("--one-mode", help=argparse.SUPPRESS)  # internal: time one mode in this process
    p.add_argument("--result", help=argparse.SUPPRESS)  # internal: where --one-mode writes its JSON
    args = p.parse_args(argv)
    cfg = load_config(BenchTrainStepConfig, args.conf, args.overrides)
    if cfg.rounds < 1 or cfg.steps < 1 or not cfg.modes:
        raise ValueError("rounds and steps must be at least 1, and modes must not be empty")
    if len({mode.name for mode in cfg.modes}) != len(cfg.modes):
        raise ValueError("mode names must be unique")
    train = read_yaml_mapping(cfg.train_conf)
    if args.one_mode:  # a child started by time_mode_in_fresh_process
        mode = next(m for m in cfg.modes if m.name == args.one_mode)
        write_json(args.result, time_mode(mode, train, cfg))
        return 0
    child_argv = ["--conf", args.conf, *(arg for o in args.overrides for arg in ("--set", o))]
    batch = train["optim"]["batch_size"]
    runs: dict[str, list[dict]] = {mode.name: [] for mode in cfg.modes}
    for round_number in range(1, cfg.rounds + 1):
        for mode in cfg.modes:
            runs[mode.name].append(time_mode_in_fresh_process(mode, child_argv))
            last = runs[mode.name][-1]["step_seconds"]
            print(
                f"bench_train_step: round {round_number}/{cfg.rounds} {mode.name}: "
                f"{statistics.median(last) * 1000 / batch:.0f} ms/img",
                flush=True,
            )
    results = {mode.name: summarise(mode, runs[mode.name], batch) for mode in cfg.modes}
    base = results[cfg.modes[0].name]["ms_per_image"]
    for result in results.values():
        result["ratio_to_" + cfg.modes[0].name] = result["ms_per_image"] / base
    report = {
        "model": train["model"],
        "batch_size": batch,
        "device": runs[cfg.modes[0].name][0]["device"],
        "threads": runs[cfg.modes[0].name][0]["threads"],
        "steps": cfg.steps,
        "rounds": cfg.rounds,
        "results": results,
    }
    write_json(cfg.out, report)
    ratios = ", ".join(f"{n} {r['ratio_to_' + cfg.modes[0].name]:.2f}x" for n, r in results.items())
    print(f"bench_train_step: {ratios} of {cfg.modes[0].name} -> {cfg.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
