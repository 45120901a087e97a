"""Every conf/*.yaml and conf/smoke/*.yaml loads into the dataclass its script reads it with.

A field keeps a default only when its key is optional; where conf/<stage>.yaml also sets such a
key, it must not contradict the default (the YAML is the truth, a second value would mislead).
"""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path

import pytest
import yaml
from bin_helpers import ROOT, load_bin

from lib.config import load_config, to_dict
from lib.gates import GatesConfig
from lib.sources import DataConfig

CONF_FILES = sorted((ROOT / "conf").glob("*.yaml")) + sorted((ROOT / "conf" / "smoke").glob("*.yaml"))


# Configs read through a shared lib loader rather than load_config in their script, and the keys that
# loader fills from elsewhere: conf/gates.yaml (bin/gates.py and bin/promote.py, via lib.gates.load_gates)
# takes the model name from conf/register.yaml.
# conf/data.yaml: the sources, read by bin/fetch_data.py (and bin/finetune.py writes one of its shape).
SHARED_LOADERS = {"gates": (GatesConfig, ['model_name="from-register-yaml"']), "data": (DataConfig, [])}
# Configs of another stem than their script's: the fine-tuning schedule is a bin/train.py config.
SCRIPT_OF = {"finetune_train": "train"}


def config_class(conf: Path) -> type:
    """The dataclass bin/<stem>.py passes to load_config for conf/[smoke/]<stem>.yaml."""
    if conf.stem in SHARED_LOADERS:
        return SHARED_LOADERS[conf.stem][0]
    stem = SCRIPT_OF.get(conf.stem, conf.stem)
    script = ROOT / "bin" / f"{stem}.py"
    assert script.exists(), f"{conf.relative_to(ROOT)} has no script bin/{stem}.py"
    names = set(re.findall(r"load_config\((\w+),", script.read_text()))
    assert len(names) == 1, f"bin/{stem}.py: expected one load_config(<class>, ...), found {names}"
    return getattr(load_bin(stem), names.pop())


def defaults(cls: type) -> dict:
    """{field: default} of a config dataclass and its nested blocks, as plain values."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = to_dict(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = to_dict(f.default_factory())
    return out


@pytest.mark.parametrize("conf", CONF_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_conf_file_loads_into_its_dataclass(conf):
    filled = SHARED_LOADERS.get(conf.stem, (None, []))[1]
    assert dataclasses.is_dataclass(load_config(config_class(conf), conf, filled))


def contradictions(cls: type, raw: dict, where: str = "") -> list[str]:
    """Keys `raw` sets to something else than the field's remaining default, nested blocks included."""
    found = []
    for name, default in defaults(cls).items():
        if name in raw and not isinstance(raw[name], dict) and to_dict(raw[name]) != default:
            found.append(f"{where}{name}: yaml {raw[name]!r}, default {default!r}")
    for name, tp in typing.get_type_hints(cls).items():
        if dataclasses.is_dataclass(tp) and isinstance(raw.get(name), dict):
            found += contradictions(tp, raw[name], f"{where}{name}.")
    return found


@pytest.mark.parametrize("conf", sorted((ROOT / "conf").glob("*.yaml")), ids=lambda p: p.name)
def test_no_remaining_default_contradicts_the_yaml(conf):
    cls = config_class(conf)
    assert contradictions(cls, yaml.safe_load(conf.read_text())) == []
