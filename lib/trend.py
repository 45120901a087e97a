"""The quality trend of the registered model: test Dice and IoU of every registered version, read from
the MLflow registry and each version's run, plus the candidate under evaluation, with regressions flagged;
as plain values for trend.json. Rendering lives with the other reports: lib.plots.trend_png draws it,
lib.report.trend_section and trend_page put it in HTML.

bin/evaluate.py puts the section into reports/eval/index.html; bin/quality_trend.py writes it on its
own page at any time (after promotions and rollbacks too). Reading never writes to the store: a missing
store, model or run gives a trend with fewer points and a note, never an error.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from lib.config import ConfigError, from_dict, read_yaml_mapping
from lib.tracking import DEFAULT_TRACKING_URI, set_tracking

CANDIDATE = "candidate"


@dataclass(frozen=True)
class TrendConfig:
    """The `trend:` block of conf/evaluate.yaml. bin/quality_trend.py reads the same block, so the
    evaluation report and the standalone view name the same model and flag the same versions."""

    enabled: bool  # the "Quality trend" section of the evaluation report (the standalone view ignores it)
    register_conf: str  # conf/register.yaml: names the registered model, for every script in one place
    test_split: str  # its run metrics <split>_dice_mean and <split>_iou_mean are plotted
    val_split: str  # its <split>_dice_mean is listed beside them
    tolerance: float  # Dice points below the best earlier version that make a version a regression


@dataclass(frozen=True)
class Point:
    """One registered version (or the candidate) with its evaluation; None = not evaluated."""

    label: str  # "v3", or "candidate"
    version: str | None  # registry version number; None for the candidate
    created: str  # ISO time (UTC) of registration, or of this evaluation for the candidate
    run_id: str
    aliases: tuple[str, ...]
    test_dice: float | None  # mean over the test split's images
    test_iou: float | None
    val_dice: float | None
    metrics_from: str  # "run", "version tags", "this evaluation", or "" when not evaluated
    git_sha: str
    data_rev: str
    note: str = ""
    regression: bool = False
    best_earlier: str | None = None  # label of the best earlier evaluated point
    below_best: float | None = None  # its test Dice minus this one's (positive = worse)


@dataclass(frozen=True)
class Trend:
    model_name: str
    tracking_uri: str
    test_split: str
    val_split: str
    tolerance: float
    points: tuple[Point, ...]
    note: str = ""  # why points are missing (no store, no such model, turned off...)


def load_trend_config(evaluate_conf: str | Path) -> TrendConfig:
    """The `trend:` block of an evaluate config, checked like any config (ConfigError names the key)."""
    path = Path(evaluate_conf)
    raw = read_yaml_mapping(path)
    if "trend" not in raw:
        raise ConfigError(f"{path}: trend: required key is missing")
    try:
        return from_dict(TrendConfig, raw["trend"], where="trend")
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def tracking_uri() -> str:
    """The store lib.tracking.set_tracking would use, without touching it."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def _iso(ms: int | None) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds") if ms else ""


