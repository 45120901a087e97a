"""Release gates: pure functions from report contents (plain dicts, None when missing) to results.

bin/gates.py (make gates) evaluates them for one model and stores the results on its registry version;
bin/promote.py reads those stored results (`stored_gates_problem`) and refuses unless they passed.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, replace

from lib.registry import SHA_TAG, now


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
    """API latency: p50 of POST /predict to the served model (the bench's `gate` entry, measured over
    HTTP) must stay below `max_p50_ms`. An in-process timing alone does not count."""
    requirement = f"< {max_p50_ms:g} ms over HTTP"
    gate = (latency or {}).get("gate") or {}
    if not isinstance(gate.get("p50_ms"), (int, float)):
        return _missing("api_latency_p50", requirement, f"gate.p50_ms in {source}")
    p50 = float(gate["p50_ms"])
    where = f"{gate.get('measure', '?')}, {gate.get('model', '?')}, {gate.get('threads', '?')} thread(s)"
    if gate.get("measure") != "http_api":
        return GateResult(
            "api_latency_p50", False, f"{p50:.1f} ms", requirement, f"not measured over HTTP: {where}"
        )
    return GateResult("api_latency_p50", p50 < max_p50_ms, f"{p50:.1f} ms", requirement, where)


@dataclass(frozen=True)
class ModelIdentity:
    """The model the gates judge: a registered version's tags, or the local model.json."""

    model_version: str  # <git sha>-<training run>
    onnx_sha256: str  # of the fp32 ONNX file
    source: str  # where the identity was read, e.g. models:/polyp-seg-unet@staging (v3)
    version: str | None = None  # the registered version judged; None for the local model.json


def bind(
    result: GateResult, report: dict | None, identity: ModelIdentity, source: str, sha_key: str = ""
) -> GateResult:
    """`result`, or a failure naming `source` when the report measured another model than `identity`.

    Every report records the model it measured (`model_version`, and the ONNX sha256 under `sha_key`
    where the measurement ran the ONNX file); a report of another model, or an older one, is stale.
    """
    if report is None:
        return result  # the gate itself says the report is missing
    problems = []
    if report.get("model_version") != identity.model_version:
        problems.append(f"model_version {report.get('model_version')!r}")
    if sha_key and report.get(sha_key) != identity.onnx_sha256:
        problems.append(f"ONNX sha256 {str(report.get(sha_key))[:12]}")
    if not problems:
        return result
    why = f"{source} measured {' and '.join(problems)}, not {identity.model_version} ({identity.source})"
    return GateResult(result.name, False, "stale", result.requirement, why + ": re-run what writes it")


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


# Inputs: the one part that reads files and the registry (bin/promote.py shares only the config loader).


@dataclass(frozen=True)
class GatesConfig:  # conf/gates.yaml holds every value; model_name comes from conf/register.yaml
    metrics: str  # from bin/evaluate.py
    parity: str  # from bin/export.py
    latency: str  # from bin/bench_latency.py
    export_record: str  # logged pyfunc URI, used when nothing is staged
    model_json: str  # the local model's identity, judged when nothing is staged
    min_test_dice: float  # test-split mean Dice
    max_p50_ms: float  # CPU p50 latency, milliseconds
    alias: str  # the version about to be promoted
    check_model: bool  # inspect signature + input example in MLflow
    model_uri: str  # inspect this model instead (e.g. models:/m-...); empty = alias, then export_record
    model_name: str  # registered model whose alias is inspected: conf/register.yaml's, filled by load_gates


REPORT_FILES = ("metrics", "parity", "latency")


def add_gate_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """bin/gates.py's options: other report files, another register config."""
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


def model_card_for(cfg: GatesConfig, identity: ModelIdentity | None) -> tuple[dict | None, str]:
    """(card, where): the signature/example check of the judged version, else the logged model."""
    from lib.registry import model_card

    uri = cfg.model_uri
    if not uri and identity is not None and identity.version is not None:
        uri = f"models:/{cfg.model_name}@{cfg.alias}"  # judged() found it: no second registry lookup
    if not uri:
        uri = (_read(cfg.export_record) or {}).get("pyfunc_model_uri", "")
    if not uri:
        return None, f"models:/{cfg.model_name}@{cfg.alias} or {cfg.export_record}"
    try:
        return model_card(uri), uri
    except Exception as exc:  # MLflow raises many types for a missing or unreadable model
        return {"model_uri": uri, "error": str(exc)[:200]}, uri


