#!/usr/bin/env python3
"""Register the exported model's run (or the best run by validation Dice) as a model version @staging.

Which run: the one bin/export.py logged the workspace's model into (`export_report`, the default), so the
version staged is the model the pipeline evaluated and the gates measure; with `--set export_report='""'`
the run of `experiment` with the highest `metric` among those holding a pyfunc model.

Usage: bin/register.py --conf conf/register.yaml [--by NAME] [--set experiment=polyp-seg-smoke ...]
"""

from __future__ import annotations

import getpass
import sys

from lib.cli import parser
from lib.config import ConfigError, load_config, to_dict
from lib.io import read_csv_stems, write_json
from lib.sources import read_catalog
from lib.tracking import RegisterConfig, setup_mlflow


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0], "conf/register.yaml")
    p.add_argument("--by", default=getpass.getuser(), help="who registers (version tag); default: $USER")
    args = p.parse_args(argv)
    try:
        cfg = load_config(RegisterConfig, args.conf, args.overrides)
        stem = read_csv_stems(cfg.sample_split)[0]
        image_bytes = read_catalog(cfg.catalog).images[stem].read_bytes()
    except (ConfigError, OSError, ValueError, IndexError, KeyError) as exc:
        print(f"register: {exc}", file=sys.stderr)
        return 2
    from lib.registry import (
        RegistryError,
        best_run,
        client,
        exported_run,
        register_run,
        set_staging,
        verify_model,
    )

    mlflow = setup_mlflow(cfg.experiment)
    c = client()
    try:
        if cfg.export_report:
            run = exported_run(mlflow, cfg.export_report, cfg.metric)
        else:
            run = best_run(mlflow, cfg.experiment, cfg.metric)
    except RegistryError as exc:
        print(f"register: {exc} (run bin/export.py first)", file=sys.stderr)
        return 1
    version, reused = register_run(c, cfg.model_name, run, args.by)
    if cfg.alias == "staging":
        set_staging(c, cfg.model_name, version.version, args.by)
    else:
        c.set_registered_model_alias(cfg.model_name, cfg.alias, version.version)
    uri = f"models:/{cfg.model_name}@{cfg.alias}"
    check = verify_model(uri, image_bytes)
    ok = check["has_signature"] and check["has_input_example"]
    version = c.get_model_version(cfg.model_name, version.version)
    write_json(
        cfg.report,
        {
            "passed": ok,
            "model_name": cfg.model_name,
            "version": str(version.version),
            "alias": cfg.alias,
            "reused": reused,
            "run_id": run.info.run_id,
            "picked_by": f"export report {cfg.export_report}" if cfg.export_report else f"best {cfg.metric}",
            cfg.metric: run.data.metrics[cfg.metric],
            "source": version.source,
            "uri": uri,
            "verification": {**check, "image": stem},
            "tags": dict(version.tags),
            "tracking_uri": mlflow.get_tracking_uri(),
            "config": to_dict(cfg),
        },
    )
    state = "reused" if reused else "new"
    card = f"signature={check['has_signature']} input_example={check['has_input_example']}"
    print(
        f"register: {cfg.model_name} v{version.version} ({state}) from run {run.info.run_id} "
        f"{cfg.metric}={run.data.metrics[cfg.metric]:.4f} -> @{cfg.alias}; loaded via {uri}: "
        f"{card} -> {cfg.report}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
