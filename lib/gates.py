"""Release gates: pure functions from report contents (plain dicts, None when missing) to results.

Used by bin/gates.py (make gates) and bin/promote.py, which refuses to promote unless all pass.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, replace


@dataclass(frozen=True)
class GateResult:
    name: str
    passed: bool
    value: str  # what was measured, formatted for the table
    requirement: str  # what it had to be
    detail: str = ""  # why it failed, or where the value came from


def _missing(name: str, requirement: str, what: str) -> GateResult:
    return GateResult(name, False, "missing", requirement, f"no {what}")


def dice_gate(metrics: dict | None, min_dice: float, source: str = "test metrics") -> GateResult:
    """Test-split mean Dice (`dice_mean` of reports/eval/test/metrics.json) must reach `min_dice`."""
    requirement = f">= {min_dice:.2f}"
    if metrics is None or not isinstance(metrics.get("dice_mean"), (int, float)):
        return _missing("test_dice", requirement, f"dice_mean in {source}")
    dice = float(metrics["dice_mean"])
    n = metrics.get("n_images", "?")
    return GateResult("test_dice", dice >= min_dice, f"{dice:.4f}", requirement, f"{n} images, {source}")


def parity_gate(parity: dict | None, source: str = "parity report") -> GateResult:
    """The export's PyTorch/onnxruntime parity check must have passed within its tolerance."""
    if parity is None or "mean_abs_diff" not in parity:
        return _missing("onnx_parity", "mean |diff| < tolerance", source)
    tol = float(parity.get("tolerance", 1e-4))
    mean, worst = float(parity["mean_abs_diff"]), float(parity.get("max_abs_diff", float("nan")))
    ok = bool(parity.get("passed", False)) and mean < tol
    return GateResult("onnx_parity", ok, f"{mean:.2e}", f"< {tol:.0e}", f"max {worst:.2e}, {source}")


def model_card_gate(card: dict | None, source: str = "model") -> GateResult:
    """The model (registry version or logged model) must carry a signature and an input example."""
    requirement = "signature + input example"
    if card is None:
        return _missing("model_card", requirement, f"model to inspect ({source})")
    missing = [k for k in ("has_signature", "has_input_example") if not card.get(k)]
    value = "present" if not missing else "missing " + ", ".join(m.removeprefix("has_") for m in missing)
    return GateResult("model_card", not missing, value, requirement, card.get("model_uri", source))


def latency_gate(latency: dict | None, max_p50_ms: float, source: str = "latency report") -> GateResult:
    """CPU p50 latency (the bench's `gate` entry) must stay below `max_p50_ms`."""
    requirement = f"< {max_p50_ms:g} ms"
    gate = (latency or {}).get("gate") or {}
    if not isinstance(gate.get("p50_ms"), (int, float)):
        return _missing("cpu_latency_p50", requirement, f"gate.p50_ms in {source}")
    p50 = float(gate["p50_ms"])
    where = f"{gate.get('measure', '?')}, {gate.get('model', '?')}, {gate.get('threads', '?')} thread(s)"
    return GateResult("cpu_latency_p50", p50 < max_p50_ms, f"{p50:.1f} ms", requirement, where)


def all_passed(results: list[GateResult]) -> bool:
    return bool(results) and all(r.passed for r in results)


def format_table(results: list[GateResult]) -> str:
    """A plain-text table, one gate per row, failures marked FAIL."""
    header = ("gate", "status", "value", "required", "detail")
    rows = [(r.name, "pass" if r.passed else "FAIL", r.value, r.requirement, r.detail) for r in results]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def summarise(results: list[GateResult]) -> dict:
    """JSON-ready record of a gate evaluation (stored as a version tag on promotion)."""
    return {"passed": all_passed(results), "gates": [asdict(r) for r in results]}


# Inputs: the one part that reads files and the registry (bin/gates.py and bin/promote.py share it).


@dataclass(frozen=True)
class GatesConfig:  # conf/gates.yaml holds every value; model_name comes from conf/register.yaml
    metrics: str  # from bin/evaluate.py
    parity: str  # from bin/export.py
    latency: str  # from bin/bench_latency.py
    export_record: str  # logged pyfunc URI, used when nothing is staged
    min_test_dice: float  # test-split mean Dice
    max_p50_ms: float  # CPU p50 latency, milliseconds
    alias: str  # the version about to be promoted
    check_model: bool  # inspect signature + input example in MLflow
    model_uri: str  # inspect this model instead (e.g. models:/m-...); empty = alias, then export_record
    model_name: str  # registered model whose alias is inspected: conf/register.yaml's, filled by load_gates


REPORT_FILES = ("metrics", "parity", "latency")


def add_gate_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options bin/gates.py and bin/promote.py share: other report files, another register config."""
    for name in REPORT_FILES:
        p.add_argument(f"--{name}", help=f"read this file instead of the config's {name}")
    p.add_argument("--register-conf", help="config naming the model (default: register.yaml beside --conf)")
    return p


def load_gates(args: argparse.Namespace) -> GatesConfig:
    """conf/gates.yaml (+ --set), the model named by its register config, and the report files given
    on the command line (plus --model-uri where the script has it). Raises lib.config.ConfigError."""
    from lib.config import load_config
    from lib.tracking import register_conf_for, registered_model_name

    name = registered_model_name(register_conf_for(args.conf, args.register_conf))
    cfg = load_config(GatesConfig, args.conf, [f"model_name={json.dumps(name)}", *args.overrides])
    given = {k: v for k in (*REPORT_FILES, "model_uri") if (v := getattr(args, k, None))}
    return replace(cfg, **given)


def _read(path: str) -> dict | None:
    from lib.io import read_json

    try:
        payload = read_json(path)
    except (OSError, ValueError):
        return None
    return payload if isinstance(payload, dict) else None


def model_card_for(cfg: GatesConfig) -> tuple[dict | None, str]:
    """(card, where): the signature/example check of the staged version, else the logged model."""
    from lib.registry import client, model_card

    uri = cfg.model_uri
    if not uri:
        try:
            client().get_model_version_by_alias(cfg.model_name, cfg.alias)
            uri = f"models:/{cfg.model_name}@{cfg.alias}"
        except Exception:  # no such model or alias (MlflowException), or the store is unreachable
            uri = (_read(cfg.export_record) or {}).get("pyfunc_model_uri", "")
    if not uri:
        return None, f"models:/{cfg.model_name}@{cfg.alias} or {cfg.export_record}"
    try:
        return model_card(uri), uri
    except Exception as exc:  # MLflow raises many types for a missing or unreadable model
        return {"model_uri": uri, "error": str(exc)[:200]}, uri


def gather(cfg: GatesConfig) -> list[GateResult]:
    """Read the reports (and the registry when `check_model`) and evaluate every gate."""
    results = [
        dice_gate(_read(cfg.metrics), cfg.min_test_dice, cfg.metrics),
        parity_gate(_read(cfg.parity), cfg.parity),
    ]
    if cfg.check_model:
        card, where = model_card_for(cfg)
        results.append(model_card_gate(card, where))
    results.append(latency_gate(_read(cfg.latency), cfg.max_p50_ms, cfg.latency))
    return results
