"""tapwatch: agentless IoT/OT network security monitor."""

import hashlib
import os
import sys
from pathlib import Path

__version__ = "0.1.0"

# The modules with compiled (numba) kernels. A kernel calls kernels of other modules (the
# decoder calls the selector), but numba keys a cached kernel by its own file only.
KERNEL_SOURCES = ("capture/walk.py", "decode/kernel.py", "decode/select.py", "decode/aggregate.py",
                  "sensor/live.py", "sensor/rolling.py")


def kernels_key(package: Path) -> str:
    """A name for this version of the kernel sources under `package` (tapwatch's folder)."""
    digest = hashlib.blake2b(__version__.encode(), digest_size=8)
    for name in KERNEL_SOURCES:
        digest.update((package / name).read_bytes())
    return digest.hexdigest()


def _kernel_cache() -> None:
    """Cache the compiled kernels in a directory named by all their sources, so that a
    changed module never runs stale inside a cached caller (set before numba is imported;
    an explicit NUMBA_CACHE_DIR, TAPWATCH_CACHE_DIR set empty, or a cache directory that
    cannot be made leaves numba's own choice)."""
    if "NUMBA_CACHE_DIR" in os.environ:
        return
    from tapwatch.cache import cache_dir

    base = cache_dir()
    if base is None:
        return
    folder = base / "numba" / kernels_key(Path(__file__).parent)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return  # numba then finds a place of its own
    os.environ["NUMBA_CACHE_DIR"] = str(folder)
    numba = sys.modules.get("numba")
    if numba is not None:  # imported before tapwatch: it read its configuration already
        numba.config.CACHE_DIR = os.environ["NUMBA_CACHE_DIR"]


_kernel_cache()
