"""Ingest: clinical guidelines (epfl-llm/guidelines schema) → chunks → embeddings → FAISS index.

Public API (see docs/DESIGN.md): ``open_index`` → :class:`Index` (search, search_by_vector,
embed_query, get_vectors, stats), :class:`Hit`, the writable :class:`IndexStore`, ``build``.
"""

from pathlib import Path

# The demo corpus shipped with the project (262 real documents; see data/PROVENANCE.md).
SAMPLE_CORPUS = Path(__file__).parent / "data" / "guidelines-sample.jsonl"

from .chunking import Chunk, ChunkingSettings  # noqa: E402
from .embedding import DEFAULT_MODEL, Embedder, load_embedder  # noqa: E402
from .errors import (  # noqa: E402
    CorpusError,
    DeviceError,
    EmbedderError,
    EmbeddingMismatch,
    IndexBusy,
    IndexDamaged,
    IndexFolderError,
    IndexWriteFailed,
    IngestError,
    ModelUnavailable,
    SettingsMismatch,
    StrictModeFailure,
)
from .index import Hit, IndexStore, StoredChunk, check_model  # noqa: E402
from .pipeline import BuildReport, build  # noqa: E402
from .search import HybridSettings, Index, open_index  # noqa: E402

__all__ = [
    "DEFAULT_MODEL",
    "SAMPLE_CORPUS",
    "BuildReport",
    "Chunk",
    "ChunkingSettings",
    "CorpusError",
    "DeviceError",
    "Embedder",
    "EmbedderError",
    "EmbeddingMismatch",
    "Hit",
    "HybridSettings",
    "Index",
    "IndexBusy",
    "IndexDamaged",
    "IndexFolderError",
    "IndexStore",
    "IndexWriteFailed",
    "IngestError",
    "ModelUnavailable",
    "SettingsMismatch",
    "StoredChunk",
    "StrictModeFailure",
    "build",
    "check_model",
    "load_embedder",
    "open_index",
]
