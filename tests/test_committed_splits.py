"""The committed split CSVs: complete, disjoint, sized 70/15/15, and no group crosses splits."""

from __future__ import annotations

from pathlib import Path

SPLITS = Path(__file__).resolve().parents[1] / "data" / "splits"


def read(name: str) -> list[tuple[str, str]]:
    lines = (SPLITS / f"{name}.csv").read_text().splitlines()
    assert lines[0] == "stem,group"
    return [tuple(line.split(",")) for line in lines[1:]]


def test_splits_cover_1000_distinct_stems_in_70_15_15():
    rows = {name: read(name) for name in ("train", "val", "test")}
    stems = [s for r in rows.values() for s, _ in r]
    assert len(stems) == len(set(stems)) == 1000
    for name, target in (("train", 0.70), ("val", 0.15), ("test", 0.15)):
        assert abs(len(rows[name]) / 1000 - target) <= 0.02


def test_no_near_duplicate_group_crosses_splits():
    owner = {}
    for name in ("train", "val", "test"):
        for _, group in read(name):
            assert owner.setdefault(group, name) == name
