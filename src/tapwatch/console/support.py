"""`tapwatch support bundle`: what a support request needs, with secrets left out."""

from __future__ import annotations

import json
import platform
import re
import sys
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, inspect, select, table, text

from tapwatch import __version__
from tapwatch.store.console_models import AuditEntry, all_settings, utcnow
from tapwatch.store.db import sessions
from tapwatch.store.inventory import iso

SECRET = re.compile(r"pass|secret|token|key|credential", re.I)
PACKAGES = ("sqlalchemy", "alembic", "fastapi", "starlette", "uvicorn", "numpy", "numba", "scapy",
            "argon2-cffi", "psycopg", "networkx", "jinja2")


def redact(value: Any, key: str = "") -> Any:
    """Setting values whose name says secret are replaced; nested values are walked."""
    if SECRET.search(key) and key not in ("retention_days",):
        return "<redacted>"
    if isinstance(value, dict):
        return {k: redact(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, key) for v in value]
    return value


def _url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def versions(engine: Engine) -> dict[str, Any]:
    pkgs: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            pkgs[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pkgs[name] = None
    with engine.connect() as c:
        heads = sorted(c.execute(text("select version_num from alembic_version")).scalars())
    return {"tapwatch": __version__, "python": sys.version, "platform": platform.platform(),
            "packages": pkgs, "schema_heads": heads, "database": engine.dialect.name}


def statistics(engine: Engine) -> dict[str, Any]:
    """Rows per table (the inventory's size tells most about performance questions)."""
    out: dict[str, Any] = {"url": _url(engine), "tables": {}}
    names = inspect(engine).get_table_names()
    with engine.connect() as c:
        for name in sorted(names):
            out["tables"][name] = c.execute(select(func.count()).select_from(table(name))).scalar()
        if engine.dialect.name == "sqlite" and engine.url.database:
            path = Path(engine.url.database)
            out["file_bytes"] = path.stat().st_size if path.exists() else None
    return out


def bundle(engine: Engine, output: Path, log_file: Path | None = None, audit_rows: int = 500) -> list[str]:
    """Write the zip; returns the names inside it."""
    with sessions(engine)() as s:
        settings = redact(all_settings(s))
        audit = [{"time": iso(e.ts), "actor": e.actor, "action": e.action, "target_type": e.target_type,
                  "target_id": e.target_id}
                 for e in s.scalars(select(AuditEntry).order_by(AuditEntry.id.desc()).limit(audit_rows))]
    files: dict[str, str] = {
        "README.txt": f"tapwatch support bundle, made {iso(utcnow())}.\nSecrets (passwords, tokens, keys)"
                      " are not included; audit entries carry no details.\n",
        "versions.json": json.dumps(versions(engine), indent=2),
        "settings.json": json.dumps(settings, indent=2),
        "database.json": json.dumps(statistics(engine), indent=2),
        "audit_recent.json": json.dumps(audit, indent=2),
    }
    # sensor health joins here when sensors exist (issue 8)
    if log_file is not None and log_file.exists():
        lines = log_file.read_text(errors="replace").splitlines()[-5000:]
        files["logs/console.log"] = "\n".join(_scrub(line) for line in lines) + "\n"
    output.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(output, "w", zipfile.ZIP_DEFLATED) as z:
        for name, content in files.items():
            z.writestr(name, content)
    return list(files)


def _scrub(line: str) -> str:
    """Bearer tokens and session cookies never leave the machine, even from a log."""
    return re.sub(r"(tw_[A-Za-z0-9_\-]{8})[A-Za-z0-9_\-]+", r"\1…", line)
