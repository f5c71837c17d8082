"""The incremental, resumable build: corpus → chunks → embeddings → index.

A build takes the index's write lock and a staging generation, reads the input once, and for each
valid document compares its content hash with the index: unchanged documents cost nothing, new or
changed ones are chunked and embedded in length-sorted batches, and each batch of whole documents
is committed in one transaction. At the end, ``--prune`` removes documents gone from the input and
the generation is published in one transaction. A killed build loses at most its batch in flight;
the next build resumes the staging generation (documents already staged are skipped).
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import manifest as mf
from .chunking import Chunk, Chunker, ChunkingSettings
from .corpus import Record, Rejection, check_input, read_corpus
from .embedding import (
    DEFAULT_DEVICE,
    Embedder,
    canonical_name,
    check_device,
    cpu_count,
    load_embedder,
    resolve_device,
)
from .errors import SettingsMismatch, StrictModeFailure
from .index import DB_NAME, IndexStore
from .index.check import read_manifest_json

BATCH_CHUNKS = 256  # chunks embedded and committed together (what a crash can lose)
CHUNK_GROUP = 16  # documents tokenized together
MAX_REPORTED = 50  # rejections printed one by one; the rest are counted


@dataclass
class BuildReport:
    index: str
    documents_seen: int = 0
    added: int = 0
    replaced: int = 0
    unchanged: int = 0
    pruned: int = 0
    chunks_added: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    n_rejected: int = 0
    seconds: float = 0.0
    embed_seconds: float = 0.0
    published: bool = False
    generation: int = 0
    prune_skipped: str | None = None

    executor: dict = field(default_factory=lambda: {"kind": "local"})

    def count_staged(self, replacing: list[bool], n_chunks: int) -> None:
        """Count a staged batch: its documents (new or replacing one) and chunks."""
        self.replaced += sum(replacing)
        self.added += len(replacing) - sum(replacing)
        self.chunks_added += n_chunks

    @property
    def chunks_per_s(self) -> float:
        return self.chunks_added / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict:
        return {
            "documents_seen": self.documents_seen,
            "added": self.added,
            "replaced": self.replaced,
            "unchanged": self.unchanged,
            "pruned": self.pruned,
            "chunks_added": self.chunks_added,
            "rejected": self.n_rejected,
            "seconds": round(self.seconds, 2),
            "embed_seconds": round(self.embed_seconds, 2),
            "chunks_per_s": round(self.chunks_per_s, 2),
            "published": self.published,
            "generation": self.generation,
            "prune_skipped": self.prune_skipped,
            "executor": self.executor,
        }

    def summary(self) -> str:
        lines = [
            f"documents: {self.documents_seen} read, {self.added} added, {self.replaced} replaced, "
            f"{self.unchanged} unchanged, {self.pruned} pruned; {self.n_rejected} rejected",
            f"chunks: {self.chunks_added} embedded in {self.seconds:.1f} s "
            f"({self.chunks_per_s:.1f} chunks/s)",
        ]
        if self.prune_skipped:
            lines.append(f"prune skipped: {self.prune_skipped}")
        lines.append(
            f"index {self.index}: generation {self.generation}"
            + (" published" if self.published else " unchanged")
        )
        return "\n".join(lines)


def _progress(desc: str, unit: str, total: int | None, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(
        desc=desc,
        unit=unit,
        total=total,
        disable=not enabled,
        dynamic_ncols=True,
        smoothing=0.1,
        file=sys.stderr,
    )


def _count_lines(spec: str) -> int | None:
    """Lines of a plain JSONL input (a fast upper bound for the progress bar), else None."""
    path = Path(spec)
    if not (path.is_file() and path.name.endswith((".jsonl", ".ndjson"))):
        return None
    n = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            n += block.count(b"\n")
    return n


def embed_chunks(
    emb: Embedder, chunks: list[Chunk], with_parts: bool, progress: Callable[[int], None] | None
) -> tuple[np.ndarray, list[np.ndarray] | None]:
    """The chunks' vectors (n, dim) and, for an index with part vectors, their parts."""
    if with_parts:
        return emb.embed_parts(
            [c.token_ids for c in chunks],
            [c.parts for c in chunks],
            [c.n_lead for c in chunks],
            progress=progress,
        )
    return emb.embed_ids([c.token_ids for c in chunks], progress=progress), None


def document_row(rec: Record, chunks: list[Chunk]) -> tuple:
    """The ``documents`` row of a chunked record (see ``IndexStore.stage``)."""
    return (rec.id, rec.source, rec.title, rec.url, rec.content_hash, len(rec.clean_text),
            len(chunks))


