#!/usr/bin/env python3
"""Move @staging to @production after a named person's approval and passing gates, or roll production back.

Usage: bin/promote.py --conf conf/gates.yaml --approve --by NAME
       bin/promote.py --conf conf/gates.yaml --rollback --by NAME [--reason TEXT]

Promotion requires the gate results bin/gates.py stored on the staged version (gates_* tags): they
must exist, have passed, and have been measured for that version's model (not a stale report's).
"""

from __future__ import annotations

import json
import sys

from lib.cli import parser, script
from lib.gates import load_gates


@script("promote")
def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0], "conf/gates.yaml")
    p.add_argument("--approve", action="store_true", help="explicit approval to promote @staging")
    p.add_argument("--rollback", action="store_true", help="give @production back to the previous version")
    p.add_argument("--by", default="", help="who approves or rolls back (required; recorded on the version)")
    p.add_argument("--reason", default="", help="why (recorded with a rollback)")
    p.add_argument("--register-conf", help="config naming the model (default: register.yaml beside --conf)")
    args = p.parse_args(argv)
    cfg = load_gates(args)
    if not args.by.strip():
        print("promote: refused: say who you are with --by NAME", file=sys.stderr)
        return 1
    from lib.gates import GATES_SUMMARY, stored_gates_problem
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
    staged = alias_version(c, cfg.model_name, STAGING)
    if staged is None:
        print(f"promote: refused: {cfg.model_name} has no @{STAGING} version", file=sys.stderr)
        return 1
    tags = c.get_model_version(cfg.model_name, staged).tags
    problem = stored_gates_problem(tags)
    try:
        if problem:
            record_event(c, cfg.model_name, staged, "promotion_refused", args.by, {"why": problem})
            print(f"promote: refused: {cfg.model_name} v{staged}: {problem}", file=sys.stderr)
            return 1
        gates = {"passed": True, "gates": json.loads(tags[GATES_SUMMARY]), "at": tags.get("gates_at")}
        done = promote(c, cfg.model_name, args.by, gates)
    except RegistryError as exc:
        print(f"promote: refused: {exc}", file=sys.stderr)
        return 1
    previous = f"v{done['previous']} archived" if done["previous"] else "no previous production"
    print(f"promote: {cfg.model_name} v{done['version']} -> @production, approved by {args.by}; {previous}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
