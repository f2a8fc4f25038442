"""The Kubernetes examples are not run here (no API server); at least they parse and agree with inferd."""

from __future__ import annotations

from pathlib import Path

import yaml

from inferd.config.settings import Settings
from inferd.domain.catalog import Catalog

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "kuberay"


def _documents(name: str) -> list[dict]:  # type: ignore[type-arg]
    return [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d]


def test_raycluster_pins_our_ray_version() -> None:
    (cluster,) = _documents("raycluster.yaml")
    assert cluster["kind"] == "RayCluster" and cluster["spec"]["rayVersion"] == "2.60.0"


def test_inferd_manifests_use_real_settings_and_a_valid_catalog() -> None:
    documents = {d["metadata"]["name"]: d for d in _documents("inferd.yaml")}
    settings = documents["inferd"]["data"]
    known = {f"INFERD_{name.upper()}" for name in Settings.model_fields}
    assert set(settings) <= known, set(settings) - known
    Catalog.from_document(__import__("tomllib").loads(documents["inferd-catalog"]["data"]["catalog.toml"]))
    controller = documents["inferd-controller"]["spec"]["template"]["spec"]["containers"][0]
    assert controller["args"] == ["inferd", "controller"]
