"""A small on-disk cache for data tapwatch derives from files at start-up.

Parsing the IEEE registries and compiling the identification rules costs a few tenths of a
second in every run, though their sources rarely change. Each entry is a pickle named by a
key the caller derives from its sources (their contents, or paths, sizes and mtimes), so a
changed source simply misses. A cache that cannot be read or written is ignored: it only
ever saves time. $TAPWATCH_CACHE_DIR (empty: off), else $XDG_CACHE_HOME/tapwatch, else
~/.cache/tapwatch.
"""

from __future__ import annotations

import logging
import os
import pickle
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import xxhash

from tapwatch import __version__

log = logging.getLogger(__name__)
ENV_DIR = "TAPWATCH_CACHE_DIR"


def cache_dir() -> Path | None:
    value = os.environ.get(ENV_DIR)
    if value is not None:
        return Path(value) if value else None
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tapwatch"


def key_of(parts: Iterable[str | bytes]) -> str:
    """A key for these source descriptions, and tapwatch's version (code changes the form)."""
    h = xxhash.xxh3_128(__version__.encode())
    for part in parts:
        data = part.encode("utf-8", "surrogateescape") if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def file_stamp(path: Path) -> str:
    """Path, size and modification time: enough to notice a replaced registry file."""
    try:
        st = path.stat()
    except OSError:
        return f"{path}:missing"
    return f"{path}:{st.st_size}:{st.st_mtime_ns}"


def load(name: str, key: str) -> Any | None:
    folder = cache_dir()
    if folder is None:
        return None
    try:
        with (folder / f"{name}-{key}.pickle").open("rb") as fh:
            return pickle.load(fh)
    except FileNotFoundError:
        return None
    except Exception as exc:  # noqa: BLE001 - a damaged cache entry is just a miss
        log.debug("cache %s unreadable: %s", name, exc)
        return None


def store(name: str, key: str, value: Any) -> None:
    """Write atomically, and drop this name's entries for other keys."""
    folder = cache_dir()
    if folder is None:
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}-")
        with os.fdopen(fd, "wb") as fh:
            pickle.dump(value, fh, protocol=pickle.HIGHEST_PROTOCOL)
        final = folder / f"{name}-{key}.pickle"
        os.replace(tmp, final)
        for old in folder.glob(f"{name}-*.pickle"):
            if old != final:
                old.unlink(missing_ok=True)
    except OSError as exc:
        log.debug("cache %s not written: %s", name, exc)