def chunk_rows(rec: Record, chunks: list[Chunk]) -> list[tuple]:
    """The ``chunks`` rows of a chunked record: ids ``doc_id#i``, text, context, metadata."""
    return [
        (
            f"{rec.id}#{c.index}",
            rec.id,
            rec.source,
            c.context,
            c.text,
            {
                "doc_id": rec.id,
                "source": rec.source,
                "title": rec.title,
                "url": rec.url,
                "heading": c.heading,
                "start": c.start,
                "end": c.end,
                "chunk": c.index,
            },
        )
        for c in chunks
    ]


class _Builder:
    """State of one build run (kept small: one batch of documents in memory at a time)."""

    def __init__(
        self,
        store: IndexStore,
        gen: int,
        get_embedder: Callable[[], Embedder],
        settings: ChunkingSettings,
        report: BuildReport,
        bars,
        batch_chunks: int = BATCH_CHUNKS,
    ) -> None:
        self.store, self.gen, self.settings, self.report = store, gen, settings, report
        self.batch_chunks = max(1, batch_chunks)
        self._get_embedder = get_embedder
        self.chunker: Chunker | None = None
        self.group: list[tuple[Record, bool]] = []
        self.batch: list[tuple[Record, bool, list[Chunk]]] = []
        self.n_batch_chunks = 0
        self.docs_bar, self.chunks_bar = bars

    @property
    def n_pending_docs(self) -> int:
        return len(self.group) + len(self.batch)

    def add(self, rec: Record, replacing: bool) -> None:
        self.group.append((rec, replacing))
        if len(self.group) >= CHUNK_GROUP:
            self._chunk_group()

    def _chunk_group(self) -> None:
        if not self.group:
            return
        if self.chunker is None:
            self.chunker = Chunker(self._get_embedder().counter, self.settings)
        chunked = self.chunker.chunk_many([(r.id, r.clean_text, r.title) for r, _ in self.group])
        group, self.group = self.group, []
        for (rec, replacing), chunks in zip(group, chunked, strict=True):
            self.batch.append((rec, replacing, chunks))
            self.n_batch_chunks += len(chunks)
            if self.n_batch_chunks >= self.batch_chunks:
                self._commit_batch()

    def flush(self) -> None:
        """Embed and commit everything pending."""
        self._chunk_group()
        self._commit_batch()

    def _commit_batch(self) -> None:
        if not self.batch:
            return
        t0 = time.perf_counter()
        chunks = [c for _, _, cs in self.batch for c in cs]
        with_parts = bool(self.store.manifest["embedding"].get("parts"))
        vectors, parts = embed_chunks(
            self._get_embedder(), chunks, with_parts, self.chunks_bar.update
        )
        self.report.embed_seconds += time.perf_counter() - t0
        docs = [document_row(r, cs) for r, _, cs in self.batch]
        rows = [row for r, _, cs in self.batch for row in chunk_rows(r, cs)]
        self.store.stage(self.gen, docs, rows, vectors, parts)
        self.report.count_staged([replacing for _, replacing, _ in self.batch], len(chunks))
        self.batch, self.n_batch_chunks = [], 0


def _scan_strict(spec: str, sources, limit, log) -> None:
    bad = [item for item in read_corpus(spec, sources, limit) if isinstance(item, Rejection)]
    for item in bad[:MAX_REPORTED]:
        log(f"rejected {item}")
    if bad:
        raise StrictModeFailure(len(bad))


def _chunking_of(manifest: Any) -> ChunkingSettings | None:
    """The chunking settings a manifest records; None when it records none readable."""
    try:
        return ChunkingSettings.from_dict(manifest["chunking"])
    except (KeyError, TypeError, ValueError):
        return None


def recorded_chunking(index: str | Path) -> ChunkingSettings | None:
    """The chunking settings an index's manifest records; None for no index or none readable."""
    return _chunking_of(read_manifest_json(Path(index)))


def _open_store(
    index: Path,
    model_name: str,
    settings: ChunkingSettings | None,
    get_embedder: Callable[[], Embedder],
    ann: dict | None,
) -> tuple[IndexStore, ChunkingSettings]:
    """The index (created when new) and the chunking settings of this build: ``settings`` when
    given (an existing index must have been built with them), else the index's own
    (``ChunkingSettings()`` for a new index)."""
    if not (index / DB_NAME).exists():
        settings = settings or ChunkingSettings()
        emb = get_embedder()
        return IndexStore.create(
            index,
            emb.dim,
            emb.name,
            kind=mf.KIND_CORPUS,
            chunking=settings.to_dict(),
            ann=ann,
            embedding_extra=_embedding_extra(emb),
        ), settings
    store = IndexStore.open(index)
    man = store.manifest
    if man["kind"] != mf.KIND_CORPUS:
        raise SettingsMismatch(index, "is a plain vector store, not a corpus index")
    store.check_embedding(model_name, store.dim)
    built = _chunking_of(man)
    if built is not None and settings is None:
        return store, built
    settings = settings or ChunkingSettings()
    if built != settings:
        raise SettingsMismatch(
            index,
            f"was built with chunking {man.get('chunking')}, not "
            f"{settings.to_dict()}: use a new index folder",
        )
    return store, settings


