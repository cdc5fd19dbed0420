"""Compiled kernels are cached under a name of all their sources: a cached kernel must never
run code of another module that has changed since (numba keys a cache by one file)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import tapwatch
from tapwatch import KERNEL_SOURCES, kernels_key

PACKAGE = Path(tapwatch.__file__).parent


def test_every_module_with_kernels_is_named() -> None:
    compiled = {str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py")
                if "@njit" in path.read_text(encoding="utf-8")}
    assert compiled == set(KERNEL_SOURCES)


def test_a_changed_source_gets_another_cache(tmp_path: Path) -> None:
    for name in KERNEL_SOURCES:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(PACKAGE / name, tmp_path / name)
    before = kernels_key(tmp_path)
    assert before == kernels_key(PACKAGE)
    selector = tmp_path / "decode" / "select.py"
    selector.write_text(selector.read_text(encoding="utf-8") + "\n# changed\n", encoding="utf-8")
    assert kernels_key(tmp_path) != before


def test_numba_caches_where_tapwatch_says(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["TAPWATCH_CACHE_DIR"] = str(tmp_path)
    code = "import numba, tapwatch; print(numba.config.CACHE_DIR)"  # numba first: still applies
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == str(tmp_path / "numba" / kernels_key(PACKAGE))
    assert Path(out).is_dir()
    env["TAPWATCH_CACHE_DIR"] = ""  # caching off: numba's own choice
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == ""
