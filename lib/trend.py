"""The quality trend of the registered model: test Dice and IoU of every registered version, read from
the MLflow registry and each version's run, plus the candidate under evaluation, with regressions flagged;
rendered as a PNG, a table (JSON) and an HTML section.

bin/evaluate.py puts the section into reports/eval/index.html; bin/quality_trend.py writes it on its
own page at any time (after promotions and rollbacks too). Reading never writes to the store: a missing
store, model or run gives a trend with fewer points and a note, never an error.
"""

from __future__ import annotations

import html
import math
import os
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import matplotlib.pyplot as plt  # the backend is chosen at the first figure: lib.plots has set Agg by then
import yaml

from lib.config import ConfigError, from_dict
from lib.plots import _png  # same PNG format and resolution as the other evaluation plots
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
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict) or "trend" not in raw:
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


def trend_png(trend: Trend) -> bytes:
    """Test Dice and IoU (and validation Dice, faint) per version, aliases under the version numbers,
    the candidate as stars on a shaded band, regressions ringed in red beside the line they fell below."""
    points = trend.points
    fig, ax = plt.subplots(figsize=(max(6.4, 1.0 + 0.8 * len(points)), 4.2))
    if not any(p.test_dice is not None for p in points):
        ax.set_axis_off()
        why = trend.note or "no version has evaluation metrics"
        ax.text(0.5, 0.5, f"Quality trend: no data\n{why}", ha="center", va="center", wrap=True)
        return _png(fig)
    x = list(range(len(points)))
    registered = [i for i, p in enumerate(points) if p.version is not None]
    lines = (
        ("test_dice", f"{trend.test_split} Dice", "#4477aa", "o", "-", 2.0),
        ("test_iou", f"{trend.test_split} IoU", "#ee7733", "s", "-", 2.0),
        ("val_dice", f"{trend.val_split} Dice", "#999999", ".", "--", 1.0),
    )
    for key, label, color, marker, style, width in lines:
        y = [math.nan if getattr(p, key) is None else getattr(p, key) for p in points]
        ax.plot(
            registered,
            [y[i] for i in registered],
            ls=style,
            lw=width,
            marker=marker,
            color=color,
            label=label,
        )
        for i, p in enumerate(points):
            if p.version is None and not math.isnan(y[i]):
                before = [j for j in registered if j < i and not math.isnan(y[j])]
                if before:  # dotted: the candidate is not (yet) part of the registered line
                    ax.plot([before[-1], i], [y[before[-1]], y[i]], ls=":", lw=width, color=color)
                ax.plot([i], [y[i]], marker="*", ms=16, color=color, mec="black", ls="none")
    for i, p in enumerate(points):
        if p.version is None:
            ax.axvspan(i - 0.4, i + 0.4, color="#ffe9a8", zorder=0)
    # The line a version must stay above: the best earlier test Dice minus the tolerance.
    limit = [
        (i, p.test_dice + p.below_best - trend.tolerance)
        for i, p in enumerate(points)
        if p.below_best is not None
    ]
    if limit:
        xs, ys = zip(*limit)
        label = f"best earlier - {trend.tolerance:g}"
        ax.hlines(
            ys, [i - 0.3 for i in xs], [i + 0.3 for i in xs], color="#cc3311", ls=":", lw=1.5, label=label
        )
    flagged = [i for i, p in enumerate(points) if p.regression]
    if flagged:
        ax.scatter(
            flagged,
            [points[i].test_dice for i in flagged],
            s=260,
            facecolors="none",
            edgecolors="#cc3311",
            linewidths=2,
            zorder=4,
            label="regression",
        )
    for i, p in enumerate(points):
        if p.test_dice is None:
            ax.annotate(
                "not evaluated", (i, 0.02), xycoords=("data", "axes fraction"), ha="center", fontsize=8
            )
    values = [v for p in points for v in (p.test_dice, p.test_iou, p.val_dice) if v is not None]
    ax.set_ylim(max(0.0, min(values) - 0.04), min(1.01, max(values) + 0.04))
    ax.set_xlim(-0.6, len(points) - 0.4)
    ax.set_xticks(x, [p.label + "".join(f"\n@{a}" for a in p.aliases) for p in points])
    ax.set(ylabel="mean over images")
    ax.set_title(f"{trend.model_name}: {trend.test_split} Dice / IoU per registered version")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)  # outside: never over a point
    return _png(fig)


