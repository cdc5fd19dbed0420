"""Capture sources: files (pcap, pcapng, gzip) turned into chunks of raw records."""

from tapwatch.capture.errors import CaptureError, CaptureWarning
from tapwatch.capture.reader import CaptureReader, Chunk, iter_capture_files

__all__ = ["CaptureError", "CaptureWarning", "CaptureReader", "Chunk", "iter_capture_files"]