def _embedding_extra(emb: Embedder) -> dict:
    """What the manifest records of how chunks are embedded (queries must be embedded alike)."""
    return {"max_tokens": emb.max_tokens, "inference": emb.inference, "parts": emb.parts_spec}


def _check_embedding_extra(store: IndexStore, emb: Embedder) -> None:
    """Refuse to add chunks embedded otherwise than the index's (checked once the model is
    loaded: an unchanged input never loads it)."""
    have, want = store.manifest["embedding"], _embedding_extra(emb)
    for key in ("inference", "parts"):
        if have.get(key) != want[key]:
            raise SettingsMismatch(
                store.path,
                f"was built with embedding {key} {have.get(key)!r}, this build would use "
                f"{want[key]!r}: use a new index folder",
            )


@dataclass
class _Job:
    """What one build was asked to do."""

    spec: str
    index: Path
    sources: list[str] | None
    limit: int | None
    prune: bool
    settings: ChunkingSettings
    progress: bool
    batch_chunks: int
    log: Callable[[str], None]


class _Model:
    """The build's embedding model: loaded on first use (an unchanged input never loads it) on
    ``device``, and checked against the index (``store``, once open) and the chunking settings at
    every use.  A model on a GPU is recorded in ``report``'s executor (a local build's)."""

    def __init__(self, job: _Job, embedder: Embedder | None, embedding_model: str | None,
                 threads: int | None, device: str) -> None:
        self.job, self.threads, self.device, self.emb = job, threads, device, embedder
        self.name = embedder.name if embedder is not None else canonical_name(embedding_model)
        self.store: IndexStore | None = None
        self.report: BuildReport | None = None

    def __call__(self) -> Embedder:
        if self.emb is None:
            self.emb = load_embedder(self.name, threads=self.threads, device=self.device)
        emb = self.emb
        if self.report is not None and emb.device != "cpu":
            self.report.executor["device"] = emb.device
        if self.store is not None:
            self.store.check_embedding(emb.name, emb.dim)
            _check_embedding_extra(self.store, emb)
        if self.job.settings.max_tokens > emb.max_tokens:
            raise SettingsMismatch(
                self.job.index,
                f"chunks of {self.job.settings.max_tokens} tokens exceed the model's "
                f"{emb.max_tokens}",
            )
        return emb


def build(
    input: str | Path,
    index: str | Path,
    *,
    embedding_model: str | None = None,
    embedder: Embedder | None = None,
    sources: Iterable[str] | None = None,
    limit: int | None = None,
    strict: bool = False,
    prune: bool = False,
    settings: ChunkingSettings | None = None,
    threads: int | None = None,
    progress: bool = True,
    ann: dict | None = None,
    batch_chunks: int = BATCH_CHUNKS,
    ray: str | None = None,
    device: str = DEFAULT_DEVICE,
    log: Callable[[str], None] = lambda s: print(s, file=sys.stderr),
) -> BuildReport:
    """Build or update the index at ``index`` from ``input``; see the module docstring.

    ``embedder`` (or ``embedding_model``, a name or path) is loaded only when a document needs
    embedding, so a re-run over an unchanged input is quick.  ``ray`` (a cluster address, or
    ``""`` for a local Ray instance) chunks and embeds on a Ray cluster instead
    (``ingest.distributed``, the ``distributed`` extra); the index written is the same.
    ``device`` (``embedding.DEVICES``) is where chunks are embedded: ``auto`` uses a CUDA GPU
    when there is one (here, or the cluster's with ``ray``); ``cuda`` without one is a
    ``DeviceError`` before any work.  The index is the same on either.  ``settings``: how
    documents are cut; by default an existing index's own (``ChunkingSettings()`` for a new
    one); given, they must be the index's.
    """
    t_start = time.perf_counter()
    src = [s.strip() for s in sources if s.strip()] if sources else None
    job = _Job(str(input), Path(index), src, limit, prune, settings or ChunkingSettings(),
               progress, batch_chunks, log)
    if prune and limit is not None:
        raise ValueError("--prune with --limit would remove every document past the limit")
    if check_device(device) == "cuda" and ray is None:
        resolve_device(device)  # no GPU here: the error comes before any work
    # with Ray the driver's model only checks the index: on CPU, the cluster's GPUs for the actors
    model = _Model(job, embedder, embedding_model, threads, device if ray is None else "cpu")
    check_input(job.spec)
    if strict:
        _scan_strict(job.spec, job.sources, limit, log)
    with contextlib.ExitStack() as cluster:
        report = BuildReport(index=str(job.index),
                             executor={"kind": "local", "threads": int(threads or cpu_count())})
        model.report = report
        make_builder = _Builder
        if ray is not None:  # connect before touching the index: a bad address changes nothing
            make_builder = cluster.enter_context(_ray_factory(ray, model, threads, device, report))
        model.store, job.settings = _open_store(job.index, model.name, settings, model, ann)
        _build_in(model.store, job, model, report, make_builder, t_start)
    report.seconds = time.perf_counter() - t_start
    return report