def _cell(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else html.escape(str(value))


def trend_section(trend: Trend, png: str = "trend.png") -> str:
    """The "Quality trend" HTML section (a table and the PNG at the relative path `png`)."""
    t, v = trend.test_split, trend.val_split
    columns = (
        "version",
        "created (UTC)",
        "aliases",
        f"{t} Dice",
        f"{t} IoU",
        f"{v} Dice",
        "model git",
        "data rev",
    )
    head = "".join(f"<th>{html.escape(c)}</th>" for c in (*columns, "metrics from", "regression", "note"))
    rows = []
    for p in trend.points:
        regression = ""
        if p.regression:
            regression = f"REGRESSION: {p.below_best:.4f} below {p.best_earlier}"
        elif p.below_best is not None:
            regression = f"{-p.below_best:+.4f} vs best earlier ({p.best_earlier})"
        cells = (
            p.label,
            p.created[:16].replace("T", " "),  # minutes are enough here; trend.json keeps the full time
            ", ".join(p.aliases),
            "not evaluated" if p.test_dice is None else p.test_dice,
            "" if p.test_iou is None else p.test_iou,
            "" if p.val_dice is None else p.val_dice,
            p.git_sha[:10],
            p.data_rev[:12],
            p.metrics_from,
            regression,
            p.note,
        )
        style = ' class="regression"' if p.regression else ' class="candidate"' if p.version is None else ""
        rows.append(f"<tr{style}>" + "".join(f"<td>{_cell(c)}</td>" for c in cells) + "</tr>")
    source = f"registered model <code>{html.escape(trend.model_name)}</code>" if trend.model_name else ""
    where = f" in <code>{html.escape(trend.tracking_uri)}</code>" if trend.tracking_uri else ""
    note = f'<p class="note"><b>Note:</b> {html.escape(trend.note)}</p>' if trend.note else ""
    table = f"<table><tr>{head}</tr>{''.join(rows)}</table>" if rows else ""
    candidate = ""
    if any(p.version is None for p in trend.points):
        candidate = " The candidate (last row, starred in the plot) is this evaluation, not registered."
    return f"""<h2>Quality trend</h2>
<p>{html.escape(trend.test_split)} Dice and IoU (mean over images) of every version of the {source}{where},
from the evaluation metrics logged to each version's run.{candidate} A version is a <b>regression</b>
when its {html.escape(trend.test_split)} Dice is more than {trend.tolerance:g} below the best earlier
version's.</p>
{note}
<img class="trend" src="{html.escape(png)}" alt="Dice and IoU per registered version">
{table}"""


def trend_page(trend: Trend) -> str:
    """A self-contained page with the section (bin/quality_trend.py's index.html)."""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>polypseg quality trend</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; max-width: 1100px; }}
.banner {{ background: #b00020; color: white; padding: .6rem 1rem; font-weight: bold; }}
table {{ border-collapse: collapse; margin: 1rem 0; }}
td, th {{ border: 1px solid #ccc; padding: .3rem .6rem; }}
tr.regression {{ background: #fde0dc; }} tr.candidate {{ background: #fff6d5; }}
.trend {{ max-width: 100%; }} code {{ background: #f3f3f3; padding: 0 .2rem; }}
</style></head><body>
<div class="banner">Research software. NOT FOR CLINICAL USE.</div>
<h1>polypseg quality trend</h1>
<p>The registry as it is now; <a href="trend.json">trend.json</a> holds the table.</p>
{trend_section(trend)}
</body></html>
"""
