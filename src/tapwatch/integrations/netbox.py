"""The inventory as a NetBox device bulk-import CSV (Devices → Import).

NetBox needs name, role, manufacturer, device_type, site and status; its importer refers to
role, manufacturer, type and site by name (they must exist in NetBox or be created first,
which `objects()` lists). Older NetBox releases call the role column `device_role`; both
are written.
"""

from __future__ import annotations

import re
from typing import Any

from tapwatch.identify import taxonomy

COLUMNS = ["name", "device_role", "role", "manufacturer", "device_type", "site", "status", "serial",
           "asset_tag", "description", "comments", "tags", "primary_ip4", "mac_address"]
UNKNOWN = "Unknown"
DEFAULT_SITE = "tapwatch"


def _name(row: dict[str, Any]) -> str:
    """NetBox names must be unique per site: the device's name, else a stable made-up one."""
    base = row.get("name") or f"tapwatch-{row['device_id']}"
    return str(base)[:64]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


def _role(type_id: str | None) -> str:
    t = taxonomy.get(type_id) if type_id else None
    return t.name if t is not None else UNKNOWN


def rows(inventory: list[dict[str, Any]], default_site: str = DEFAULT_SITE) -> list[dict[str, Any]]:
    """NetBox import rows from `exports.inventory_rows` (names made unique)."""
    out: list[dict[str, Any]] = []
    used: dict[tuple[str, str], int] = {}
    for r in inventory:
        site = r.get("site") or default_site
        name = _name(r)
        key = (site, name.lower())
        if key in used:  # two devices named alike: keep both, told apart by id
            name = f"{name[:52]}-{r['device_id']}"
        used[(site, name.lower())] = r["device_id"]
        role = _role(r.get("type"))
        ip4 = r["ip"] if r.get("ip") and ":" not in r["ip"] else ""
        desc = " ".join(x for x in (r.get("vendor"), r.get("model"), r.get("firmware")) if x)
        out.append({
            "name": name, "device_role": role, "role": role,
            "manufacturer": r.get("vendor") or UNKNOWN, "device_type": r.get("model") or UNKNOWN,
            "site": site, "status": "active" if r.get("authorized", True) else "offline",
            "serial": r.get("serial") or "", "asset_tag": "",
            "description": desc[:200],
            "comments": f"tapwatch device {r['device_id']}; first seen {r.get('first_seen')}, "
                        f"last seen {r.get('last_seen')}",
            "tags": "", "primary_ip4": f"{ip4}/32" if ip4 else "",
            "mac_address": r.get("mac") or "",
        })
    return out


def objects(netbox_rows: list[dict[str, Any]]) -> dict[str, list[dict[str, str]]]:
    """Sites, roles, manufacturers and device types the rows refer to, with slugs, so they
    can be created in NetBox before the device import."""
    sites = sorted({r["site"] for r in netbox_rows})
    roles = sorted({r["role"] for r in netbox_rows})
    makers = sorted({r["manufacturer"] for r in netbox_rows})
    types = sorted({(r["manufacturer"], r["device_type"]) for r in netbox_rows})
    return {
        "sites": [{"name": s, "slug": _slug(s)} for s in sites],
        "device_roles": [{"name": r, "slug": _slug(r)} for r in roles],
        "manufacturers": [{"name": m, "slug": _slug(m)} for m in makers],
        "device_types": [{"manufacturer": m, "model": t, "slug": _slug(f"{m} {t}")} for m, t in types],
    }
