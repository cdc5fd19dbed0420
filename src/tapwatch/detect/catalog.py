"""The alert catalog (catalog.yaml): what each alert type is called, which engine raises it,
how severe it is, and the thresholds the engine reads; a user file can override entries."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from tapwatch import yamltext

ENV_OVERRIDES = "TAPWATCH_ALERT_CATALOG"
ENGINES = ("policy", "anomaly", "protocol_violation", "malware", "operational")
SEVERITIES = ("high", "medium", "low")
_FIELDS = {"title", "engine", "severity", "category", "mitre", "enabled", "thresholds", "description"}


class CatalogError(ValueError):
    """A catalog file that cannot be used, naming the file and the entry."""


@dataclass(frozen=True)
class AlertType:
    id: str
    title: str
    engine: str
    severity: str
    category: str
    mitre: str | None = None
    enabled: bool = True
    thresholds: dict[str, Any] = field(default_factory=dict)

    def threshold(self, name: str) -> Any:
        return self.thresholds[name]


def _entries(text: str, where: str) -> dict[str, dict[str, Any]]:
    try:
        data = yamltext.load(text) or {}
    except yaml.YAMLError as e:
        raise CatalogError(f"{where}: not valid YAML: {e}") from None
    if isinstance(data, dict) and "alerts" in data:
        data = data["alerts"]
    if not isinstance(data, dict):
        raise CatalogError(f"{where}: expected a mapping of alert type ids")
    for type_id, entry in data.items():
        if not isinstance(entry, dict):
            raise CatalogError(f"{where}: {type_id}: expected a mapping")
        unknown = set(entry) - _FIELDS
        if unknown:
            raise CatalogError(f"{where}: {type_id}: unknown field {sorted(unknown)[0]!r}")
    return data


def _build(type_id: str, entry: dict[str, Any], where: str) -> AlertType:
    if entry.get("engine") not in ENGINES:
        raise CatalogError(f"{where}: {type_id}: engine must be one of {', '.join(ENGINES)}")
    if entry.get("severity") not in SEVERITIES:
        raise CatalogError(f"{where}: {type_id}: severity must be one of {', '.join(SEVERITIES)}")
    if not isinstance(entry.get("enabled", True), bool):
        raise CatalogError(f"{where}: {type_id}: enabled must be true or false")
    return AlertType(
        id=type_id, title=str(entry["title"]), engine=entry["engine"], severity=entry["severity"],
        category=str(entry.get("category", "")), mitre=entry.get("mitre"),
        enabled=entry.get("enabled", True), thresholds=dict(entry.get("thresholds") or {}),
    )


@lru_cache(maxsize=4)
def _load(override: str | None) -> dict[str, AlertType]:
    base = _entries(resources.files("tapwatch.detect").joinpath("catalog.yaml").read_text("utf-8"),
                    "tapwatch/detect/catalog.yaml")
    if override:
        path = Path(override)
        try:
            text = path.read_text("utf-8")
        except OSError as e:
            raise CatalogError(f"{path}: cannot read the alert catalog overrides: {e}") from None
        for type_id, change in _entries(text, str(path)).items():
            if type_id not in base:
                raise CatalogError(f"{path}: {type_id}: no such alert type in the catalog")
            merged = {**base[type_id], **change}
            merged["thresholds"] = {**(base[type_id].get("thresholds") or {}),
                                    **(change.get("thresholds") or {})}
            base[type_id] = merged
    return {type_id: _build(type_id, entry, "alert catalog") for type_id, entry in base.items()}


def catalog() -> dict[str, AlertType]:
    """Every alert type, with the user's overrides ($TAPWATCH_ALERT_CATALOG) applied."""
    return _load(os.environ.get(ENV_OVERRIDES) or None)
