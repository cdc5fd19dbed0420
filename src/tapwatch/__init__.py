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


def _kernel_cache() -> None:
    """Cache the compiled kernels in a directory named by all their sources, so that a
    changed module never runs stale inside a cached caller (set before numba is imported;
    an explicit NUMBA_CACHE_DIR, or TAPWATCH_CACHE_DIR set empty, is left alone)."""
    if "NUMBA_CACHE_DIR" in os.environ:
        return
    from tapwatch.cache import cache_dir

    base = cache_dir()
    if base is None:
        return
    here = Path(__file__).parent
    digest = hashlib.blake2b(__version__.encode(), digest_size=8)
    for name in KERNEL_SOURCES:
        digest.update((here / name).read_bytes())
    os.environ["NUMBA_CACHE_DIR"] = str(base / "numba" / digest.hexdigest())
    numba = sys.modules.get("numba")
    if numba is not None:  # imported before tapwatch: it read its configuration already
        numba.config.CACHE_DIR = os.environ["NUMBA_CACHE_DIR"]


_kernel_cache()
