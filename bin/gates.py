#!/usr/bin/env python3
"""Check the release gates (test Dice, ONNX parity, signature + example, CPU latency); exit 1 on a failure.

Usage: bin/gates.py --conf conf/gates.yaml [--metrics FILE] [--parity FILE] [--latency FILE] [--model-uri URI]
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace

from lib.cli import parser
from lib.config import ConfigError, load_config
from lib.gates import GatesConfig, all_passed, format_table, gather, summarise
from lib.io import write_json
from lib.tracking import register_conf_for, registered_model_name


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0], "conf/gates.yaml")
    for name in ("metrics", "parity", "latency"):
        p.add_argument(f"--{name}", help=f"read this file instead of the config's {name}")
    p.add_argument("--model-uri", help="inspect this MLflow model instead of the staged version")
    p.add_argument("--out", help="also write the results as JSON here")
    p.add_argument("--register-conf", help="config naming the model (default: register.yaml beside --conf)")
    args = p.parse_args(argv)
    try:
        name = registered_model_name(register_conf_for(args.conf, args.register_conf))
        cfg = load_config(GatesConfig, args.conf, [f"model_name={json.dumps(name)}", *args.overrides])
    except ConfigError as exc:
        print(f"gates: {exc}", file=sys.stderr)
        return 2
    given = {k: getattr(args, k) for k in ("metrics", "parity", "latency", "model_uri") if getattr(args, k)}
    cfg = replace(cfg, **given)
    results = gather(cfg)
    print(format_table(results))
    if args.out:
        write_json(args.out, summarise(results))
    failed = [r.name for r in results if not r.passed]
    tail = f"; FAILED: {', '.join(failed)}" if failed else ""
    print(f"gates: {len(results) - len(failed)}/{len(results)} passed{tail}")
    return 0 if all_passed(results) else 1


if __name__ == "__main__":
    sys.exit(main())
