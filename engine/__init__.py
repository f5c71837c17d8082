"""Our GGUF inference engine for Llama-architecture models (numpy + numba only).

>>> import engine
>>> model = engine.load("SmolLM2-135M-Instruct.Q4_1.gguf")
>>> model.generate("<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\n", temperature=0)
"""

import os

# numba's parallel kernels run on OpenMP.  By default its idle threads spin, which is fastest on
# an otherwise idle machine but collapses when the cores are shared (another process, a web
# server, torch's own OpenMP threads): a decode step has ~4 parallel loops per layer, and each
# waits for a spinning thread to be scheduled again.  Measured on 2 shared cores (SmolLM2,
# python -m engine bench --threads 2): 1-4 tok/s spinning, 30-34 tok/s passive.  Set before numba
# loads OpenMP; OMP_WAIT_POLICY=active in the environment restores spinning.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from engine.errors import (
    ContextOverflow,
    EngineError,
    GenerationCancelled,
    GGUFError,
    SplitError,
    UnsupportedArchitecture,
    UnsupportedTensorType,
)
from engine.generation import Generation
from engine.model import Model, load

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
