"""Training-step benchmark (bin/bench_train_step.py): a short real run of the CLI on a small model."""

from __future__ import annotations

import json
import os
import sys

import torch
import yaml
from bin_helpers import ROOT, load_bin


def small_train_conf(tmp_path):
    """conf/smoke/train.yaml at 64 px, batch 2, random encoder weights: seconds, not minutes."""
    train = yaml.safe_load((ROOT / "conf/smoke/train.yaml").read_text())
    train["model"] |= {"input_size": 64, "encoder_weights": None}
    train["optim"]["batch_size"] = 2
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(train))
    return path


def test_modes_run_in_turns_in_their_own_processes_and_ratios_are_against_the_first(tmp_path):
    out = tmp_path / "train_step.json"
    modes = (
        "[{name: full, freeze_encoder_stages: 0, compile: false, keep_freed_memory: true},"
        " {name: f3, freeze_encoder_stages: 3, compile: false, keep_freed_memory: false}]"
    )
    # The parent has run parallel tensor work first, as in a full pytest session: a forked child
    # inherited that OpenMP state and hung (the first version forked); a new process does not.
    torch.set_num_threads(2)
    assert float((torch.ones(256, 256) @ torch.ones(256, 256)).sum()) == 256**3
    code = load_bin("bench_train_step").main(
        [
            "--conf", str(ROOT / "conf/bench_train_step.yaml"),
            "--set", f"train_conf={small_train_conf(tmp_path)}",
            "--set", f"modes={modes}",
            "--set", "warmup_steps=1",
            "--set", "steps=2",
            "--set", "rounds=2",
            "--set", f"out={out}",
        ]
    )  # fmt: skip
    assert code == 0
    report = json.loads(out.read_text())
    full, frozen = report["results"]["full"], report["results"]["f3"]
    assert full["ratio_to_full"] == 1.0 and frozen["ratio_to_full"] > 0
    assert 0 < frozen["trainable_parameters"] < full["trainable_parameters"]
    assert full["ms_per_image"] > 0 and report["batch_size"] == 2 and report["steps"] == 2
    assert full["minor_page_faults_per_step"] >= 0 and full["peak_rss_mb"] > 0
    assert len(full["ms_per_image_by_round"]) == 2 and report["rounds"] == 2
    # mallopt ran in the full mode's process only: a fresh process per mode, as the allocator cannot
    # be un-pinned (lib/memory.py); glibc takes the thresholds on Linux
    assert full["malloc_thresholds_pinned"] is sys.platform.startswith("linux")
    assert frozen["malloc_thresholds_pinned"] is False
    pids = full["pids"] + frozen["pids"]
    assert len(set(pids)) == 4 and os.getpid() not in pids


NO_LEVERS = "compile: false, keep_freed_memory: false"


def test_a_failing_mode_names_itself(tmp_path, capsys):
    code = load_bin("bench_train_step").main(
        [
            "--conf", str(ROOT / "conf/bench_train_step.yaml"),
            "--set", f"train_conf={small_train_conf(tmp_path)}",
            "--set", f"modes=[{{name: broken, freeze_encoder_stages: 99, {NO_LEVERS}}}]",
            "--set", "rounds=1",
            "--set", f"out={tmp_path}/out.json",
        ]
    )  # fmt: skip
    assert code == 2
    assert "mode broken" in capsys.readouterr().err


def test_a_missing_train_config_is_a_clear_error(tmp_path, capsys):
    code = load_bin("bench_train_step").main(
        ["--conf", str(ROOT / "conf/bench_train_step.yaml"), "--set", f"train_conf={tmp_path}/none.yaml"]
    )
    assert code == 2
    assert "bench_train_step:" in capsys.readouterr().err
