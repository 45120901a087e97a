#!/usr/bin/env python3
"""Write the registered model's versions, aliases, source runs and tags as JSON (a release artifact).

Usage: bin/registry_state.py --conf conf/register.yaml [--out reports/registry-state.json]
"""

from __future__ import annotations

import sys

from lib.cli import parser, script
from lib.config import load_config
from lib.io import write_json
from lib.tracking import RegisterConfig


@script("registry_state")
def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0], "conf/register.yaml")
    p.add_argument("--out", default="reports/registry-state.json")
    args = p.parse_args(argv)
    cfg = load_config(RegisterConfig, args.conf, args.overrides)
    from lib.registry import client, registry_state

    state = registry_state(client(), cfg.model_name)
    write_json(args.out, state)
    aliases = {a: v["version"] for v in state["versions"] for a in v["aliases"]}
    n = len(state["versions"])
    print(f"registry_state: {cfg.model_name}: {n} version(s), aliases {aliases} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