def _number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def read_versions(model_name: str, cfg: TrendConfig) -> tuple[list[Point], str]:
    """(every version of `model_name`, oldest first, with its evaluation; a note when there are none).

    The numbers come from the version's run (bin/evaluate.py logs <split>_dice_mean etc. there), else
    from tags of the same names (lib/registry.py copies them at registration), else the version is shown
    as not evaluated.
    """
    uri = tracking_uri()
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        # Opening a missing SQLite store would create an empty one: a report must not write a store.
        return [], f"no MLflow store at {uri} (nothing registered yet)"
    mlflow = set_tracking()
    from mlflow.exceptions import MlflowException

    c = mlflow.MlflowClient()
    try:
        c.get_registered_model(model_name)
        found = c.search_model_versions(f"name='{model_name}'")
        # One by one: search results leave the aliases out.
        versions = [c.get_model_version(model_name, str(n)) for n in sorted(int(mv.version) for mv in found)]
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return [], f"no registered model {model_name!r} in {uri}"
        return [], f"the registry at {uri} could not be read: {exc.message[:200]}"
    except Exception as exc:  # a store that is not an MLflow one, a server that is down: report, don't fail
        return [], f"the registry at {uri} could not be read ({type(exc).__name__}: {str(exc)[:200]})"
    names = {
        "test_dice": f"{cfg.test_split}_dice_mean",
        "test_iou": f"{cfg.test_split}_iou_mean",
        "val_dice": f"{cfg.val_split}_dice_mean",
    }
    points = []
    for mv in versions:
        run_metrics, run_tags = {}, {}
        if mv.run_id:
            try:
                run = c.get_run(mv.run_id)
                run_metrics, run_tags = run.data.metrics, run.data.tags
            except MlflowException:
                pass  # a deleted run or another store's: the version's own tags may still say
        if names["test_dice"] in run_metrics:
            values, source = {k: run_metrics.get(m) for k, m in names.items()}, "run"
        elif _number(mv.tags.get(names["test_dice"])) is not None:
            values, source = {k: _number(mv.tags.get(m)) for k, m in names.items()}, "version tags"
        else:
            values, source = dict.fromkeys(names), ""
        points.append(
            Point(
                label=f"v{mv.version}",
                version=str(mv.version),
                created=_iso(mv.creation_timestamp),
                run_id=mv.run_id or "",
                aliases=tuple(sorted(mv.aliases)),
                metrics_from=source,
                git_sha=mv.tags.get("git_sha") or run_tags.get("git_sha", ""),
                data_rev=mv.tags.get("data_rev") or run_tags.get("data_rev", ""),
                note="" if source else f"not evaluated (no {names['test_dice']} on its run)",
                **values,
            )
        )
    return points, "" if points else f"{model_name!r} has no versions in {uri}"


def candidate_point(results: dict[str, dict], provenance: dict, cfg: TrendConfig) -> Point | None:
    """This evaluation as a point (bin/evaluate.py's per-split results), or None without the test split."""
    test = results.get(cfg.test_split)
    if test is None:
        return None
    return Point(
        label=CANDIDATE,
        version=None,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        run_id=str(provenance.get("run_id", "")),
        aliases=(),
        test_dice=_number(test.get("dice_mean")),
        test_iou=_number(test.get("iou_mean")),
        val_dice=_number(results.get(cfg.val_split, {}).get("dice_mean")),
        metrics_from="this evaluation",
        git_sha=str(provenance.get("model_git_sha", "")),
        data_rev=str(provenance.get("data_rev", "")),
    )


def flag_regressions(points: list[Point], tolerance: float) -> list[Point]:
    """Mark each point whose test Dice is more than `tolerance` below the best earlier point's.

    Points without a test Dice are skipped (they are neither flagged nor a reference).
    """
    flagged, best = [], None
    for p in points:
        if p.test_dice is not None and best is not None:
            below = best.test_dice - p.test_dice
            p = replace(p, best_earlier=best.label, below_best=below, regression=below > tolerance)
        flagged.append(p)
        if p.test_dice is not None and (best is None or p.test_dice > best.test_dice):
            best = p
    return flagged


def quality_trend(model_name: str | None, cfg: TrendConfig, candidate: Point | None = None) -> Trend:
    """Registered versions of `model_name` (None: the trend is turned off), then `candidate`, flagged."""
    if model_name is None:
        return Trend("", "", cfg.test_split, cfg.val_split, cfg.tolerance, (), "turned off (trend.enabled)")
    points, note = read_versions(model_name, cfg)
    if candidate is not None:
        same = [p.label for p in points if p.run_id and p.run_id == candidate.run_id]
        if same:  # e.g. the evaluation of a model that is already registered, run again
            candidate = replace(candidate, note=f"the run of {', '.join(same)}")
        points.append(candidate)
    return Trend(
        model_name,
        tracking_uri(),
        cfg.test_split,
        cfg.val_split,
        cfg.tolerance,
        tuple(flag_regressions(points, cfg.tolerance)),
        note,
    )


def trend_table(trend: Trend) -> dict:
    """The trend as plain values (trend.json)."""
    return {**asdict(trend), "points": [asdict(p) for p in trend.points]}