def judged(cfg: GatesConfig) -> ModelIdentity | None:
    """The version holding `alias` (its provenance tags), else the local model.json; None when neither
    can be read."""
    from lib.registry import client

    if not cfg.model_uri:
        try:
            mv = client().get_model_version_by_alias(cfg.model_name, cfg.alias)
        except Exception:  # no such model or alias (MlflowException), or the store is unreachable
            mv = None
        if mv is not None:
            where = f"models:/{cfg.model_name}@{cfg.alias} (v{mv.version})"
            tags = mv.tags
            return ModelIdentity(tags.get("model_version", ""), tags.get(SHA_TAG, ""), where, str(mv.version))
    from lib.model_contract import ModelContractError, read_model_json

    try:
        meta = read_model_json(cfg.model_json)
    except (OSError, ModelContractError):
        return None
    return ModelIdentity(meta.model_version, meta.sha256, cfg.model_json)


def gather(cfg: GatesConfig, identity: ModelIdentity | None) -> list[GateResult]:
    """Read the reports (and the registry when `check_model`) and evaluate every gate for `identity`.

    With no model to judge, a failing `model_identity` row leads the table and the report gates are
    shown unbound, so the table still says what else would fail."""
    metrics, parity, latency = _read(cfg.metrics), _read(cfg.parity), _read(cfg.latency)

    def bound(result: GateResult, report: dict | None, source: str, sha_key: str = "") -> GateResult:
        return result if identity is None else bind(result, report, identity, source, sha_key)

    results = []
    if identity is None:
        where = f"models:/{cfg.model_name}@{cfg.alias} or {cfg.model_json}"
        results.append(GateResult("model_identity", False, "missing", "a model to judge", f"neither {where}"))
    results += [
        bound(dice_gate(metrics, cfg.min_test_dice, cfg.metrics), metrics, cfg.metrics),
        bound(parity_gate(parity, cfg.parity), parity, cfg.parity, sha_key="sha256"),
    ]
    if cfg.check_model:
        card, where = model_card_for(cfg, identity)
        results.append(model_card_gate(card, where))
    lat = latency_gate(latency, cfg.max_p50_ms, cfg.latency)
    results.append(bound(lat, latency, cfg.latency, sha_key="onnx_sha256"))
    return results


# Results stored on the judged registry version (bin/gates.py writes them, bin/promote.py reads them).

GATES_PASSED, GATES_SUMMARY = "gates_passed", "gates_summary"
GATES_FOR = ("gates_model_version", "gates_onnx_sha256")  # the identity the results were measured for


def record_gates(c, name: str, version: str, summary: dict, model_version: str, onnx_sha256: str) -> None:
    """Store a gate evaluation on the version it judged (bin/gates.py); promotion reads it back."""
    compact = [{k: g[k] for k in ("name", "passed", "value")} for g in summary["gates"]]
    c.set_model_version_tag(name, version, GATES_PASSED, str(bool(summary["passed"])).lower())
    c.set_model_version_tag(name, version, GATES_SUMMARY, json.dumps(compact)[:4900])
    c.set_model_version_tag(name, version, "gates_at", now())
    for key, value in zip(GATES_FOR, (model_version, onnx_sha256), strict=True):
        c.set_model_version_tag(name, version, key, value)


def stored_gates_problem(tags: dict) -> str | None:
    """Why a version's stored gate results do not allow promotion (missing, failed or stale), or None."""
    if GATES_PASSED not in tags:
        return "no gate results stored on it: run make gates"
    if tags[GATES_PASSED] != "true":
        failed = [g["name"] for g in json.loads(tags.get(GATES_SUMMARY, "[]")) if not g["passed"]]
        return f"its gates failed: {', '.join(failed) or 'see gates_summary'}"
    judged = (tags.get(GATES_FOR[0]), tags.get(GATES_FOR[1]))
    if judged != (tags.get("model_version"), tags.get(SHA_TAG)):
        now_is = tags.get("model_version")
        return f"its gate results are stale: measured for {judged[0]!r}, the version is {now_is!r}"
    return None
