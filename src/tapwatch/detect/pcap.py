"""The packets behind an alert, as a pcap file people can open in Wireshark.

Alerts keep packet numbers for what dissectors saw, and source, destination and time for
everything; the excerpt re-reads the analyzed capture (it must still be where it was) and
keeps the numbered packets plus the traffic between the two sides during the alert. On a
live sensor the captures are its rolling pcap files, for as long as they are kept.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import BinaryIO

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from tapwatch.capture import CaptureError, CaptureReader
from tapwatch.decode import Decoder
from tapwatch.decode.devices import NO_MAC
from tapwatch.store.alert_models import Alert
from tapwatch.store.inventory import dt_to_ns
from tapwatch.store.models import IngestedFile

MAX_PACKETS = 10_000
MARGIN = timedelta(seconds=1)
_NS_MAGIC = 0xA1B23C4D  # classic pcap with nanosecond timestamps


class ExcerptError(RuntimeError):
    pass


def _mac_int(mac: str | None) -> int | None:
    return int(mac.replace(":", ""), 16) if mac else None


def _ip_pair(ip: str | None) -> tuple[int, int] | None:
    if not ip:
        return None
    a = ipaddress.ip_address(ip)
    if a.version == 4:
        return 0, (0xFFFF << 32) | int(a)
    v = int(a)
    return _signed(v >> 64), _signed(v & ((1 << 64) - 1))


def _signed(v: int) -> int:
    """The int64 column value of an unsigned 64-bit word."""
    return v - (1 << 64) if v >= 1 << 63 else v


def _side(mac_col: np.ndarray, hi: np.ndarray, lo: np.ndarray, mac: int | None,
          ip: tuple[int, int] | None) -> np.ndarray:
    if ip is not None:
        m = (hi == ip[0]) & (lo == ip[1])
        return m if mac is None else m & ((mac_col == mac) | (mac_col == NO_MAC))
    if mac is not None:
        return mac_col == mac
    return np.ones(len(mac_col), dtype=bool)


def _records(alert: Alert, path: Path, numbers: set[int]) -> Iterator[tuple[int, int, int, bytes, int]]:
    """(ts_ns, captured, wire, bytes, linktype) of the alert's packets in one file."""
    start = dt_to_ns(alert.first_detected - MARGIN)
    end = dt_to_ns(alert.last_detected + MARGIN)
    smac, dmac = _mac_int(alert.src_mac), _mac_int(alert.dst_mac)
    sip, dip = _ip_pair(alert.src_ip), _ip_pair(alert.dst_ip)
    between = alert.dst_mac is not None or alert.dst_ip is not None
    decoder = Decoder()
    with CaptureReader(path) as reader:
        for chunk in reader.chunks():
            for rows in decoder.batches(chunk):
                n = rows.n
                r = {k: getattr(rows, k)[:n]
                     for k in ("pkt", "ts", "smac", "dmac", "shi", "slo", "dhi", "dlo")}
                inside = (r["ts"] >= start) & (r["ts"] <= end)
                a_to_b = _side(r["smac"], r["shi"], r["slo"], smac, sip)
                if between:
                    b_side = _side(r["dmac"], r["dhi"], r["dlo"], dmac, dip)
                    back = _side(r["smac"], r["shi"], r["slo"], dmac, dip) & \
                        _side(r["dmac"], r["dhi"], r["dlo"], smac, sip)
                    keep = inside & ((a_to_b & b_side) | back)
                else:
                    keep = inside & (a_to_b | _side(r["dmac"], r["dhi"], r["dlo"], smac, sip))
                numbers_here = np.isin(r["pkt"] + chunk.first_number, list(numbers)) if numbers else False
                for i in np.flatnonzero(keep | numbers_here).tolist():
                    rec = int(r["pkt"][i])
                    o, c = int(chunk.off[rec]), int(chunk.cap[rec])
                    yield (int(chunk.ts[rec]), c, int(chunk.wire[rec]), chunk.buf[o:o + c].tobytes(),
                           int(chunk.linktype[rec]))


def write_excerpt(session: Session, alert: Alert, out: BinaryIO) -> int:
    """Write the alert's packets as pcap; returns how many were written."""
    by_file: dict[int | None, set[int]] = {}
    for item in alert.evidence or []:
        by_file.setdefault(item.get("file_id"), set()).add(int(item["packet"]))
    files = list(session.scalars(select(IngestedFile).where(
        IngestedFile.first_seen <= alert.last_detected + MARGIN,
        IngestedFile.last_seen >= alert.first_detected - MARGIN)))
    files += [f for f in (session.get(IngestedFile, i) for i in by_file if i) if f and f not in files]
    sources = [(Path(f.path), by_file.get(f.id, set()))
               for f in sorted(files, key=lambda f: f.first_seen or alert.first_detected)]
    sources += [(p, set()) for p in _rolling(session, alert)]
    if not sources:
        raise ExcerptError(f"alert {alert.id}: no analyzed capture covers its time")
    written = 0
    linktype: int | None = None
    for path, numbers in sources:
        if not path.is_file():
            raise ExcerptError(f"alert {alert.id}: the capture {path} is no longer there")
        try:
            for ts, cap, wire, data, lt in _records(alert, path, numbers):
                if linktype is None:
                    linktype = lt
                    out.write(struct.pack("<IHHiIII", _NS_MAGIC, 2, 4, 0, 0, 262144, lt))
                if lt != linktype:
                    continue
                out.write(struct.pack("<IIII", ts // 1_000_000_000, ts % 1_000_000_000, cap, wire))
                out.write(data)
                written += 1
                if written >= MAX_PACKETS:
                    return written
        except CaptureError as e:
            raise ExcerptError(f"alert {alert.id}: {e}") from None
    if linktype is None:
        raise ExcerptError(f"alert {alert.id}: none of its packets were found in {sources[0][0]}")
    return written


def _rolling(session: Session, alert: Alert) -> list[Path]:
    """The sensor's rolling files around a live alert (none when this store is not a sensor's,
    or its rolling files of that time were already rotated away)."""
    from tapwatch.sensor import rolling
    from tapwatch.sensor.outbox import get_state

    directory = get_state(session, rolling.STATE_KEY)
    if not directory or not Path(directory).is_dir():
        return []
    return rolling.covering(Path(directory), dt_to_ns(alert.first_detected - MARGIN),
                            dt_to_ns(alert.last_detected + MARGIN))
