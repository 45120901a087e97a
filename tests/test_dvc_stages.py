"""dvc.yaml tells the truth: every stage depends on every lib/ module its script imports (so a change
there re-runs the stage instead of leaving stale metrics), and on its own script and config."""

from __future__ import annotations

import ast
import shlex
from pathlib import Path

import pytest
import yaml
from bin_helpers import ROOT

STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def lib_imports(path: Path) -> set[str]:
    """lib/ modules a file imports anywhere (top level or inside functions), as relative paths."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "lib" and len(parts) >= 2 and (ROOT / "lib" / f"{parts[1]}.py").exists():
                found.add(f"lib/{parts[1]}.py")
    return found


def closure(script: Path) -> set[str]:
    """Every lib/ module `script` reaches through imports."""
    seen: set[str] = set()
    todo = lib_imports(script)
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo |= lib_imports(ROOT / module)
    return seen


def script_and_conf(stage: dict) -> tuple[str, str]:
    words = shlex.split(stage["cmd"])
    script = next(w for w in words if w.startswith("bin/") and w.endswith(".py"))
    conf = words[words.index("--conf") + 1]
    return script, conf


def dep_paths(stage: dict) -> set[str]:
    return {d if isinstance(d, str) else next(iter(d)) for d in stage.get("deps", [])}


def test_closure_follows_imports_inside_functions(tmp_path):
    # The check itself can fail: an import inside a function counts, as does a `from lib import x`.
    source = tmp_path / "s.py"
    code = "import os\n\ndef f():\n    from lib.io import read_json\n    from lib import metrics\n"
    source.write_text(code)
    assert lib_imports(source) == {"lib/io.py", "lib/metrics.py"}


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_depends_on_every_lib_module_its_script_imports(name):
    stage = STAGES[name]
    script, _ = script_and_conf(stage)
    missing = sorted(closure(ROOT / script) - dep_paths(stage))
    assert missing == [], f"dvc.yaml stage {name}: {script} imports {missing}, not in its deps"


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_depends_on_its_script_and_reads_its_conf(name):
    stage = STAGES[name]
    script, conf = script_and_conf(stage)
    assert script in dep_paths(stage), f"{name}: {script} not in deps"
    params = {next(iter(p)) if isinstance(p, dict) else p for p in stage.get("params", [])}
    assert conf in dep_paths(stage) | params, f"{name}: {conf} neither a dep nor params"
