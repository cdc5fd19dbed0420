"""Errors and warnings that name the file, the packet number and the byte offset."""

from __future__ import annotations

from dataclasses import dataclass


class CaptureError(Exception):
    """The file cannot be read as a capture at all."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True)
class CaptureWarning:
    """Something was skipped or damaged; everything around it was still read."""

    path: str
    message: str
    packet: int | None = None
    offset: int | None = None

    def __str__(self) -> str:
        where = []
        if self.packet is not None:
            where.append(f"packet {self.packet}")
        if self.offset is not None:
            where.append(f"offset {self.offset}")
        loc = f" ({', '.join(where)})" if where else ""
        return f"{self.path}{loc}: {self.message}"
