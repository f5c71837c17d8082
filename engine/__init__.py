"""Our GGUF inference engine for Llama-architecture models (numpy + numba only).

>>> import engine
>>> model = engine.load("SmolLM2-135M-Instruct.Q4_1.gguf")
>>> model.generate("<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\n", temperature=0)
"""

import hashlib
import os
import sys
from pathlib import Path


def _pin_numba_cache() -> None:
    """Key numba's on-disk cache by the engine's own sources.

    numba checks only the timestamp of the file that defines a kernel, so a kernel calling a
    helper from another file keeps running stale machine code after that helper changes.  A
    cache folder named by a hash of every ``.py`` file under ``engine/`` (sub-packages too:
    ``rglob``) makes any source change start a fresh cache: compile once per machine and
    version, never run stale code.  An explicit ``NUMBA_CACHE_DIR`` in the environment wins.
    """
    if os.environ.get("NUMBA_CACHE_DIR"):
        return
    here = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for source in sorted(here.rglob("*.py")):
        digest.update(source.relative_to(here).as_posix().encode())
        digest.update(source.read_bytes())
    name = f"numba-{digest.hexdigest()[:16]}"
    folder = here / "__pycache__" / name
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:  # a read-only install: fall back to the user's cache
        folder = Path.home() / ".cache" / "guidelines-assistant" / name
    os.environ["NUMBA_CACHE_DIR"] = str(folder)
    if "numba" in sys.modules:  # imported before us: its config was read already
        sys.modules["numba"].config.CACHE_DIR = str(folder)


_pin_numba_cache()

# numba's parallel kernels run on OpenMP.  By default its idle threads spin, which is fastest on
# an otherwise idle machine but collapses when the cores are shared (another process, a web
# server, torch's own OpenMP threads): a decode step had ~4 parallel loops per layer, and each
# waited for a spinning thread to be scheduled again.  Measured on 2 shared cores (SmolLM2,
# python -m engine bench --threads 2): 1-4 tok/s spinning, 30-34 tok/s passive.  Set before numba
# loads OpenMP; OMP_WAIT_POLICY=active in the environment restores spinning.  A passive thread
# costs a wake-up (70-100 us on some VMs) per parallel region, so a decode step is one region
# (engine/kernels/phases.py), not one per matrix product.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# The environment above must be set before these imports load numba and OpenMP.
from engine.errors import (  # noqa: E402
    ContextOverflow,
    EngineError,
    GenerationCancelled,
    GGUFError,
    SplitError,
    UnsupportedArchitecture,
    UnsupportedTensorType,
)

# The model and generation modules load numba (and compile or load kernels on first use): they
# are imported on first access, so that reading a GGUF file or tokenizing stays light.
_LAZY = {"Generation": "engine.generation", "Model": "engine.model", "load": "engine.model"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'engine' has no attribute {name!r}")


__all__ = [
    "ContextOverflow",
    "EngineError",
    "GGUFError",
    "Generation",
    "GenerationCancelled",
    "Model",
    "SplitError",
    "UnsupportedArchitecture",
    "UnsupportedTensorType",
    "load",
]
