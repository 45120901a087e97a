#!/usr/bin/env python3
"""Check the release gates (test Dice, ONNX parity, signature + example, CPU latency); exit 1 on a failure.

Usage: bin/gates.py --conf conf/gates.yaml [--metrics FILE] [--parity FILE] [--latency FILE] [--model-uri URI]
"""

from __future__ import annotations

import sys

from lib.cli import parser, script
from lib.gates import add_gate_arguments, all_passed, format_table, gather, load_gates, summarise
from lib.io import write_json


@script("gates")
def main(argv: list[str] | None = None) -> int:
    p = add_gate_arguments(parser(__doc__.splitlines()[0], "conf/gates.yaml"))
    p.add_argument("--model-uri", help="inspect this MLflow model instead of the staged version")
    p.add_argument("--out", help="also write the results as JSON here")
    args = p.parse_args(argv)
    results = gather(load_gates(args))
    print(format_table(results))
    if args.out:
        write_json(args.out, summarise(results))
    failed = [r.name for r in results if not r.passed]
    tail = f"; FAILED: {', '.join(failed)}" if failed else ""
    print(f"gates: {len(results) - len(failed)}/{len(results)} passed{tail}")
    return 0 if all_passed(results) else 1


if __name__ == "__main__":
    sys.exit(main())
