"""What OT devices are and what is done to them, on real plant captures.

Roles come from behaviour: the device that downloads a program is an engineering
workstation, the one polling controllers an HMI, the ones answering are controllers.
Repeated identical operations fold into one event whose count is the number of times
tshark sees the operation.
"""

from __future__ import annotations

import collections

from inventory_helpers import CAPTURES, analyze, devices, events


def by_ip(devs: list[dict]) -> dict[str, dict]:
    return {d["ip"]: d for d in devs}


def test_program_download_makes_an_engineering_workstation(tmp_path) -> None:
    analyze(tmp_path / "inv.db", CAPTURES / "iti-ics-tools__s7comm_downloading_block_db1.pcap")
    devs = by_ip(devices(tmp_path / "inv.db"))
    pg, plc = devs["192.168.1.10"], devs["192.168.1.40"]
    assert (pg["type"], pg["class"], pg["purdue_level"]) == ("engineering_workstation", "OT", 2)
    assert (plc["type"], plc["vendor"], plc["purdue_level"]) == ("plc", "Siemens", 1)
    download = [e for e in events(tmp_path / "inv.db") if e["type"] == "program_download"]
    # tshark: frame 43 is the "Request download" job (s7comm.param.func == 0x1a) for DB1
    assert [(e["packet"], e["source"]["ip"], e["destination"]["ip"], e["details"]["block"])
            for e in download] == [(43, "192.168.1.10", "192.168.1.40", "DB1")]
    assert download[0]["source"]["device_id"] == pg["id"]
    assert download[0]["destination"]["device_id"] == plc["id"]


def test_modbus_writes_are_counted_like_tshark_and_the_poller_is_an_hmi(tmp_path) -> None:
    analyze(tmp_path / "inv.db", CAPTURES / "iti-ics-tools__ModbusTCP.pcap")
    writes = [e for e in events(tmp_path / "inv.db") if e["type"] == "register_write"]
    # tshark -Y "tcp.dstport==502" -T fields -e modbus.func_code: 2,115 × fc 15, 14 × fc 16
    assert sum(e["count"] for e in writes) == 2129
    assert collections.Counter(e["details"]["function_code"] for e in writes).keys() == {15, 16}
    devs = by_ip(devices(tmp_path / "inv.db"))
    assert devs["141.81.0.10"]["type"] == "hmi"
    servers = {e["destination"]["ip"] for e in writes}
    assert servers and all(devs[ip]["type"] == "plc" for ip in servers)


def test_dnp3_cold_restart_from_master_to_outstation(tmp_path) -> None:
    analyze(tmp_path / "inv.db", CAPTURES / "iti-ics-tools__cold_restart_and_response.pcap")
    restarts = [e for e in events(tmp_path / "inv.db") if e["type"] == "cold_restart"]
    assert [(e["source"]["ip"], e["destination"]["ip"]) for e in restarts] == [
        ("192.168.60.1", "192.168.60.130")]
    assert by_ip(devices(tmp_path / "inv.db"))["192.168.60.130"]["type"] == "rtu"


def test_controller_details_are_device_fields(tmp_path) -> None:
    """SZL 0x0011/0x001C identity, COTP rack/slot and the CPU state become inventory fields."""
    analyze(tmp_path / "inv.db", CAPTURES / "iti-ics-tools__s7comm_reading_plc_status.pcap")
    plc = by_ip(devices(tmp_path / "inv.db"))["192.168.1.40"]
    # tshark: s7comm.szl.001c.* and s7comm.szl.0011.* of the PLC's userdata responses
    assert (plc["vendor"], plc["type"], plc["model"], plc["firmware"]) == (
        "Siemens", "plc", "IM151-8 PN/DP CPU", "V3.2.6")
    assert (plc["serial"], plc["rack_slot"], plc["plc_mode"]) == ("S C-C6TW74882012", "0/2", "run")
    assert plc["name"] == "IM151-8-CPU"
