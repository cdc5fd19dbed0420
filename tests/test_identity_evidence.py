"""Identity evidence lands on the right device: what tshark decodes, tapwatch keeps as facts.

For every real capture: every DHCP hostname and vendor class, HTTP User-Agent, LLDP system
name and description, CDP device id and platform, and SNMP sysDescr in GROUND_TRUTH.jsonl
is a fact of the device that sent it (found by MAC, or by IP), with the value as seen on
the wire; for a host behind a gateway, a fact of its remote address.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import select

from inventory_helpers import CAPTURES, analyze, devices
from tapwatch.store.db import open_engine
from tapwatch.store.models import Fact

TRUTH = {t["file"]: t for t in map(json.loads, (CAPTURES / "GROUND_TRUTH.jsonl").read_text().splitlines())}


def _expected(t: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(key kind, key, attribute, value) the inventory must hold."""
    out = []
    for d in t["dhcp"]:
        mac = d["client_mac"] or d["src_mac"]
        server_reply = d["msg_type"] in ("2", "5", "6")  # OFFER, ACK, NAK
        if d["hostname"]:  # the name the client asks for, or the one the server gives it
            out.append(("mac", mac, "hostname", d["hostname"]))
        if d["vendor_class_id"] and not server_reply:
            # option 60 in a server's reply is the server's, not the client's (RFC 2132 §9.13)
            out.append(("mac", mac, "dhcp_vendor_class", d["vendor_class_id"]))
    for ip, agents in t["http_user_agents"].items():
        out += [("ip", ip, "http_user_agent", ua) for ua in agents]
    for e in t["lldp"]:
        if e["system_name"]:
            out.append(("mac", e["src_mac"], "lldp_system_name", e["system_name"]))
        if e["system_desc"]:
            out.append(("mac", e["src_mac"], "lldp_system_description", e["system_desc"]))
    for e in t["cdp"]:
        if e["device_id"]:
            out.append(("mac", e["src_mac"], "cdp_device_id", e["device_id"]))
        if e["platform"]:
            out.append(("mac", e["src_mac"], "cdp_platform", e["platform"]))
    for ip, descrs in t["snmp_sysdescr"].items():
        out += [("ip", ip, "snmp_sysdescr", v) for v in descrs]
    return out


def remote_facts(db, ip: str) -> set[tuple[str, str]]:
    engine = open_engine(str(db))
    with engine.connect() as c:
        rows = c.execute(select(Fact.attribute, Fact.value).where(Fact.ip == ip)).all()
    engine.dispose()
    return {(a, v.strip()) for a, v in rows}


CASES = sorted(name for name, t in TRUTH.items() if _expected(t))


@pytest.mark.parametrize("name", CASES)
def test_ground_truth_identity_is_a_fact_of_its_device(name: str, tmp_path) -> None:
    analyze(tmp_path / "inv.db", CAPTURES / name)
    devs = devices(tmp_path / "inv.db", with_facts=True)
    missing = []
    for kind, key, attribute, value in _expected(TRUTH[name]):
        owners = [d for d in devs if (d["mac"] == key if kind == "mac" else key in d["ips"])]
        if not owners and kind == "mac" and attribute in ("hostname", "dhcp_vendor_class"):
            # a DHCP client served through a relay never sends a frame on this link: it is
            # not a device of this capture; its facts stay filed under its MAC
            continue
        if owners:
            have = {(f["attribute"], f["value"].strip()) for d in owners for f in d["facts"]}
        else:  # a host behind a gateway is a remote endpoint: its facts stay on its address
            have = remote_facts(tmp_path / "inv.db", key)
        if (attribute, value.strip()) not in have:
            missing.append((key, attribute, value))
    assert not missing, missing
