"""Live capture from a network interface as Chunks, through an AF_PACKET TPACKET_V3 ring.

Why AF_PACKET and not a libpcap binding: it needs nothing beyond the kernel and Python's
socket and mmap modules, the ring gives block-at-a-time delivery that matches the batch
engine, and the kernel's PACKET_STATISTICS counts drops exactly. Frames are copied out
of each ring block into one reusable chunk buffer and the block is handed back to the
kernel at once, so decoding never holds ring space. VLAN tags the NIC stripped are put
back, so the decoder sees frames as they were on the wire.

The source survives the interface going down and up (and being deleted and created
again): errors are cleared, and the socket is re-opened when the interface index changes.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import mmap
import select
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from numba import njit

from tapwatch.capture.reader import MAX_RECORDS, Chunk

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
TPACKET_V3 = 2
SO_ATTACH_FILTER = 26
TP_STATUS_USER = 1
TP_STATUS_VLAN_VALID = 0x10
TP_STATUS_VLAN_TPID_VALID = 0x40
LINKTYPE_ETHERNET = 1


class LiveCaptureError(RuntimeError):
    """The interface cannot be captured (missing, no permission, bad filter)."""


def compile_bpf(expression: str) -> bytes:
    """Compile a tcpdump filter expression to classic BPF with `tcpdump -dd` (Ethernet)."""
    try:
        out = subprocess.run(["tcpdump", "-dd", "-y", "EN10MB", expression], capture_output=True,
                             text=True, timeout=30)
    except FileNotFoundError as e:
        raise LiveCaptureError("--bpf needs tcpdump to compile the filter (apt install tcpdump)") from e
    if out.returncode != 0:
        raise LiveCaptureError(f"bad BPF filter {expression!r}: {out.stderr.strip()}")
    code = b""
    for line in out.stdout.splitlines():
        line = line.strip().strip(",").strip("{}").strip()
        if not line:
            continue
        op, jt, jf, k = (int(x.strip(), 0) for x in line.split(","))
        code += struct.pack("HBBI", op, jt, jf, k)
    if not code:
        raise LiveCaptureError(f"BPF filter {expression!r} compiled to nothing")
    return code


@njit(cache=True)
def _copy_block(ring8, ring32, block_off, num_pkts, first_off, buf, fill, off, cap, wire, ts, n):
    """Copy the frames of one ring block into buf; returns (records, fill, bytes on the wire)."""
    p = block_off + first_off
    wire_bytes = 0
    for _ in range(num_pkts):
        h = p // 4
        next_off = ring32[h]
        sec = np.int64(ring32[h + 1])
        nsec = np.int64(ring32[h + 2])
        snap = np.int64(ring32[h + 3])
        length = np.int64(ring32[h + 4])
        status = ring32[h + 5]
        mac = np.int64(ring32[h + 6] & 0xFFFF)
        src = p + mac
        off[n] = fill
        ts[n] = sec * 1_000_000_000 + nsec
        if (status & TP_STATUS_VLAN_VALID) and snap >= 12:
            tci = ring32[h + 8] & 0xFFFF
            tpid = ring32[h + 9] & 0xFFFF if (status & TP_STATUS_VLAN_TPID_VALID) else 0x8100
            buf[fill:fill + 12] = ring8[src:src + 12]
            buf[fill + 12] = (tpid >> 8) & 0xFF
            buf[fill + 13] = tpid & 0xFF
            buf[fill + 14] = (tci >> 8) & 0xFF
            buf[fill + 15] = tci & 0xFF
            buf[fill + 16:fill + snap + 4] = ring8[src + 12:src + snap]
            cap[n] = snap + 4
            wire[n] = length + 4
        else:
            buf[fill:fill + snap] = ring8[src:src + snap]
            cap[n] = snap
            wire[n] = length
        fill += cap[n]
        wire_bytes += wire[n]
        n += 1
        if next_off == 0:
            break
        p += next_off
    return n, fill, wire_bytes


@dataclass
class CaptureStats:
    """Counters since the source started; `drops` are the kernel's (ring full)."""

    packets: int = 0  # delivered to us
    bytes: int = 0  # on the wire, of delivered packets
    kernel_packets: int = 0  # seen by the kernel socket (delivered + dropped)
    drops: int = 0
    reopens: int = 0
    link_up: bool = False