def _ray_factory(ray: str, model: _Model, threads: int | None, device: str, report: BuildReport):
    """The Ray cluster's builder factory (``ingest.distributed``), its plan in ``report``."""
    from .distributed import RayBuilderFactory

    factory = RayBuilderFactory(ray, model.name, threads, device=device)
    report.executor, model.report = factory.describe(), None  # the actors' device, not the driver's
    return factory


def _build_in(store: IndexStore, job: _Job, get_embedder, report: BuildReport, make_builder,
              t_start: float) -> None:
    """Stage the changes in a build generation, then publish them (or discard an empty one)."""
    gen = store.begin_build()
    try:
        _run(store, gen, job, get_embedder, report, make_builder)
        report.seconds = time.perf_counter() - t_start
        if store.has_changes(gen):
            update = {
                "last_build": {**report.to_dict(), "input": job.spec},
                "inputs": _inputs(store.manifest, job.spec, job.sources),
            }
            man = store.publish(gen, update, before=_ann_hook(store))
            report.published, report.generation = True, man["generation"]
        else:
            store.discard_build(gen)
            report.generation = store.generation
    finally:
        store.end_build()
        store.close()


def _ann_hook(store: IndexStore):
    if (store.manifest.get("ann") or {}).get("type") != "ivf":
        return None
    from .ann import prepare_ivf

    return lambda conn, gen: prepare_ivf(store, conn, gen)


def _inputs(man: dict, spec: str, sources) -> list[dict]:
    inputs = [i for i in man.get("inputs", []) if i.get("input") != spec]
    return [*inputs, {"input": spec, "sources": sources, "at": mf.now()}]


def _run(
    store: IndexStore, gen: int, job: _Job, get_embedder, report: BuildReport, make_builder
) -> None:
    """Read the input once, hand new or changed documents to a builder (``_Builder`` here, or
    ``ingest.distributed``'s on a Ray cluster), then prune."""
    live = store.live_documents()
    total = _count_lines(job.spec) if job.limit is None else job.limit
    with (
        _progress("documents", "doc", total, job.progress) as docs_bar,
        _progress("chunks", "chunk", None, job.progress) as chunks_bar,
    ):
        builder = make_builder(
            store, gen, get_embedder, job.settings, report, (docs_bar, chunks_bar), job.batch_chunks
        )
        seen: set[str] = set()
        for item in read_corpus(job.spec, job.sources, job.limit):
            if isinstance(item, Rejection):
                report.n_rejected += 1
                if len(report.rejected) < MAX_REPORTED:
                    report.rejected.append(item)
                    docs_bar.write(f"rejected {item}", file=sys.stderr)
                continue
            report.documents_seen += 1
            docs_bar.update(1)
            seen.add(item.id)
            known = live.get(item.id)
            if known == item.content_hash:
                report.unchanged += 1
                continue
            builder.add(item, replacing=known is not None)
            done = report.added + report.replaced
            if done and docs_bar.total:  # chunks still to come, from the chunks per document so far
                per_doc = report.chunks_added / done
                left = docs_bar.total - report.documents_seen + builder.n_pending_docs
                chunks_bar.total = int(chunks_bar.n + per_doc * max(0, left))
        builder.flush()
    if job.prune:
        _prune(store, gen, live, seen, job.sources, report, job.log)


def _prune(store, gen, live, seen, sources, report, log) -> None:
    if report.n_rejected:
        report.prune_skipped = (
            f"{report.n_rejected} record(s) were rejected, so documents missing "
            "from the input may only be unreadable; fix them and re-run"
        )
        log(f"prune skipped: {report.prune_skipped}")
        return
    wanted = {s.lower() for s in sources} if sources else None
    gone = [d for d in live if d not in seen]
    if wanted is not None:
        src = store.document_sources(gone)
        gone = [d for d in gone if (src.get(d) or "").lower() in wanted]
    store.stage_delete(gen, gone)
    report.pruned = len(gone)
