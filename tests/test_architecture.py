"""docs/architecture.dot is the system diagram's source: it renders with Graphviz, the committed
docs/architecture.svg is that rendering (same nodes and edges), and every file it names exists."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from bin_helpers import ROOT

DOT, SVG = ROOT / "docs" / "architecture.dot", ROOT / "docs" / "architecture.svg"


def graph_of(svg: str) -> tuple[set[str], set[str]]:
    """(nodes, edges) from the <title> Graphviz writes for each node and edge of an SVG."""
    titles = {
        t.replace("&#45;&gt;", "->").replace("-&gt;", "->")
        for t in re.findall(r"<title>([^<]*)</title>", svg)
    }
    edges = {t for t in titles if "->" in t}
    nodes = {t for t in titles if "->" not in t and not t.startswith("cluster_") and t != "polypseg"}
    return nodes, edges


@pytest.fixture(scope="module")
def rendered() -> str:
    if shutil.which("dot") is None:
        pytest.fail("Graphviz `dot` is missing: make setup installs it (make graphviz)")
    return subprocess.run(["dot", "-Tsvg", str(DOT)], capture_output=True, text=True, check=True).stdout


def test_committed_picture_matches_the_source(rendered):
    nodes, edges = graph_of(rendered)
    assert len(nodes) >= 20 and len(edges) >= 20
    assert graph_of(SVG.read_text()) == (nodes, edges), "docs/architecture.svg is stale: run make diagram"


def test_every_file_the_diagram_names_exists():
    labels = DOT.read_text().replace("\\n", " ")  # a label's line breaks are written \n
    named = set(re.findall(r"\b((?:bin|lib|serve)/[\w./]+\.(?:py|html)|serve/Dockerfile)", labels))
    assert "bin/train.py" in named and "serve/app.py" in named
    assert sorted(p for p in named if not (ROOT / p).exists()) == []


def test_every_pipeline_stage_is_drawn(rendered):
    import yaml

    stages = set(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])
    nodes, _ = graph_of(rendered)
    assert stages <= nodes, f"stages missing from the diagram: {sorted(stages - nodes)}"
