"""Read capture files (pcap, pcapng, gzip of either) as chunks of packet records.

The file is streamed through one reusable window buffer, so memory stays flat whatever
the file size. Each chunk is a set of numpy arrays describing the records that lie in
the window; it stays valid only until the next chunk is requested.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xxhash

from tapwatch.capture import walk
from tapwatch.capture.errors import CaptureError, CaptureWarning

WINDOW = 8 << 20
MAX_RECORDS = 1 << 16
CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".cap", ".pcap.gz", ".pcapng.gz", ".cap.gz")

PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": (False, False),
    b"\xa1\xb2\xc3\xd4": (True, False),
    b"\x4d\x3c\xb2\xa1": (False, True),
    b"\xa1\xb2\x3c\x4d": (True, True),
}
PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"
GZIP_MAGIC = b"\x1f\x8b"


class GzipStream:
    """Incremental gunzip that keeps everything decompressed before a truncation or corruption.

    gzip.GzipFile raises on a cut-off stream and drops the data of that read call; here
    the data decoded so far is always returned first, the error only after it.
    """

    def __init__(self, raw: io.BufferedReader) -> None:
        self._raw = raw
        self._z = zlib.decompressobj(wbits=47)
        self._pending = b""
        self._error: Exception | None = None
        self._done = False
        self._in_member = False  # data was fed to the current gzip member

    def readinto(self, view: memoryview) -> int:
        while len(self._pending) < len(view) and not self._done and self._error is None:
            self._inflate()
        n = min(len(view), len(self._pending))
        view[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        if n == 0 and self._error is not None:
            error, self._error = self._error, None
            self._done = True
            raise error
        return n

    def _inflate(self) -> None:
        data = self._z.unconsumed_tail or self._raw.read(1 << 20)
        if not data:
            if self._in_member and not self._z.eof:
                self._error = EOFError("gzip stream truncated")
            self._done = True
            return
        try:
            self._in_member = True
            self._pending += self._z.decompress(data, 1 << 22)
        except zlib.error as e:
            self._error = OSError(f"corrupt gzip data ({e})")
            return
        if self._z.eof:
            rest = self._z.unused_data
            self._z = zlib.decompressobj(wbits=47)
            self._in_member = False
            if rest.strip(b"\0"):  # another member follows (concatenated gzip)
                self._in_member = True
                self._pending += self._z.decompress(rest, 1 << 22)

    def read(self, n: int) -> bytes:
        buf = bytearray(n)
        got = self.readinto(memoryview(buf))
        return bytes(buf[:got])

    def close(self) -> None:
        self._raw.close()


@dataclass
class Chunk:
    """Records found in one window of the capture. Arrays are views, valid until the next chunk."""

    buf: np.ndarray  # uint8 window; record data lies at buf[off[i]: off[i] + cap[i]]
    off: np.ndarray  # int64
    cap: np.ndarray  # int64 captured length
    wire: np.ndarray  # int64 original length on the wire
    ts: np.ndarray  # int64 ns since the epoch, UTC
    linktype: np.ndarray  # int64 per record
    first_number: int  # 1-based number of the first record in the file
    base: int  # byte offset in the (decompressed) file of buf[0]

    def __len__(self) -> int:
        return int(self.off.shape[0])


def iter_capture_files(paths: Iterable[str | os.PathLike[str]]) -> Iterator[Path]:
    """Expand arguments: files as given, directories to every capture file below them."""
    for p in paths:
        path = Path(p)
        if path.is_dir():
            for f in sorted(path.rglob("*")):
                if f.is_file() and f.name.lower().endswith(CAPTURE_SUFFIXES):
                    yield f
        else:
            yield path


def content_prefilter(path: Path) -> tuple[int, str]:
    """Cheap identity of a file (size, hash of its first MiB) to spot re-ingestion early."""
    with open(path, "rb") as fh:
        head = fh.read(1 << 20)
    return os.path.getsize(path), xxhash.xxh3_64_hexdigest(head)


class CaptureReader:
    """Streams one capture file. Iterate `chunks()`; read `warnings` and `digest()` after."""

    def __init__(self, path: str | os.PathLike[str], window: int = WINDOW) -> None:
        self.path = str(path)
        self.warnings: list[CaptureWarning] = []
        self.packets = 0
        self._hash = xxhash.xxh3_128()
        self._window = window
        try:
            raw = open(path, "rb")  # noqa: SIM115 - closed in close()
        except OSError as e:
            raise CaptureError(self.path, e.strerror or str(e)) from e
        head = raw.read(4)
        raw.seek(0)
        self._raw = raw
        self._fh: io.BufferedReader | GzipStream = raw
        if head[:2] == GZIP_MAGIC:
            self._fh = GzipStream(raw)
            try:
                head = self._peek_gzip(4)
            except (OSError, EOFError) as e:
                self.close()
                raise CaptureError(self.path, f"unreadable gzip data ({e})") from e
        if not head:
            self.close()
            raise CaptureError(self.path, "empty file, not a capture")
        if head in PCAP_MAGICS:
            self.format = "pcap"
        elif head == PCAPNG_MAGIC:
            self.format = "pcapng"
        else:
            self.close()
            raise CaptureError(
                self.path, f"not a capture file (unknown magic 0x{head.hex()}; expected pcap or pcapng)"
            )
        self.buf = np.empty(window, dtype=np.uint8)
        self.fill = 0
        self.pos = 0
        self.base = 0
        self.eof = False
        self.linktypes: set[int] = set()
        self._out = {
            name: np.empty(MAX_RECORDS, dtype=np.int64)
            for name in ("off", "cap", "wire", "ts", "iface")
        }

    def _peek_gzip(self, n: int) -> bytes:
        """First n decompressed bytes, kept for the first chunk read."""
        assert isinstance(self._fh, GzipStream)
        head = self._fh.read(n)
        self._fh._pending = head + self._fh._pending
        return head

    def close(self) -> None:
        self._fh.close()
        self._raw.close()

    def __enter__(self) -> CaptureReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def hash_file(path: str | os.PathLike[str]) -> str:
        """The content hash `digest()` gives after a full read, without decoding anything."""
        h = xxhash.xxh3_128()
        with open(path, "rb") as raw:
            gz = raw.read(2) == GZIP_MAGIC
            raw.seek(0)
            fh: io.BufferedReader | GzipStream = GzipStream(raw) if gz else raw
            try:
                while block := fh.read(1 << 20):
                    h.update(block)
            except (OSError, EOFError):
                pass  # a damaged file's digest covers what can be read, as in chunks()
        return h.hexdigest()

    def digest(self) -> str:
        """Content hash of everything read so far (the whole file once chunks() is exhausted)."""
        return self._hash.hexdigest()

    # -- window management -------------------------------------------------------------

    def _refill(self) -> None:
        """Keep the unread tail, read more after it; grow the window if a record needs it."""
        if self.pos:
            tail = self.fill - self.pos
            self.buf[:tail] = self.buf[self.pos : self.fill]
            self.base += self.pos
            self.fill, self.pos = tail, 0
        if self.fill == self.buf.shape[0]:
            grown = np.empty(self.buf.shape[0] * 2, dtype=np.uint8)
            grown[: self.fill] = self.buf[: self.fill]
            self.buf = grown
        view = self.buf.data[self.fill :]
        while len(view) and not self.eof:
            try:
                got = self._fh.readinto(view)
            except (OSError, EOFError) as e:
                self._warn(f"read error, rest of file skipped ({e})", offset=self.base + self.fill)
                got = 0
            if not got:
                self.eof = True
                break
            self._hash.update(view[:got])
            self.fill += got
            view = view[got:]

    def _ensure(self, n: int) -> bool:
        """Make at least n unread bytes available; False at end of file."""
        while self.fill - self.pos < n and not self.eof:
            self._refill()
        return self.fill - self.pos >= n

    def _warn(self, message: str, packet: int | None = None, offset: int | None = None) -> None:
        self.warnings.append(CaptureWarning(self.path, message, packet, offset))

    def _chunk(self, n: int, linktype: np.ndarray) -> Chunk:
        o = self._out
        chunk = Chunk(
            buf=self.buf, off=o["off"][:n], cap=o["cap"][:n], wire=o["wire"][:n],
            ts=o["ts"][:n], linktype=linktype, first_number=self.packets + 1, base=self.base,
        )
        self.packets += n
        return chunk

    def _truncated(self) -> None:
        self._warn(
            f"file truncated: last record incomplete ({self.fill - self.pos} bytes left)",
            packet=self.packets + 1, offset=self.base + self.pos,
        )

    def _damaged(self, found: int) -> None:
        skipped = (found if found >= 0 else self.fill) - self.pos
        what = f"resumed at offset {self.base + found}" if found >= 0 else "no valid record after it"
        self._warn(
            f"damaged record, skipped {skipped} bytes, {what}",
            packet=self.packets + 1, offset=self.base + self.pos,
        )

    # -- formats -----------------------------------------------------------------------

    def chunks(self) -> Iterator[Chunk]:
        if self.format == "pcap":
            yield from self._pcap_chunks()
        else:
            yield from self._pcapng_chunks()

    def _pcap_chunks(self) -> Iterator[Chunk]:
        if not self._ensure(24):
            raise CaptureError(self.path, "truncated pcap file header")
        head = bytes(self.buf[self.pos : self.pos + 24])
        big, nsec = PCAP_MAGICS[head[:4]]
        e = ">" if big else "<"
        snaplen, linkfield = struct.unpack(e + "II", head[16:24])
        linktype = linkfield & 0x0FFFFFFF
        self.linktypes.add(linktype)
        limit = max(snaplen, 262144) if snaplen <= walk.MAX_RECORD else walk.MAX_RECORD
        self.pos += 24
        lt_arr = np.full(MAX_RECORDS, linktype, dtype=np.int64)
        o = self._out
        while True:
            n, pos, status = walk.walk_pcap(
                self.buf, self.pos, self.fill, big, nsec, limit,
                o["off"], o["cap"], o["wire"], o["ts"],
            )
            self.pos = pos
            if n:
                yield self._chunk(n, lt_arr[:n])
            if status == walk.MORE:
                if n == MAX_RECORDS:
                    continue
                if self.eof:
                    if self.pos < self.fill:
                        self._truncated()
                    return
                self._refill()
                continue
            found = walk.resync_pcap(self.buf, self.pos, self.fill, big, nsec, limit, self.eof)
            self._damaged(found)
            if found >= 0:
                self.pos = found
            elif self.eof:
                return
            else:
                self.pos = max(self.pos, self.fill - 16)
                self._refill()

    def _pcapng_chunks(self) -> Iterator[Chunk]:
        big = False
        ifaces: list[tuple[int, int, int, int, int]] = []  # link, snap, kind, factor, offset
        link, arrays = self._iface_arrays(ifaces)
        last_ts = 0
        o = self._out
        seen_shb = False
        while True:
            n, pos, status, last_ts = walk.walk_pcapng(
                self.buf, self.pos, self.fill, big, len(ifaces), *arrays, last_ts,
                o["off"], o["cap"], o["wire"], o["ts"], o["iface"],
            )
            self.pos = pos
            if n:
                yield self._chunk(n, link[o["iface"][:n]])
            if status == walk.MORE:
                if n == MAX_RECORDS:
                    continue
                if self.eof:
                    if self.pos < self.fill:
                        self._truncated()
                    return
                self._refill()
                continue
            if status == walk.BLOCK:
                kind = self._block_type(big)
                if kind == walk.SHB:
                    parsed = self._read_shb()
                    if parsed is None:
                        return
                    big = parsed
                    seen_shb = True
                    ifaces = []
                    link, arrays = self._iface_arrays(ifaces)
                    continue
                if seen_shb and self._read_idb(big, ifaces):
                    link, arrays = self._iface_arrays(ifaces)
                    continue
            found = walk.resync_pcapng(self.buf, self.pos, self.fill, big)
            self._damaged(found)
            if found >= 0:
                self.pos = found
            elif self.eof:
                return
            else:
                self.pos = max(self.pos, self.fill - 12)
                self._refill()

    def _block_type(self, big: bool) -> int:
        return int(walk.rd32(self.buf, self.pos, big))

    def _read_shb(self) -> bool | None:
        """Parse a section header at pos; returns its byte order (big?) or None at EOF."""
        if not self._ensure(28):
            if self.pos < self.fill:
                self._truncated()
            elif self.packets == 0:
                raise CaptureError(self.path, "truncated pcapng section header")
            return None
        bom = bytes(self.buf[self.pos + 8 : self.pos + 12])
        if bom == b"\x4d\x3c\x2b\x1a":
            big = False
        elif bom == b"\x1a\x2b\x3c\x4d":
            big = True
        else:
            if self.packets == 0 and self.base + self.pos == 0:
                raise CaptureError(self.path, "pcapng section header has no valid byte-order magic")
            self._damaged(-1)
            self.pos = self.fill
            return None
        blen = int(walk.rd32(self.buf, self.pos + 4, big))
        if blen < 28 or blen % 4 or not self._ensure(blen):
            if self.packets == 0 and self.base + self.pos == 0:
                raise CaptureError(self.path, "truncated or invalid pcapng section header")
            self._damaged(-1)
            self.pos = self.fill
            return None
        self.pos += blen
        return big

    def _read_idb(self, big: bool, ifaces: list[tuple[int, int, int, int, int]]) -> bool:
        """Parse an interface description block at pos (the walker checked its length)."""
        blen = int(walk.rd32(self.buf, self.pos + 4, big))
        block = bytes(self.buf[self.pos : self.pos + blen])
        e = ">" if big else "<"
        if blen < 20:
            return False
        linktype, _, snaplen = struct.unpack_from(e + "HHI", block, 8)
        kind, factor, offset = walk.TS_MUL, 1000, 0
        i = 16
        while i + 4 <= blen - 4:
            code, length = struct.unpack_from(e + "HH", block, i)
            value = block[i + 4 : i + 4 + length]
            if code == 0:
                break
            if code == 9 and length >= 1:
                res = value[0]
                if res & 0x80:
                    kind, factor = walk.TS_POW2, res & 0x7F
                elif (res & 0x7F) <= 9:
                    kind, factor = walk.TS_MUL, 10 ** (9 - res)
                else:
                    kind, factor = walk.TS_DIV, 10 ** (res - 9)
            elif code == 14 and length >= 8:
                offset = struct.unpack(e + "q", value[:8])[0] * 1_000_000_000
            i += 4 + ((length + 3) & ~3)
        ifaces.append((linktype, snaplen, kind, factor, offset))
        self.linktypes.add(linktype)
        self.pos += blen
        return True

    @staticmethod
    def _iface_arrays(
        ifaces: list[tuple[int, int, int, int, int]],
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        """Interface table as arrays: link types, and (snaplen, ts kind, ts factor, ts offset)."""
        cols = list(zip(*ifaces, strict=True)) if ifaces else [(), (), (), (), ()]
        link, snap, kind, factor, offset = (np.array(c, dtype=np.int64) for c in cols)
        return link, (snap, kind, factor, offset)
