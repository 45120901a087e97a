#!/usr/bin/env python3
"""Fine-tune the base model on a folder of your own frames, and say honestly whether it helped.

Usage: make finetune DATA=DIR NAME=NAME [BASE=models:/polyp-seg-unet@production] [REGISTER=1 [FORCE=1]]
       bin/finetune.py --conf conf/finetune.yaml --set data=DIR --set name=NAME [--set base=...]

DIR is a folder (images/ + masks/, optional groups.csv or one subfolder per video) or an nnU-Net v2 raw
dataset. Each step is the pipeline's own script: fetch_data hashes DIR and pairs it, validate_data
checks it, make_splits splits it 70/15/15 by groups, preprocess caches it with the base's training
frames, train starts from the base's weights with the base's training split mixed into every epoch
(rehearsal), evaluate chooses the epoch's operating point on DIR's validation groups (with polyp-free
crops, under the false-alarm cap) and reports base and fine-tuned alike on DIR's held-out test groups
and on Kvasir-SEG's test split, export writes the servable ONNX. Nothing is uploaded: MLflow gets the
training run's metrics and weights, never DIR's images (REGISTER=1 adds the exported model).
Writes models/finetune/NAME/{best.pt, model.onnx, model.json} and reports/finetune/NAME/metrics.json.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from lib.cli import parser, script
from lib.config import ConfigError, load_config
from lib.finetune import merged_entries, own_data_config, paired_gain, rehearsal_weight, verdict
from lib.io import read_csv_stems, read_json, write_json, write_text
from lib.sources import catalog_text, data_rev, detect_kind, read_catalog


@dataclass(frozen=True)
class FinetuneConfig:
    data: str | None  # DATA: the folder or nnU-Net dataset to fine-tune on (required)
    name: str | None  # NAME: names the run, its stems' prefix and its output folders (required)
    base: str  # the starting weights: a checkpoint path, models:/NAME@alias or models:/NAME/N
    train_conf: str  # the fine-tuning schedule (a conf/train.yaml-shaped file)
    evaluate_conf: str  # evaluation settings (grid, false-alarm cap) shared with the pipeline
    export_conf: str  # export settings shared with the pipeline
    splits_conf: str  # grouping and split fractions shared with the pipeline
    validate_conf: str  # schema rules shared with the pipeline
    base_catalog: str  # the pipeline's catalog (Kvasir-SEG)
    base_summary: str  # the pipeline's source summary (its data_rev)
    base_train: str  # the base's training split: rehearsed
    base_test: str  # the base's test split: reported, to see what was forgotten
    base_val: str  # the base's validation split: the export's public parity and example images
    rehearsal_share: float  # share of each epoch's images drawn from base_train; 0 = plain fine-tuning
    min_gain: float  # held-out Dice gain the fine-tuned model needs to count as better
    work_dir: str  # <work_dir>/<name>: catalog, splits, cache
    models_dir: str  # <models_dir>/<name>: best.pt, model.onnx, model.json
    reports_dir: str  # <reports_dir>/<name>: metrics.json and each step's reports
    timeout_s: float  # fetch timeout (a local folder: unused)
    register: bool  # REGISTER=1: register the result as a new version, through the gates
    force: bool  # FORCE=1: register even when it is not better on the held-out groups


SCORES = {"test_dice": "test", "val_dice": "val", "kvasir_test_dice": "kvasir_test"}  # metric -> split


def run(step: str, args: list[str], log: list[dict]) -> None:
    """Run one pipeline script; its output streams through; a failure stops fine-tuning, naming the step."""
    print(f"finetune: [{len(log) + 1}] {step}", flush=True)
    t0 = time.time()
    # As `make` runs scripts: the repository root on the path (bench_latency imports its harness from it).
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")])),
    }
    done = subprocess.run([sys.executable, *args], env=env)
    log.append({"step": step, "seconds": round(time.time() - t0, 1), "rc": done.returncode})
    if done.returncode:
        raise RuntimeError(f"step {step} failed (exit {done.returncode}): {' '.join(args)}")


def sets(**values) -> list[str]:
    """`--set key=value` arguments; keys with dots are written with __ (negatives__report)."""
    return [arg for k, v in values.items() for arg in ("--set", f"{k.replace('__', '.')}={v}")]


def dice(reports: Path, split: str) -> float:
    return float(read_json(reports / split / "metrics.json")["dice_mean"])


@script("finetune", errors=(RuntimeError, ValueError))
def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__.splitlines()[0], "conf/finetune.yaml").parse_args(argv)
    cfg = load_config(FinetuneConfig, args.conf, args.overrides)
    if not cfg.data or not cfg.name:
        raise ConfigError("give the folder and a name: make finetune DATA=DIR NAME=NAME")
    if not Path(cfg.data).is_dir():
        raise FileNotFoundError(f"{cfg.data} is not a folder")
    name, log, started = cfg.name, [], time.time()
    work, models, reports = (Path(d) / name for d in (cfg.work_dir, cfg.models_dir, cfg.reports_dir))
    for folder in (work, models, reports):
        folder.mkdir(parents=True, exist_ok=True)

    # 1. The folder as a source: hashed, paired, validated, split by its groups.
    kind, splits = detect_kind(cfg.data), work / "splits"
    own_conf = work / "data.yaml"
    write_text(
        own_conf, yaml.safe_dump(own_data_config(name, cfg.data, kind, work, cfg.timeout_s), sort_keys=False)
    )
    run("fetch_data", ["bin/fetch_data.py", "--conf", str(own_conf)], log)
    own = sets(catalog=work / "own_catalog.csv", sources_summary=work / "own_sources.json")
    run("validate_data", ["bin/validate_data.py", "--conf", cfg.validate_conf, *own,
                          *sets(report=reports / "data_validation.json")], log)  # fmt: skip
    run("make_splits", ["bin/make_splits.py", "--conf", cfg.splits_conf, *own,
                        *sets(out_dir=splits, report=reports / "splits.json")], log)  # fmt: skip

    # 2. One catalog and cache: the folder's frames and the base's (rehearsed; evaluation only).
    own_catalog, own_summary = read_catalog(work / "own_catalog.csv"), read_json(work / "own_sources.json")
    base_train, own_train = read_csv_stems(cfg.base_train), read_csv_stems(splits / "train.csv")
    weight = rehearsal_weight(cfg.rehearsal_share, len(own_train), len(base_train))
    rehearsed = sorted(base_train) if weight else []
    merged = merged_entries(read_catalog(cfg.base_catalog), set(rehearsed), own_catalog)
    write_text(work / "catalog.csv", catalog_text(merged))
    base_sources = read_json(cfg.base_summary)["sources"]
    base_name = next(iter(base_sources))
    sources = {
        **base_sources,
        base_name: {**base_sources[base_name], "weight": weight},
        **own_summary["sources"],
    }
    revision = data_rev({n: s["manifest_sha256"] for n, s in sources.items()})
    write_json(work / "sources.json", {"data_rev": revision, "sources": sources})
    write_text(splits / "train_mix.csv", "stem,group\n" + "".join(f"{s},0\n" for s in own_train + rehearsed))
    both = sets(catalog=work / "catalog.csv")
    size = yaml.safe_load(Path(cfg.train_conf).read_text())["model"]["input_size"]
    run("preprocess", ["bin/preprocess.py", *both, *sets(out_dir=work / "processed", size=size)], log)

    # 3. Fine-tune from the base; the epoch is chosen on the folder's validation groups.
    run("train", ["bin/train.py", "--conf", cfg.train_conf, *both, *sets(
        sources_summary=work / "sources.json", cache_dir=work / "processed", init_from=cfg.base,
        run_name=f'"finetune {name}"',
        train_split=splits / "train_mix.csv", val_split=splits / "val.csv", out_dir=models,
        metrics=reports / "train.json")], log)  # fmt: skip

    # 4. Base and fine-tuned alike: operating point chosen on the folder's validation groups (with
    #    polyp-free crops, under the false-alarm cap), then its test groups and Kvasir-SEG's test split.
    base_ckpt = (
        next((models / "init").rglob("best.pt")) if cfg.base.startswith("models:/") else Path(cfg.base)
    )
    split_sets = {
        "val": str(splits / "val.csv"),
        "test": str(splits / "test.csv"),
        "kvasir_test": cfg.base_test,
    }
    for label, ckpt in (("base", base_ckpt), ("finetuned", models / "best.pt")):
        run(f"evaluate {label}", ["bin/evaluate.py", "--conf", cfg.evaluate_conf, *both, *sets(
            checkpoint=ckpt, splits=json.dumps(split_sets), choose_on="val", negatives__splits="[val, test]",
            negatives__report="test", robustness__enabled="false", trend__enabled="false",
            log_to_mlflow="false", out_dir=reports / label)], log)  # fmt: skip

    # 5. The servable model; parity and MLflow's input example on public Kvasir-SEG validation frames.
    run("export", ["bin/export.py", "--conf", cfg.export_conf, *both, *sets(
        checkpoint=models / "best.pt", out_dir=models, dynamic="false", parity_split=cfg.base_val,
        decision=reports / "finetuned" / "decision.json", parity_report=reports / "parity.json",
        mlflow_report=reports / "mlflow.json", log_to_mlflow=str(cfg.register).lower())], log)  # fmt: skip

    b, f = reports / "base", reports / "finetuned"
    gain, gain_se, _ = paired_gain(b / "test" / "per_image.csv", f / "test" / "per_image.csv")
    better, sentence = verdict(dice(b, "test"), dice(f, "test"), cfg.min_gain, gain_se)
    train_wall = read_json(reports / "train.json")["wall_seconds"]
    metrics = {
        "name": name,
        "data": cfg.data,
        "kind": kind,
        "base_model": cfg.base,
        **{label: {k: dice(d, s) for k, s in SCORES.items()} for label, d in (("base", b), ("finetuned", f))},
        "test_dice_gain": gain,
        "test_dice_gain_se": gain_se,  # paired over the held-out test images
        "better_on_held_out_groups": better,
        "verdict": sentence,
        "kvasir_test_change": dice(f, "kvasir_test") - dice(b, "kvasir_test"),
        "train_wall_seconds": train_wall,
        "total_wall_seconds": time.time() - started,
        "n_train": len(own_train),
        "n_val": len(read_csv_stems(splits / "val.csv")),
        "n_test": len(read_csv_stems(splits / "test.csv")),
        "n_rehearsal": len(rehearsed),
        "rehearsal_weight": weight,
        "grouping": own_summary["sources"][name]["grouping"],
        "data_rev": revision,
        "own_data_rev": own_summary["data_rev"],
        "model": str(models / "model.onnx"),
        "steps": log,
    }
    write_json(reports / "metrics.json", metrics)
    print(
        f"finetune: {name}: held-out test groups ({metrics['n_test']} images) Dice "
        f"{metrics['base']['test_dice']:.4f} (base) -> {metrics['finetuned']['test_dice']:.4f}; "
        f"Kvasir-SEG test {metrics['base']['kvasir_test_dice']:.4f} -> "
        f"{metrics['finetuned']['kvasir_test_dice']:.4f}; "
        f"training {train_wall / 60:.1f} min. {sentence}. Serve: make serve "
        f"POLYPSEG_MODEL_PATH={models / 'model.onnx'}; report {reports / 'metrics.json'}"
    )
    if cfg.register:
        if not better and not cfg.force:
            print(
                "finetune: REGISTER=1 refused: not better on the held-out groups (FORCE=1 overrides)",
                file=sys.stderr,
            )
            return 1
        run("register", ["bin/register.py", *both, *sets(
            export_report=reports / "mlflow.json", report=reports / "register.json")], log)  # fmt: skip
        # The release gates, on this model's own reports: test Dice (Kvasir-SEG's test split, the
        # registered model's yardstick), parity, and API latency measured on this ONNX (fp32).
        latency = reports / "latency.json"
        run("bench latency", ["bin/bench_latency.py", *sets(
            model=models / "model.onnx", checkpoint='""', int8_model='""', out=latency)], log)  # fmt: skip
        judged = ["--metrics", f / "kvasir_test" / "metrics.json", "--parity", reports / "parity.json"]
        judged += ["--latency", latency, "--out", reports / "gates.json"]
        try:
            run("gates", ["bin/gates.py", *map(str, judged)], log)
        except RuntimeError:
            print(
                "finetune: registered @staging, but the gates FAILED: promotion refuses it", file=sys.stderr
            )
            return 1
        print("finetune: registered @staging and the gates passed: make promote moves it to production")
    return 0


if __name__ == "__main__":
    sys.exit(main())
