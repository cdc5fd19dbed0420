"""Vectorized L2–L4 decoding of capture chunks and per-run aggregation."""

from __future__ import annotations

import functools
from collections.abc import Iterator

import numpy as np

from tapwatch.capture.reader import Chunk
from tapwatch.decode import kernel, protocols
from tapwatch.decode.kernel import Rows
from tapwatch.decode.select import Picker, idle_args

BATCH = 16384  # records per decode call: the rows of one batch stay in cache

_T = protocols.TABLES
_IDS = (protocols.ID["llc"], protocols.ID["ipv4"], protocols.ID["ipv6"])
_idle = functools.cache(idle_args)


class Decoder:
    """Turns chunks into batches of rows, reusing its buffers."""

    def __init__(self, batch: int = BATCH, picker: Picker | None = None) -> None:
        self.batch = batch
        self.picker = picker  # the dissectors' selector, run as rows are decoded
        self.rows = Rows(2 * batch + 16)
        self.status = np.empty(0, dtype=np.int64)

    def batches(self, chunk: Chunk) -> Iterator[Rows]:
        """Decode the chunk batch by batch. Row `pkt` values index the chunk's records.

        Each yielded Rows is overwritten by the next; `self.status[i]` is the decode
        status (kernel.OK, UNSUPPORTED_LINK, MALFORMED, ENCRYPTED) of record i.
        """
        n = len(chunk)
        if self.status.shape[0] < n:
            self.status = np.empty(n, dtype=np.int64)
        picker = self.picker
        for start in range(0, n, self.batch):
            stop = min(n, start + self.batch)
            self.rows.n = kernel.decode(
                start, stop, chunk.buf, chunk.off, chunk.cap, chunk.wire, chunk.ts,
                chunk.linktype, _T["ethertype"], _T["ip_proto"], _T["tcp"], _T["udp"],
                _T["llc"], _T["snap_keys"], _T["snap_ids"], *_IDS,
                *self.rows.arrays(), self.status, picker is not None,
                picker.start(chunk.buf, self.rows.capacity) if picker else _idle(),
            )
            self.rows.picker = picker
            yield self.rows
