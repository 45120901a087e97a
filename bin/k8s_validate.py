#!/usr/bin/env python3
"""Validate rendered Kubernetes manifests against the API schemas, offline; exit 1 when one fails.

Usage: kubectl kustomize serve/k8s/base | bin/k8s_validate.py --conf conf/k8s_validate.yaml [FILE | -]

Reads multi-document YAML (`kubectl kustomize` output) from FILE or stdin and prints one line per
object. An object of a kind the schemas do not know fails too: kubernetes-validate's own command
line only warns about it, which would let a misspelt apiVersion pass.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import kubernetes_validate
import yaml
from kubernetes_validate.utils import SchemaNotFoundError, all_versions, major_minor

from lib.cli import parser, script
from lib.config import ConfigError, load_config


@dataclass(frozen=True)
class K8sValidateConfig:
    kubernetes_versions: tuple[str, ...]  # "major.minor" versions whose schemas every object must pass
    strict: bool  # refuse fields the schema does not define


def check_versions(versions: tuple[str, ...]) -> None:
    """ConfigError unless each version has schemas in the installed kubernetes-validate."""
    shipped = sorted({major_minor(v) for v in all_versions()}, key=lambda v: tuple(map(int, v.split("."))))
    missing = [v for v in versions if v not in shipped]
    if not versions or missing:
        raise ConfigError(
            f"kubernetes_versions {list(versions)}: no schemas for {missing or 'an empty list'}; "
            f"kubernetes-validate {kubernetes_validate.__version__} ships {shipped[0]} to {shipped[-1]}"
        )


def load_objects(text: str, source: str) -> list[dict]:
    """The objects of a multi-document YAML text (empty documents skipped); ConfigError when malformed."""
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    if not docs:  # kubectl failed before writing anything: nothing validated is not a pass
        raise ConfigError(f"{source}: no objects to validate")
    for i, doc in enumerate(docs):
        if not isinstance(doc, dict) or not doc.get("apiVersion") or not doc.get("kind"):
            raise ConfigError(f"{source}: document {i + 1} is not a Kubernetes object (apiVersion, kind)")
    return docs


def object_name(obj: dict) -> str:
    return f"{obj['kind']}/{(obj.get('metadata') or {}).get('name', '?')}"


def validate_object(obj: dict, versions: tuple[str, ...], strict: bool) -> list[str]:
    """Problems of one object, one per failing version: `version: field.path: message`; [] when valid."""
    problems = []
    for version in versions:
        try:
            kubernetes_validate.validate(obj, version, strict=strict)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path) or "(top level)"
            problems.append(f"{version}: {where}: {exc.message}")
        except SchemaNotFoundError:
            problems.append(f"{version}: no schema for kind {obj['kind']} in apiVersion {obj['apiVersion']}")
    return problems


@script("k8s_validate")
def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0], "conf/k8s_validate.yaml")
    p.add_argument("input", nargs="?", default="-", help="rendered manifests (default: stdin)")
    args = p.parse_args(argv)
    cfg = load_config(K8sValidateConfig, args.conf, args.overrides)
    check_versions(cfg.kubernetes_versions)
    text = sys.stdin.read() if args.input == "-" else Path(args.input).read_text()
    source = "stdin" if args.input == "-" else args.input
    objects = load_objects(text, source)

    failed = 0
    for obj in objects:
        problems = validate_object(obj, cfg.kubernetes_versions, cfg.strict)
        failed += bool(problems)
        print(
            f"{'FAIL' if problems else 'ok  '} {object_name(obj)}" + "".join(f"\n     {p}" for p in problems)
        )
    versions = ", ".join(cfg.kubernetes_versions)
    mode = "strict" if cfg.strict else "lax"
    print(
        f"k8s_validate: {len(objects)} objects, {failed} failed, Kubernetes {versions} ({mode}) <- {source}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
