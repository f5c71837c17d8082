"""Freed heap memory back to the operating system after each answer (glibc's ``malloc_trim``).

Streamlit runs every rerun of the page on a new script thread, and glibc's malloc gives threads
arenas of their own: what an answer frees (the engine's activations and KV cache, the query's
embedding) stays in those arenas, fragmented, and the server's RSS creeps up although nothing
leaks. Measured through the page's own services (``AssistantServices.ask``, SmolLM2, the sample
index, 8 answers a round on 4 new threads, glibc's ``mallinfo2``): memory in use stayed at
238 MB for 6 rounds while the arenas' free memory rose from 248 MB to 298–339 MB and RSS from
1,091 MB to 1,171–1,198 MB; one ``malloc_trim(0)`` brought RSS to 1,026 MB. With 4 persistent
threads instead, RSS stayed at 1,071–1,113 MB. So the page trims after every answer.
"""

from __future__ import annotations

import ctypes
import sys
from functools import cache
from typing import Any


@cache
def _glibc() -> Any:
    """glibc, when this process runs on it (``None`` on macOS, Windows, musl)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") else None


def release_free_memory() -> bool:
    """Return the heap's free pages to the OS (``malloc_trim(0)``); False where there is no
    glibc (nothing to do: other allocators return memory their own way)."""
    libc = _glibc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True
