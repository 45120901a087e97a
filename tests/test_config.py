"""Strict typed config loading: unknown keys and wrong types name the key."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from lib.config import ConfigError, load_config, to_dict


@dataclass(frozen=True)
class Inner:
    rate: float = 0.1
    sizes: tuple[int, ...] = (1, 2)


@dataclass(frozen=True)
class Outer:
    name: str
    epochs: int = 3
    inner: Inner = field(default_factory=Inner)
    mode: str | None = None


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_loads_nested_values_and_defaults(tmp_path):
    cfg = load_config(Outer, write(tmp_path, "name: a\ninner: {rate: 2}\n"))
    assert cfg == Outer(name="a", inner=Inner(rate=2.0))


def test_unknown_key_is_named(tmp_path):
    with pytest.raises(ConfigError, match="inner: unknown key\\(s\\) rte"):
        load_config(Outer, write(tmp_path, "name: a\ninner: {rte: 2}\n"))


def test_wrong_type_is_named(tmp_path):
    with pytest.raises(ConfigError, match="epochs: expected an integer"):
        load_config(Outer, write(tmp_path, "name: a\nepochs: many\n"))


def test_missing_required_key(tmp_path):
    with pytest.raises(ConfigError, match="name: required key is missing"):
        load_config(Outer, write(tmp_path, "epochs: 2\n"))


def test_malformed_yaml_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Outer, write(tmp_path, "name: [unclosed\n"))


def test_overrides_are_typed(tmp_path):
    cfg = load_config(Outer, write(tmp_path, "name: a\n"), ["epochs=7", "inner.sizes=[4, 5]"])
    assert cfg.epochs == 7 and cfg.inner.sizes == (4, 5)
    with pytest.raises(ConfigError, match="epochs"):
        load_config(Outer, write(tmp_path, "name: a\n"), ["epochs=seven"])


def test_config_is_frozen_and_round_trips(tmp_path):
    cfg = load_config(Outer, write(tmp_path, "name: a\n"))
    with pytest.raises(AttributeError):
        cfg.epochs = 5  # type: ignore[misc]
    assert to_dict(cfg) == {"name": "a", "epochs": 3, "inner": {"rate": 0.1, "sizes": [1, 2]}, "mode": None}


@dataclass(frozen=True)
class Deep:
    rate: float


@dataclass(frozen=True)
class Strict:
    name: str
    inner: Deep


def test_missing_key_names_the_file_and_the_dotted_key(tmp_path):
    with pytest.raises(ConfigError, match=r"c\.yaml: name: required key is missing"):
        load_config(Strict, write(tmp_path, "inner: {rate: 2}\n"))
    with pytest.raises(ConfigError, match=r"c\.yaml: inner\.rate: required key is missing"):
        load_config(Strict, write(tmp_path, "name: a\ninner: {}\n"))
