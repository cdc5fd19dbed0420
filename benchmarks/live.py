"""Live capture benchmark: the highest rate the sensor takes through a veth with zero drops,
next to tcpdump capturing the same traffic at the same rates in the same run.

Two namespaces joined by a veth pair; tcpreplay (or, without it, a raw-socket sender)
pushes a real capture from ../shared/captures through one end at increasing packet rates
while the capturer listens on the other end. Each rate reports what the capturer counted
and the kernel's drops (the sensor's PACKET_STATISTICS; tcpdump's "dropped by kernel").

    sudo .venv/bin/python benchmarks/live.py [--rates 20000,50000,100000,200000] [--seconds 5]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CAPTURE = ROOT / ".." / "shared" / "captures" / "iti-ics-tools__ModbusTCP.pcap"
TAPWATCH = str(Path(sys.executable).parent / "tapwatch")


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=30)


class Veth:
    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.tx, self.rx = f"bwt{tag}", f"bwr{tag}"
        sh("ip", "netns", "add", self.tx)
        sh("ip", "netns", "add", self.rx)
        sh("ip", "link", "add", "bwa" + tag, "type", "veth", "peer", "name", "bwb" + tag)
        sh("ip", "link", "set", "bwa" + tag, "netns", self.tx)
        sh("ip", "link", "set", "bwb" + tag, "netns", self.rx)
        self.tx_if, self.rx_if = "bwa" + tag, "bwb" + tag
        sh("ip", "netns", "exec", self.tx, "ip", "link", "set", self.tx_if, "up")
        sh("ip", "netns", "exec", self.rx, "ip", "link", "set", self.rx_if, "up")

    def close(self) -> None:
        for ns in (self.tx, self.rx):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


ACHIEVED: dict[str, float] = {}  # capturer -> the rate the sender really reached, last run


def send(v: Veth, pps: int, seconds: float, capture: Path) -> int:
    """Packets sent at `pps` for about `seconds`."""
    count = int(pps * seconds)
    if shutil.which("tcpreplay"):
        out = subprocess.run(["ip", "netns", "exec", v.tx, "tcpreplay", "-i", v.tx_if, f"--pps={pps}",
                              "--loop=0", f"--limit={count}", str(capture)],
                             capture_output=True, text=True, timeout=seconds * 4 + 30)
        m = re.search(r"Actual: (\d+) packets", out.stdout)
        rated = re.search(r"Rated: [\d.]+ Bps, [\d.]+ Mbps, ([\d.]+) pps", out.stdout)
        ACHIEVED["last"] = float(rated.group(1)) if rated else float(pps)
        return int(m.group(1)) if m else count
    code = ("import socket, sys, time\n"
            "from scapy.all import rdpcap\n"
            "frames = [bytes(p) for p in rdpcap(sys.argv[2])]\n"
            "s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW); s.bind((sys.argv[1], 0))\n"
            "pps, n = int(sys.argv[3]), int(sys.argv[4]); t0 = time.perf_counter()\n"
            "for i in range(n):\n"
            "    s.send(frames[i % len(frames)])\n"
            "    if i % 64 == 0:\n"
            "        d = t0 + i / pps - time.perf_counter()\n"
            "        if d > 0: time.sleep(d)\n")
    subprocess.run(["ip", "netns", "exec", v.tx, sys.executable, "-c", code, v.tx_if, str(capture), str(pps),
                    str(count)], check=True, timeout=seconds * 10 + 30)
    return count


def run_tapwatch(v: Veth, pps: int, seconds: float, tmp: Path) -> dict[str, float]:
    db = tmp / f"live-{pps}.db"
    p = subprocess.Popen(["ip", "netns", "exec", v.rx, TAPWATCH, "sensor", "run", "-i", v.rx_if,
                          "--db", str(db), "--flush-seconds", "2", "-q"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(3)  # migrated, ring up
    sent = send(v, pps, seconds, CAPTURE)
    time.sleep(1)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=120)
    summary = json.loads(out.strip().splitlines()[-1])
    return {"sent": sent, "captured": summary["packets"], "drops": summary["drops"]}


def run_tcpdump(v: Veth, pps: int, seconds: float, tmp: Path) -> dict[str, float]:
    p = subprocess.Popen(["ip", "netns", "exec", v.rx, "tcpdump", "-i", v.rx_if, "-w", str(tmp / "td.pcap"),
                          "-n",
                          "-B", "65536"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)
    sent = send(v, pps, seconds, CAPTURE)
    time.sleep(1)
    p.send_signal(signal.SIGINT)
    _out, err = p.communicate(timeout=60)
    got = re.search(r"(\d+) packets captured", err)
    dropped = re.search(r"(\d+) packets dropped by kernel", err)
    return {"sent": sent, "captured": int(got.group(1)) if got else -1,
            "drops": int(dropped.group(1)) if dropped else -1}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="10000,30000,60000,100000,150000")
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    v = Veth()
    best = {"tapwatch": 0, "tcpdump": 0}
    try:
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d)
            print(f"{'rate pps':>9} | {'tapwatch captured':>17} {'drops':>7} | "
                  f"{'tcpdump captured':>16} {'drops':>7}")
            for pps in rates:
                ACHIEVED["last"] = float(pps)
                tw = run_tapwatch(v, pps, args.seconds, tmp)
                tw_rate = ACHIEVED["last"]
                td = run_tcpdump(v, pps, args.seconds, tmp) if shutil.which("tcpdump") else None
                td_rate = ACHIEVED["last"]
                if tw["drops"] == 0 and tw["captured"] >= tw["sent"]:
                    best["tapwatch"] = max(best["tapwatch"], int(tw_rate))
                if td and td["drops"] == 0 and td["captured"] >= td["sent"]:
                    best["tcpdump"] = max(best["tcpdump"], int(td_rate))
                print(f"    sender reached {tw_rate:,.0f} pps (tapwatch run), "
                      f"{td_rate:,.0f} pps (tcpdump run)")
                print(f"{pps:>9} | {tw['captured']:>17} {tw['drops']:>7} | "
                      f"{td['captured'] if td else '-':>16} {td['drops'] if td else '-':>7}"
                      f"   (sent {tw['sent']})")
    finally:
        v.close()
    print(f"highest rate reached with zero drops: tapwatch {best['tapwatch']} pps, "
          f"tcpdump {best['tcpdump']} pps "
          f"(sender: {'tcpreplay' if shutil.which('tcpreplay') else 'raw socket'})")


if __name__ == "__main__":
    main()
