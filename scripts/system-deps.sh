#!/usr/bin/env bash
# System packages tapwatch needs: Python venv support, tshark/editcap for the benchmark,
# a PostgreSQL server for the storage tests, and the IEEE OUI registry and p0f signatures
# that identification reads at run time. Installs only what is missing.
set -euo pipefail
need=()
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
command -v tshark >/dev/null || need+=(tshark)
command -v editcap >/dev/null || need+=(wireshark-common)
command -v pg_ctlcluster >/dev/null || need+=(postgresql)
[ -f /usr/share/ieee-data/oui.csv ] || need+=(ieee-data)   # MAC vendor registry (identification)
[ -f /etc/p0f/p0f.fp ] || need+=(p0f)                      # TCP SYN signatures (identification)
[ -x /usr/bin/chromium ] || need+=(chromium)               # browser tests of the console (Playwright)
command -v ip >/dev/null || need+=(iproute2)                # live sensor tests: netns + veth
command -v tcpdump >/dev/null || need+=(tcpdump)           # sensor --bpf compiles filters; live benchmark peer
command -v tcpreplay >/dev/null || need+=(tcpreplay)       # live benchmark traffic
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing system packages: ${need[*]} (run as root or install them)" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
