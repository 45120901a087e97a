#!/usr/bin/env python3
"""Move @staging to @production after a named person's approval and passing gates, or roll production back.

Usage: bin/promote.py --conf conf/gates.yaml --approve --by NAME
       bin/promote.py --conf conf/gates.yaml --rollback --by NAME [--reason TEXT]
"""

from __future__ import annotations

import sys

from lib.cli import parser, script
from lib.gates import add_gate_arguments, all_passed, format_table, gather, load_gates, summarise


@script("promote")
def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0], "conf/gates.yaml")
    p.add_argument("--approve", action="store_true", help="explicit approval to promote @staging")
    p.add_argument("--rollback", action="store_true", help="give @production back to the previous version")
    p.add_argument("--by", default="", help="who approves or rolls back (required; recorded on the version)")
    p.add_argument("--reason", default="", help="why (recorded with a rollback)")
    args = add_gate_arguments(p).parse_args(argv)
    cfg = load_gates(args)
    if not args.by.strip():
        print("promote: refused: say who you are with --by NAME", file=sys.stderr)
        return 1
    from lib.registry import STAGING, RegistryError, alias_version, client, promote, record_event, rollback

    c = client()
    if args.rollback:
        try:
            done = rollback(c, cfg.model_name, args.by, args.reason)
        except RegistryError as exc:
            print(f"promote: refused: {exc}", file=sys.stderr)
            return 1
        moved = f"v{done['previous']} -> v{done['version']}"
        print(f"promote: rolled back {cfg.model_name} @production {moved} by {args.by}")
        return 0
    if not args.approve:
        print("promote: refused: promotion needs an explicit --approve --by NAME", file=sys.stderr)
        return 1
    if cfg.alias != STAGING:
        print(f"promote: refused: only @{STAGING} is promoted, not @{cfg.alias}", file=sys.stderr)
        return 2
    results = gather(cfg)
    print(format_table(results))
    gates = summarise(results)
    try:
        if not all_passed(results):
            failed = [r.name for r in results if not r.passed]
            staged = alias_version(c, cfg.model_name, STAGING)
            if staged is not None:
                record_event(c, cfg.model_name, staged, "promotion_refused", args.by, {"failed": failed})
            print(f"promote: refused: gates failed: {', '.join(failed)}", file=sys.stderr)
            return 1
        done = promote(c, cfg.model_name, args.by, gates)
    except RegistryError as exc:
        print(f"promote: refused: {exc}", file=sys.stderr)
        return 1
    previous = f"v{done['previous']} archived" if done["previous"] else "no previous production"
    print(f"promote: {cfg.model_name} v{done['version']} -> @production, approved by {args.by}; {previous}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
