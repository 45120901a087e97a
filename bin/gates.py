#!/usr/bin/env python3
"""Check the release gates (test Dice, ONNX parity, signature + example, API latency); exit 1 on a failure.

Usage: bin/gates.py --conf conf/gates.yaml [--metrics FILE] [--parity FILE] [--latency FILE] [--model-uri URI]

The gates judge one model: the version holding the alias (conf/gates.yaml), or the local model.json when
nothing is staged. A report measured on another model fails its gate as stale. The results are stored
on the judged version as gates_* tags, which bin/promote.py requires.
"""

from __future__ import annotations

import sys

from lib.cli import parser, script
from lib.gates import add_gate_arguments, all_passed, format_table, gather, judged, load_gates, summarise
from lib.io import write_json


@script("gates")
def main(argv: list[str] | None = None) -> int:
    p = add_gate_arguments(parser(__doc__.splitlines()[0], "conf/gates.yaml"))
    p.add_argument("--model-uri", help="inspect this MLflow model instead of the staged version")
    p.add_argument("--out", help="also write the results as JSON here")
    args = p.parse_args(argv)
    cfg = load_gates(args)
    identity = judged(cfg)
    version = identity.version if identity else None
    results = gather(cfg, identity)
    summary = summarise(results)
    if identity is not None:
        print(f"gates: judging {identity.model_version} ({identity.source})")
    print(format_table(results))
    if args.out:
        write_json(
            args.out, {**summary, "model_version": identity and identity.model_version, "version": version}
        )
    if version is not None:
        from lib.gates import record_gates
        from lib.registry import client

        record_gates(client(), cfg.model_name, version, summary, identity.model_version, identity.onnx_sha256)
        print(f"gates: results stored on {cfg.model_name} v{version} (gates_* tags)")
    failed = [r.name for r in results if not r.passed]
    tail = f"; FAILED: {', '.join(failed)}" if failed else ""
    print(f"gates: {len(results) - len(failed)}/{len(results)} passed{tail}")
    return 0 if all_passed(results) else 1


if __name__ == "__main__":
    sys.exit(main())
