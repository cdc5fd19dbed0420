"""Rolling capture: the last N bytes of raw traffic as rotating pcap files, oldest deleted first.

Alerts hand out the packets around them: `extract()` copies the records of a time window,
optionally only those to or from one device (MAC and/or IP), into a new pcap. Files are
nanosecond pcap named by their first packet time, so a window maps to files without
opening them all. Each chunk is serialized by one compiled loop, not packet by packet.
"""

from __future__ import annotations

import ipaddress
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from numba import njit

from tapwatch.capture.reader import CaptureReader, Chunk
from tapwatch.decode import Decoder
from tapwatch.decode.kernel import NO_MAC

PCAP_NS_MAGIC = 0xA1B23C4D
SNAPLEN = 262144
PREFIX = "tapwatch-"
STATE_KEY = "rolling_dir"  # where the sensor's store remembers its rolling directory


def _header(linktype: int = 1) -> bytes:
    return struct.pack("<IHHiIII", PCAP_NS_MAGIC, 2, 4, 0, 0, SNAPLEN, linktype)


@njit(cache=True)
def _serialize(buf, off, cap, wire, ts, idx, out):
    """pcap records of the chosen records into out; returns bytes written."""
    p = 0
    for j in range(idx.shape[0]):
        i = idx[j]
        sec = ts[i] // 1_000_000_000
        nsec = ts[i] - sec * 1_000_000_000
        c = cap[i]
        for k, v in enumerate((sec, nsec, c, wire[i])):
            out[p + 4 * k] = v & 0xFF
            out[p + 4 * k + 1] = (v >> 8) & 0xFF
            out[p + 4 * k + 2] = (v >> 16) & 0xFF
            out[p + 4 * k + 3] = (v >> 24) & 0xFF
        p += 16
        out[p:p + c] = buf[off[i]:off[i] + c]
        p += c
    return p


def serialize(chunk: Chunk, idx: np.ndarray | None = None) -> bytes:
    """The chunk's records (or those at `idx`) as pcap record bytes."""
    if idx is None:
        idx = np.arange(len(chunk), dtype=np.int64)
    size = int(chunk.cap[idx].sum()) + 16 * idx.shape[0]
    out = np.empty(size, dtype=np.uint8)
    n = _serialize(chunk.buf, chunk.off, chunk.cap, chunk.wire, chunk.ts, idx, out)
    return out[:n].tobytes()


def _first_ns(path: Path) -> int:
    try:
        return int(path.name[len(PREFIX):].split("-")[0])
    except ValueError:
        return 0


def files(directory: Path) -> list[Path]:
    """The rolling files, oldest first."""
    found = [p for p in directory.glob(f"{PREFIX}*.pcap") if p.is_file()]
    return sorted(found, key=lambda p: (_first_ns(p), p.name))


def covering(directory: Path, start_ns: int, end_ns: int) -> list[Path]:
    """The files that may hold packets of [start_ns, end_ns], oldest first."""
    chosen = files(directory)
    starts = [_first_ns(p) for p in chosen]
    return [p for i, p in enumerate(chosen)
            if starts[i] <= end_ns and not (i + 1 < len(chosen) and starts[i + 1] < start_ns)]


class RollingPcap:
    """Writes chunks to `directory`, keeping at most `max_bytes` of files."""

    def __init__(self, directory: str | os.PathLike[str], max_bytes: int,
                 file_bytes: int | None = None) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.file_bytes = file_bytes or max(1 << 20, min(256 << 20, max_bytes // 8))
        self._fh: BinaryIO | None = None
        self._size = 0
        self._seq = 0
        self.deleted = 0

    def write(self, chunk: Chunk) -> None:
        if len(chunk) == 0:
            return
        if self._fh is None or self._size >= self.file_bytes:
            self._rotate(int(chunk.ts[0]))
        assert self._fh is not None
        data = serialize(chunk)
        self._fh.write(data)
        self._fh.flush()  # extraction reads what was written so far
        self._size += len(data)

    def _rotate(self, first_ns: int) -> None:
        self.close()
        self._seq += 1
        path = self.dir / f"{PREFIX}{first_ns:020d}-{os.getpid()}-{self._seq:06d}.pcap"
        self._fh = open(path, "wb")  # noqa: SIM115 - closed on rotation and in close()
        self._fh.write(_header())
        self._size = 24
        self._trim()

    def _trim(self) -> None:
        """Delete the oldest files until the total fits (the open file is never deleted)."""
        all_files = files(self.dir)
        total = sum(p.stat().st_size for p in all_files)
        current = Path(self._fh.name) if self._fh is not None else None
        for p in all_files:
            if total + self.file_bytes <= self.max_bytes or p == current:
                break
            total -= p.stat().st_size
            p.unlink(missing_ok=True)
            self.deleted += 1

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


@dataclass
class Extract:
    path: Path
    packets: int
    files: int


def _mac_int(mac: str) -> int:
    return int(mac.replace(":", "").replace("-", ""), 16)


def _ip_words(ip: str) -> tuple[int, int]:
    """The decoder's (hi, lo) int64 words of an address (IPv4 as ::ffff:a.b.c.d)."""
    addr = ipaddress.ip_address(ip)
    v = (0xFFFF << 32) | int(addr) if addr.version == 4 else int(addr)
    hi, lo = v >> 64, v & ((1 << 64) - 1)
    return (hi - (1 << 64) if hi >= 1 << 63 else hi), (lo - (1 << 64) if lo >= 1 << 63 else lo)


def extract(directory: str | os.PathLike[str], start_ns: int, end_ns: int, output: str | os.PathLike[str],
            mac: str | None = None, ip: str | None = None) -> Extract:
    """Copy the packets in [start_ns, end_ns] (of one device, when given) into `output`."""
    chosen = covering(Path(directory), start_ns, end_ns)
    want_mac = _mac_int(mac) if mac else None
    want_ip = _ip_words(ip) if ip else None
    out = Path(output)
    packets = used = 0
    with open(out, "wb") as fh:
        fh.write(_header())
        for path in chosen:
            used += 1
            decoder = Decoder()
            with CaptureReader(path) as reader:
                for chunk in reader.chunks():
                    keep = (chunk.ts >= start_ns) & (chunk.ts <= end_ns)
                    if want_mac is not None or want_ip is not None:
                        keep &= _device_mask(decoder, chunk, want_mac, want_ip)
                    idx = np.nonzero(keep)[0].astype(np.int64)
                    if idx.shape[0]:
                        fh.write(serialize(chunk, idx))
                        packets += int(idx.shape[0])
    return Extract(out, packets, used)


def _device_mask(decoder: Decoder, chunk: Chunk, mac: int | None, ip: tuple[int, int] | None) -> np.ndarray:
    mask = np.zeros(len(chunk), dtype=np.bool_)
    for rows in decoder.batches(chunk):
        n = rows.n
        hit = np.ones(n, dtype=np.bool_)
        if mac is not None:
            hit &= (rows.smac[:n] == mac) | (rows.dmac[:n] == mac)
        if ip is not None:
            hi, lo = ip
            hit &= (((rows.shi[:n] == hi) & (rows.slo[:n] == lo))
                    | ((rows.dhi[:n] == hi) & (rows.dlo[:n] == lo)))
        mask[rows.pkt[:n][hit]] = True
    return mask


__all__ = ["NO_MAC", "Extract", "RollingPcap", "extract", "files", "serialize"]
