"""TCP stream helpers for dissectors that must follow a flow across segments."""

from __future__ import annotations

from tapwatch.dissect.base import Packet


def tcp_seq(l3: bytes) -> int | None:
    """The TCP sequence number from the IP header onwards, or None."""
    if not l3:
        return None
    if l3[0] >> 4 == 4:
        off = (l3[0] & 0x0F) * 4
        if off < 20 or len(l3) < off + 8 or l3[9] != 6:
            return None
    elif l3[0] >> 4 == 6 and len(l3) >= 40:
        nxt, off = l3[6], 40
        for _ in range(8):  # extension headers
            if nxt == 6:
                break
            if nxt not in (0, 43, 60, 44) or len(l3) < off + 8:
                return None
            nxt, off = l3[off], off + (8 if nxt == 44 else (l3[off + 1] + 1) * 8)
        if nxt != 6 or len(l3) < off + 8:
            return None
    else:
        return None
    return int.from_bytes(l3[off + 4 : off + 8], "big")


class Resync:
    """Per TCP flow direction, where the next message starts when one ran past its segment."""

    WINDOW = 1 << 16  # a message continues at most this far (sequence space)
    SIZE = 4096

    def __init__(self) -> None:
        self._next: dict[tuple[str, int, str, int], int] = {}

    def start(self, pkt: Packet) -> int | None:
        """Payload offset of the first message start: 0 normally, more after a continuation,
        None when the whole segment continues an earlier message."""
        key = (pkt.src_ip, pkt.sport, pkt.dst_ip, pkt.dport)
        want = self._next.pop(key, None)
        seq = tcp_seq(pkt.l3) if want is not None else None
        if want is None or seq is None:
            return 0
        delta = (want - seq) & 0xFFFFFFFF
        if delta < len(pkt.payload):
            return delta
        if delta < self.WINDOW:  # still inside the message: keep waiting for its end
            self._next[key] = want
            return None
        return 0  # the message end lies behind us (segments not seen): start afresh

    def expect(self, pkt: Packet, end: int) -> None:
        """A message runs to payload offset `end`, beyond this segment."""
        seq = tcp_seq(pkt.l3)
        if seq is None:
            return
        if len(self._next) >= self.SIZE:
            self._next.clear()
        self._next[(pkt.src_ip, pkt.sport, pkt.dst_ip, pkt.dport)] = (seq + end) & 0xFFFFFFFF
