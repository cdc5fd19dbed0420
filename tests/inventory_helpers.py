"""In-process helpers for tests that analyze captures and read the inventory back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tapwatch.analyze import Analyzer, FileResult
from tapwatch.store import evidence, inventory
from tapwatch.store.db import open_engine, sessions

CAPTURES = Path(__file__).resolve().parents[1] / ".." / "shared" / "captures"


def analyze(db: str | Path, *paths: str | Path) -> list[FileResult]:
    engine = open_engine(str(db))
    try:
        analyzer = Analyzer(engine, sensor="test")
        return [analyzer.analyze_file(p) for p in paths]
    finally:
        engine.dispose()


def devices(db: str | Path, with_facts: bool = False) -> list[dict[str, Any]]:
    """The devices as `tapwatch devices list --format json [--facts]` prints them."""
    engine = open_engine(str(db))
    try:
        with sessions(engine)() as s:
            return evidence.devices_json(s, with_facts=with_facts)
    finally:
        engine.dispose()


def connections(db: str | Path) -> list[dict[str, Any]]:
    engine = open_engine(str(db))
    try:
        with sessions(engine)() as s:
            return [inventory.connection_json(c) for c in inventory.list_connections(s)]
    finally:
        engine.dispose()


def events(db: str | Path) -> list[dict[str, Any]]:
    """The events as `tapwatch events list --format json` prints them."""
    engine = open_engine(str(db))
    try:
        with sessions(engine)() as s:
            return [evidence.event_json(e) for e in evidence.list_events(s)]
    finally:
        engine.dispose()
