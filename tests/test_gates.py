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
    assert latency_gate({"gate": {"p50_ms": 149.9, "measure": "http_api"}}, 150).passed
    assert not latency_gate({"gate": {"p50_ms": 150.0, "measure": "http_api"}}, 150).passed


def test_table_lists_every_gate_and_marks_failures():
    results = [GateResult("a", True, "1", ">= 1"), GateResult("b", False, "0", ">= 1", "why")]
    table = format_table(results).splitlines()
    assert table[0].split() == ["gate", "status", "value", "required", "detail"]
    assert table[2].split()[:2] == ["a", "pass"] and table[3].split()[:2] == ["b", "FAIL"]
    assert not all_passed(results) and not all_passed([])
    assert summarise(results)["gates"][1]["detail"] == "why"


@pytest.fixture
def local_model(tmp_path: Path, monkeypatch):
    """A tiny local model (model.json with its identity) and an empty MLflow store: nothing is staged,
    so the gates judge the local model."""
    from lib.model_contract import read_model_json
    from tests.support.tinymodel import write_tiny_model

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/empty.db")
    onnx_path = write_tiny_model(tmp_path / "model", size=64)
    meta = read_model_json(onnx_path.with_name("model.json"))
    return onnx_path.with_name("model.json"), meta


@pytest.fixture
def reports(tmp_path: Path, local_model) -> dict:
    _, meta = local_model
    ours = {"model_version": meta.model_version}
    files = {
        "metrics": {"dice_mean": 0.86, "n_images": 150, **ours},
        "parity": {**PARITY_OK, **ours, "sha256": meta.sha256},
        "latency": {
            "gate": {"p50_ms": 21.0, "measure": "http_api", "model": "fp32", "threads": 1},
            **ours,
            "onnx_sha256": meta.sha256,
        },
    }
    paths = {"model_json": local_model[0]}
    for name, payload in files.items():
        paths[name] = tmp_path / f"{name}.json"
        paths[name].write_text(json.dumps(payload))
    return paths


def cli_args(reports: dict, **replace) -> list[str]:
    paths = {**reports, **replace}
    args = ["--conf", str(ROOT / "conf/gates.yaml"), "--set", "check_model=false"]
    args += ["--set", f"model_json={paths['model_json']}"]
    for name in ("metrics", "parity", "latency"):
        args += [f"--{name}", str(paths[name])]
    return args


def test_cli_passes_and_prints_the_table(reports, capsys):
    assert load_bin("gates").main(cli_args(reports)) == 0
    out = capsys.readouterr().out
    assert "test_dice" in out and "api_latency_p50" in out and "3/3 passed" in out
    assert "judging " in out and "models/model.json" not in out  # the tmp model.json was judged


def test_cli_fails_on_a_low_dice_metrics_file(reports, tmp_path, capsys):
    low = tmp_path / "low.json"
    low.write_text(json.dumps({**json.loads(reports["metrics"].read_text()), "dice_mean": 0.61}))
    assert load_bin("gates").main(cli_args(reports, metrics=low)) == 1
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("test_dice"))
    assert "FAIL" in row and "0.6100" in row and "FAILED: test_dice" in out


def test_cli_fails_on_slow_latency_and_missing_parity(reports, tmp_path, capsys):
    slow = tmp_path / "slow.json"
    latency = json.loads(reports["latency"].read_text())
    slow.write_text(json.dumps({**latency, "gate": {**latency["gate"], "p50_ms": 151.0}}))
    assert load_bin("gates").main(cli_args(reports, latency=slow, parity=tmp_path / "absent.json")) == 1
    assert "FAILED: onnx_parity, api_latency_p50" in capsys.readouterr().out


def test_a_report_of_another_model_fails_its_gate_as_stale(reports, tmp_path, capsys):
    # The acceptance case: metrics measured on another model must not pass for this one, however good.
    other = tmp_path / "other_metrics.json"
    other.write_text(json.dumps({"dice_mean": 0.95, "n_images": 150, "model_version": "0000000-other"}))
    assert load_bin("gates").main(cli_args(reports, metrics=other)) == 1
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("test_dice"))
    assert "FAIL" in row and "stale" in row and str(other) in row and "0000000-other" in row


def test_parity_of_another_onnx_file_is_stale(reports, tmp_path, capsys):
    parity = json.loads(reports["parity"].read_text())
    other = tmp_path / "other_parity.json"
    other.write_text(json.dumps({**parity, "sha256": "f" * 64}))
    assert load_bin("gates").main(cli_args(reports, parity=other)) == 1
    assert "FAILED: onnx_parity" in capsys.readouterr().out


def test_latency_measured_in_process_only_does_not_count(reports, tmp_path):
    latency = json.loads(reports["latency"].read_text())
    in_process = tmp_path / "in_process.json"
    in_process.write_text(json.dumps({**latency, "gate": {**latency["gate"], "measure": "end_to_end"}}))
    assert load_bin("gates").main(cli_args(reports, latency=in_process)) == 1


def test_the_registered_name_comes_from_the_register_conf(reports, tmp_path, monkeypatch):
    # conf/register.yaml names the model once; gates (and promote) read it from there, not conf/gates.yaml.
    from lib.tracking import registered_model_name

    assert "model_name" not in yaml.safe_load((ROOT / "conf/gates.yaml").read_text())
    gates, seen = load_bin("gates"), []
    monkeypatch.setattr(gates, "gather", lambda cfg, identity: seen.append(cfg.model_name) or [])
    gates.main(cli_args(reports))
    other = tmp_path / "register.yaml"
    text = (ROOT / "conf/register.yaml").read_text()
    other.write_text(text.replace("model_name: polyp-seg-unet", "model_name: other"))
    gates.main([*cli_args(reports), "--register-conf", str(other)])
    assert seen == ["polyp-seg-unet", "other"]
    assert registered_model_name(ROOT / "conf/register.yaml") == "polyp-seg-unet"


def test_with_no_model_to_judge_the_table_still_lists_every_gate(reports, tmp_path, capsys):
    args = [*cli_args(reports), "--set", f"model_json={tmp_path / 'absent' / 'model.json'}"]
    assert load_bin("gates").main(args) == 1
    out = capsys.readouterr().out
    assert "FAILED: model_identity" in out and "test_dice" in out and "api_latency_p50" in out
