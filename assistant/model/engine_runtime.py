"""The engine model, loaded once per file and shared by every LangChain part that uses it.

``EngineLLM``, ``ChatEngine``, the chain and the CLI all call :func:`get_engine_model`; the
first call for a file loads it (memory-mapped, no dequantization), later calls return the same
:class:`engine.Model`, which is safe to share between threads.  The cache is keyed by the
resolved path, so a preset name and the path it resolves to share one model.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from assistant.config import Settings
from assistant.model.presets import ModelError, resolve_model

_lock = threading.Lock()
_models: dict[Path, Any] = {}
_loading: dict[Path, threading.Lock] = {}


def resolve_model_path(spec: str | Path, models_dir: Path | None = None) -> Path:
    """A preset name, a GGUF path, or the name of a GGUF file in the models folder → the file's
    absolute path (raises ``ModelError`` saying how to fetch a missing preset)."""
    if models_dir is None:
        models_dir = Settings.from_env().models_dir
    try:
        return resolve_model(str(spec), models_dir).resolve()
    except ModelError:
        in_folder = models_dir / str(spec)
        if Path(str(spec)).name == str(spec) and in_folder.is_file():
            return in_folder.resolve()
        raise


def _default_loader(path: Path) -> Any:
    import engine

    return engine.load(path)


def get_engine_model(
    spec: str | Path,
    models_dir: Path | None = None,
    *,
    loader: Callable[[Path], Any] | None = None,
) -> Any:
    """The shared :class:`engine.Model` for ``spec`` (a preset name or a path), loaded once.

    Two threads asking for the same file at once load it once: the second waits for the first.
    """
    path = resolve_model_path(spec, models_dir)
    with _lock:
        model = _models.get(path)
        if model is not None:
            return model
        file_lock = _loading.setdefault(path, threading.Lock())
    with file_lock:
        with _lock:
            model = _models.get(path)
        if model is None:
            model = (loader or _default_loader)(path)
            with _lock:
                _models[path] = model
                _loading.pop(path, None)
    return model


def loaded_models() -> dict[Path, Any]:
    """A snapshot of the models loaded so far (path → model)."""
    with _lock:
        return dict(_models)


def forget_models() -> None:
    """Drop every cached model (tests; a long-running page switching models)."""
    with _lock:
        _models.clear()
        _loading.clear()
