"""Release gates: each gate passes, fails and reports a missing input; bin/gates.py exits 1 with a table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from bin_helpers import load_bin

from lib.gates import (
    GateResult,
    all_passed,
    dice_gate,
    format_table,
    latency_gate,
    model_card_gate,
    parity_gate,
    summarise,
)

ROOT = Path(__file__).resolve().parents[1]
PARITY_OK = {"passed": True, "mean_abs_diff": 2e-7, "max_abs_diff": 3e-6, "tolerance": 1e-4}


def test_dice_gate_passes_at_the_threshold_and_fails_below():
    assert dice_gate({"dice_mean": 0.80, "n_images": 150}, 0.80).passed
    below = dice_gate({"dice_mean": 0.7999}, 0.80)
    assert not below.passed and below.value == "0.7999"


def test_missing_inputs_fail_and_say_so():
    for result in (dice_gate(None, 0.8), parity_gate(None), model_card_gate(None), latency_gate(None, 150)):
        assert not result.passed and result.value == "missing" and result.detail.startswith("no ")


def test_parity_gate_needs_the_flag_and_the_number():
    assert parity_gate(PARITY_OK).passed
    assert not parity_gate({**PARITY_OK, "passed": False}).passed
    assert not parity_gate({**PARITY_OK, "mean_abs_diff": 2e-4}).passed


def test_model_card_gate_names_what_is_missing():
    assert model_card_gate({"has_signature": True, "has_input_example": True}).passed
    result = model_card_gate({"has_signature": True, "has_input_example": False})
    assert not result.passed and result.value == "missing input_example"


def test_latency_gate_is_strictly_below_the_limit():
    assert latency_gate({"gate": {"p50_ms": 149.9}}, 150).passed
    assert not latency_gate({"gate": {"p50_ms": 150.0}}, 150).passed


def test_table_lists_every_gate_and_marks_failures():
    results = [GateResult("a", True, "1", ">= 1"), GateResult("b", False, "0", ">= 1", "why")]
    table = format_table(results).splitlines()
    assert table[0].split() == ["gate", "status", "value", "required", "detail"]
    assert table[2].split()[:2] == ["a", "pass"] and table[3].split()[:2] == ["b", "FAIL"]
    assert not all_passed(results) and not all_passed([])
    assert summarise(results)["gates"][1]["detail"] == "why"


@pytest.fixture
def reports(tmp_path: Path) -> dict:
    files = {
        "metrics": {"dice_mean": 0.86, "n_images": 150},
        "parity": PARITY_OK,
        "latency": {"gate": {"p50_ms": 21.0, "measure": "end_to_end", "model": "fp32", "threads": 1}},
    }
    paths = {}
    for name, payload in files.items():
        paths[name] = tmp_path / f"{name}.json"
        paths[name].write_text(json.dumps(payload))
    return paths


def cli_args(reports: dict, **replace) -> list[str]:
    paths = {**reports, **replace}
    args = ["--conf", str(ROOT / "conf/gates.yaml"), "--set", "check_model=false"]
    for name in ("metrics", "parity", "latency"):
        args += [f"--{name}", str(paths[name])]
    return args


def test_cli_passes_and_prints_the_table(reports, capsys):
    assert load_bin("gates").main(cli_args(reports)) == 0
    out = capsys.readouterr().out
    assert "test_dice" in out and "cpu_latency_p50" in out and "3/3 passed" in out


def test_cli_fails_on_a_low_dice_metrics_file(reports, tmp_path, capsys):
    low = tmp_path / "low.json"
    low.write_text(json.dumps({"dice_mean": 0.61, "n_images": 150}))
    assert load_bin("gates").main(cli_args(reports, metrics=low)) == 1
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("test_dice"))
    assert "FAIL" in row and "0.6100" in row and "FAILED: test_dice" in out


def test_cli_fails_on_slow_latency_and_missing_parity(reports, tmp_path, capsys):
    slow = tmp_path / "slow.json"
    slow.write_text(json.dumps({"gate": {"p50_ms": 151.0}}))
    assert load_bin("gates").main(cli_args(reports, latency=slow, parity=tmp_path / "absent.json")) == 1
    assert "FAILED: onnx_parity, cpu_latency_p50" in capsys.readouterr().out


def test_the_registered_name_comes_from_the_register_conf(reports, tmp_path, monkeypatch):
    # conf/register.yaml names the model once; gates (and promote) read it from there, not conf/gates.yaml.
    from lib.tracking import registered_model_name

    assert "model_name" not in yaml.safe_load((ROOT / "conf/gates.yaml").read_text())
    gates, seen = load_bin("gates"), []
    monkeypatch.setattr(gates, "gather", lambda cfg: seen.append(cfg.model_name) or [])
    gates.main(cli_args(reports))
    other = tmp_path / "register.yaml"
    text = (ROOT / "conf/register.yaml").read_text()
    other.write_text(text.replace("model_name: polyp-seg-unet", "model_name: other"))
    gates.main([*cli_args(reports), "--register-conf", str(other)])
    assert seen == ["polyp-seg-unet", "other"]
    assert registered_model_name(ROOT / "conf/register.yaml") == "polyp-seg-unet"
