"""The anchor of the ingest benchmarks: the standard LangChain recipe
(RecursiveCharacterTextSplitter 1000/200, the same MiniLM through sentence-transformers
``encode``, a flat FAISS index: what ``FAISS.from_documents`` does), our build on the same
documents, and the model's forward passes alone on the anchor's chunks. Needs
``langchain-text-splitters``: ``pip install -e .[bench]``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from ..chunking import ChunkingSettings
from ..corpus import Record, read_corpus
from ..embedding import Embedder

ANCHOR_CHUNK_CHARS = 1000
ANCHOR_OVERLAP_CHARS = 200
ANCHOR_BATCH = 32  # HuggingFaceEmbeddings' default encode batch size


def docs_spread(spec: str, n_docs: int | None) -> list[Record]:
    recs = [r for r in read_corpus(spec) if isinstance(r, Record)]
    if n_docs and n_docs < len(recs):  # an even spread over the corpus (its sources, its lengths)
        step = len(recs) / n_docs
        recs = [recs[int(i * step)] for i in range(n_docs)]
    return recs


def _splitter():
    try:
        from langchain_text_splitters import RecursiveCharacterTextSplitter
    except ImportError:
        sys.exit("the anchor needs langchain-text-splitters: pip install -e .[bench]")
    return RecursiveCharacterTextSplitter(
        chunk_size=ANCHOR_CHUNK_CHARS, chunk_overlap=ANCHOR_OVERLAP_CHARS
    )


def anchor_chunks(docs: list[Record]) -> list[tuple[str, str]]:
    """(doc_id, text) of the anchor's chunks."""
    sp = _splitter()
    return [(d.id, t) for d in docs for t in sp.split_text(d.clean_text)]


def anchor_texts(chunks: list[tuple[str, str]]) -> list[str]:
    """The texts the anchor embeds: its chunks with line breaks as spaces, as
    langchain-huggingface does."""
    return [t.replace("\n", " ") for _, t in chunks]


def run_anchor(docs: list[Record], emb: Embedder):
    """The anchor's build: split, embed (sentence-transformers encode), flat FAISS index."""
    import faiss

    t0 = time.perf_counter()
    chunks = anchor_chunks(docs)
    texts = anchor_texts(chunks)
    vecs = emb.model.encode(texts, batch_size=ANCHOR_BATCH, convert_to_numpy=True)
    index = faiss.IndexFlatL2(vecs.shape[1])
    index.add(np.asarray(vecs, dtype=np.float32))
    seconds = time.perf_counter() - t0
    tokens = [min(len(ids), emb.max_tokens) for ids in emb.counter.ids(texts, 1 << 30)]
    return chunks, vecs, seconds, tokens


def run_forward(docs: list[Record], emb: Embedder):
    """The model's forward passes alone on the anchor's chunks, tokenized beforehand: the time
    no pipeline using this forward pass can beat at the anchor's chunk sizes."""
    ids = emb.counter.ids(anchor_texts(anchor_chunks(docs)), emb.max_tokens)
    t0 = time.perf_counter()
    emb.embed_ids(ids)
    return len(ids), time.perf_counter() - t0, [len(x) for x in ids]


def run_ours(docs: list[Record], emb: Embedder, settings: ChunkingSettings, folder: Path):
    from ..pipeline import build

    corpus = folder / "corpus.jsonl"
    with open(corpus, "w", encoding="utf-8") as f:
        for d in docs:
            f.write(
                json.dumps(
                    {
                        "id": d.id,
                        "source": d.source,
                        "title": d.title,
                        "url": d.url,
                        "clean_text": d.clean_text,
                    }
                )
                + "\n"
            )
    index = folder / f"index-{time.monotonic_ns()}"
    t0 = time.perf_counter()
    report = build(corpus, index, embedder=emb, settings=settings, progress=False)
    seconds = time.perf_counter() - t0
    from ..index import IndexStore

    store = IndexStore.open(index, readonly=True)
    tokens = [
        len(e.ids)
        for e in emb.counter._tok.encode_batch(
            [
                (c + "\n" + t) if c else t
                for c, t in store._conn().execute("SELECT context, text FROM chunks")
            ],
            add_special_tokens=True,
        )
    ]
    store.close()
    return report.chunks_added, seconds, tokens