class LiveSource:
    """Packets of one interface as Chunks; `chunks()` also yields empty Chunks when idle,
    so the caller gets control back at least every `poll_ms` to flush and report."""

    def __init__(self, interface: str, bpf: str | None = None, ring_mb: int = 64,
                 block_kb: int = 256, block_timeout_ms: int = 50, poll_ms: int = 200,
                 promiscuous: bool = True, buffer_mb: int = 8) -> None:
        self.interface = interface
        self.filter = compile_bpf(bpf) if bpf else None
        self.block_size = block_kb * 1024
        self.block_nr = max(2, ring_mb * 1024 // block_kb)
        self.block_timeout_ms = block_timeout_ms
        self.poll_ms = poll_ms
        self.promiscuous = promiscuous
        self.stats = CaptureStats()
        self.sock: socket.socket | None = None
        self.ring: mmap.mmap | None = None
        self.ifindex = -1
        self.block = 0  # next block to look at
        size = max(buffer_mb << 20, 2 * self.block_size + (64 << 10))
        self.buf = np.zeros(size, dtype=np.uint8)
        self.off = np.empty(MAX_RECORDS, dtype=np.int64)
        self.cap = np.empty(MAX_RECORDS, dtype=np.int64)
        self.wire = np.empty(MAX_RECORDS, dtype=np.int64)
        self.ts = np.empty(MAX_RECORDS, dtype=np.int64)
        self.linktype = np.full(MAX_RECORDS, LINKTYPE_ETHERNET, dtype=np.int64)
        self._ring8: np.ndarray | None = None
        self._ring32: np.ndarray | None = None
        self._filter_buf: ctypes.Array[ctypes.c_char] | None = None
        self._last_check = 0.0
        self._stopped = False
        self.open()

    # -- the socket and its ring -----------------------------------------------------------

    def open(self) -> None:
        """Open the socket and ring on the interface; raises LiveCaptureError when impossible."""
        try:
            ifindex = socket.if_nametoindex(self.interface)
        except OSError as e:
            raise LiveCaptureError(f"no interface {self.interface!r}") from e
        try:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        except PermissionError as e:
            raise LiveCaptureError(f"capturing on {self.interface} needs root or CAP_NET_RAW") from e
        try:
            if self.filter is not None:  # before bind: no unfiltered packet slips in
                self._filter_buf = ctypes.create_string_buffer(self.filter, len(self.filter))
                prog = struct.pack("HL", len(self.filter) // 8, ctypes.addressof(self._filter_buf))
                sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, prog)
            sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
            frame = 2048
            req = struct.pack("IIIIIII", self.block_size, self.block_nr, frame,
                              self.block_size * self.block_nr // frame, self.block_timeout_ms, 0, 0)
            sock.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
            ring = mmap.mmap(sock.fileno(), self.block_size * self.block_nr,
                             mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            sock.bind((self.interface, ETH_P_ALL))
            if self.promiscuous:
                mreq = struct.pack("iHH8s", ifindex, PACKET_MR_PROMISC, 0, b"")
                sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
        except OSError as e:
            sock.close()
            raise LiveCaptureError(f"cannot capture on {self.interface}: {e}") from e
        self.sock, self.ring, self.ifindex, self.block = sock, ring, ifindex, 0
        self._ring8 = np.frombuffer(ring, dtype=np.uint8)
        self._ring32 = self._ring8.view(np.uint32)
        with contextlib.suppress(OSError):  # counters reset on read: start from zero
            sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 12)
        self.stats.link_up = self._operstate_up()

    def _close_socket(self) -> None:
        self._read_kernel_stats()
        self._ring8 = self._ring32 = None  # numpy views must go before the mapping
        if self.ring is not None:
            with contextlib.suppress(BufferError):
                self.ring.close()
        if self.sock is not None:
            self.sock.close()
        self.ring = None
        self.sock = None

    def close(self) -> None:
        self._stopped = True
        self._close_socket()

    def stop(self) -> None:
        """Ask `chunks()` to end after the current poll (safe from a signal handler)."""
        self._stopped = True

    def _operstate_up(self) -> bool:
        try:
            with open(f"/sys/class/net/{self.interface}/operstate") as fh:
                return fh.read().strip() in ("up", "unknown")
        except OSError:
            return False

    def _read_kernel_stats(self) -> None:
        """Fold the kernel's counters (they reset on every read) into ours."""
        if self.sock is None:
            return
        try:
            raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 12)
        except OSError:
            return
        packets, drops, _freeze = struct.unpack("III", raw)
        self.stats.kernel_packets += packets
        self.stats.drops += drops

    def poll_stats(self) -> CaptureStats:
        self._read_kernel_stats()
        self.stats.link_up = self._operstate_up()
        return self.stats

    def _check_interface(self) -> None:
        """Re-open when the interface was deleted and created again (its index changed)."""
        now = time.monotonic()
        if now - self._last_check < 1.0:
            return
        self._last_check = now
        self.stats.link_up = self._operstate_up()
        try:
            index = socket.if_nametoindex(self.interface)
        except OSError:
            index = -1
        if index == self.ifindex and self.sock is not None:
            return
        self._close_socket()
        if index < 0:
            return
        try:
            self.open()
            self.stats.reopens += 1
        except LiveCaptureError:
            self.sock = None

    # -- reading ---------------------------------------------------------------------------

    def _block_ready(self) -> bool:
        assert self._ring32 is not None
        return bool(self._ring32[(self.block * self.block_size + 8) // 4] & TP_STATUS_USER)

    def chunks(self) -> Iterator[Chunk]:
        """Chunks of captured frames until `stop()`; an empty Chunk after each idle poll."""
        number = 1
        while not self._stopped:
            self._check_interface()
            n = fill = 0
            if self.sock is not None:
                n, fill = self._drain()
                if n == 0:
                    self._wait()
                    if self.sock is not None:
                        n, fill = self._drain()
            else:
                time.sleep(self.poll_ms / 1000)
            chunk = Chunk(self.buf, self.off[:n], self.cap[:n], self.wire[:n], self.ts[:n],
                          self.linktype[:n], number, 0)
            number += n
            yield chunk
        idle = 0
        while self.sock is not None and idle < 3:  # stopping: what the ring holds is not lost
            n, _fill = self._drain()
            if n == 0:  # a partly filled block is handed over at its timeout: wait for it
                idle += 1
                time.sleep(self.block_timeout_ms / 1000)
                continue
            idle = 0
            yield Chunk(self.buf, self.off[:n], self.cap[:n], self.wire[:n], self.ts[:n],
                        self.linktype[:n], number, 0)
            number += n

    def _wait(self) -> None:
        assert self.sock is not None
        try:
            ready = select.poll()
            ready.register(self.sock.fileno(), select.POLLIN | select.POLLERR)
            events = ready.poll(self.poll_ms)
        except InterruptedError:
            return
        for _fd, ev in events:
            if ev & select.POLLERR:  # e.g. ENETDOWN when the link went down: clear it, go on
                err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err not in (0, errno.ENETDOWN):
                    self._close_socket()
                    self._last_check = 0.0

    def _drain(self) -> tuple[int, int]:
        """Copy ready blocks into the chunk buffer and give them back; (records, bytes used)."""
        assert self._ring8 is not None and self._ring32 is not None
        n = fill = 0
        ring8, ring32 = self._ring8, self._ring32
        while self._block_ready():
            base = self.block * self.block_size
            num = int(ring32[(base + 12) // 4])
            first = int(ring32[(base + 16) // 4])
            blen = int(ring32[(base + 20) // 4])
            if n + num > MAX_RECORDS or fill + blen + 4 * num > self.buf.shape[0]:
                break  # the next chunk takes this block
            n, fill, nbytes = _copy_block(ring8, ring32, base, num, first, self.buf, fill,
                                          self.off, self.cap, self.wire, self.ts, n)
            self.stats.packets += num
            self.stats.bytes += int(nbytes)
            ring32[(base + 8) // 4] = 0  # TP_STATUS_KERNEL: the block is the kernel's again
            self.block = (self.block + 1) % self.block_nr
        return n, fill
