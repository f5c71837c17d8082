"""ui/heap.py: freed heap memory goes back to the OS (glibc's malloc_trim)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ui import heap

ROOT = Path(__file__).resolve().parents[2]

# 300 MB of 4 KiB blocks from malloc, then all freed but every 64th: the free pages sit between
# live blocks, where free() cannot give them back; malloc_trim(0) can (madvise on free pages).
SCRIPT = """
import ctypes, json
from ui import heap
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
def rss():
    return [int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS")][0]
blocks = [libc.malloc(4096) for _ in range(75_000)]
for p in blocks:
    ctypes.memset(p, 1, 4096)
for i, p in enumerate(blocks):
    if i % 64:
        libc.free(p)
before = rss()
trimmed = heap.release_free_memory()
print(json.dumps({"before_kb": before, "after_kb": rss(), "trimmed": trimmed}))
"""


@pytest.mark.skipif(heap._glibc() is None, reason="not glibc: nothing to trim")
def test_release_free_memory_returns_fragmented_free_pages() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=True)
    import json

    figures = json.loads(done.stdout)
    assert figures["trimmed"] is True
    assert figures["before_kb"] - figures["after_kb"] > 200_000, figures  # most of the 300 MB
