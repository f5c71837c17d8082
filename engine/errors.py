"""Typed errors of the engine, raised at its boundaries (file, tensor, request).

Each carries the bad value so callers can report it; ``str(error)`` is a complete sentence
naming the file (and tensor, type or count) that is wrong.
"""

from __future__ import annotations

from pathlib import Path

from engine.arch import SUPPORTED_ARCHITECTURES


class EngineError(Exception):
    """Base class of every error the engine raises on bad input or a bad request."""


class GGUFError(EngineError):
    """A file that is not a usable GGUF: bad magic, version, truncation, absurd header values."""

    def __init__(self, path: str | Path, message: str) -> None:
        self.path = Path(path)
        self.message = message
        super().__init__(f"{self.path}: {message}")


class UnsupportedTensorType(GGUFError):
    """A tensor whose ggml type the engine cannot compute with."""

    def __init__(self, path: str | Path, tensor: str, type_name: str) -> None:
        self.tensor = tensor
        self.type_name = type_name
        super().__init__(
            path, f"tensor {tensor!r} has type {type_name}, which the engine does not support"
        )


class UnsupportedArchitecture(GGUFError):
    """A model whose ``general.architecture`` the engine does not run."""

    def __init__(self, path: str | Path, architecture: str) -> None:
        self.architecture = architecture
        supported = ", ".join(SUPPORTED_ARCHITECTURES)
        super().__init__(
            path, f"architecture {architecture!r} is not supported (supported: {supported})"
        )


class SplitError(GGUFError):
    """A model split in parts with a part missing or not belonging to the set."""


class ContextOverflow(EngineError):
    """A request needing more positions than the context holds."""

    def __init__(self, n_tokens: int, n_ctx: int) -> None:
        self.n_tokens = n_tokens
        self.n_ctx = n_ctx
        super().__init__(f"{n_tokens} tokens do not fit in a context of {n_ctx} tokens")


class GenerationCancelled(EngineError):
    """Raised only where a caller asked for an exception on cancellation."""
