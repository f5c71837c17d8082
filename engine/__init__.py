"""Our GGUF inference engine for Llama-architecture models (numpy + numba only).

>>> import engine
>>> model = engine.load("SmolLM2-135M-Instruct.Q4_1.gguf")
>>> model.generate("<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\n", temperature=0)
"""

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
