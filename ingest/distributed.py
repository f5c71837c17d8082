"""Chunk and embed on a Ray cluster: ``python -m ingest build --input … --index … --ray [ADDRESS]``.

The optional ``distributed`` extra (``pip install '.[distributed]'``, on every node).  The driver
(this process) does what the single-process build does around the model (``ingest.pipeline``):
it reads and validates the input, compares content hashes with the index, and stages whole
documents in transactions, so incremental builds, ``--prune``, crash-resume and the manifest work
as they do there.  The documents to embed go to the cluster as a Ray Dataset, in windows of
``WINDOW_DOCS`` documents; an actor pool (``EmbedWorker``, sized by ``plan_pool``) loads the
embedding model once per actor, chunks with the same ``Chunker`` and embeds with the same
``Embedder`` (``pipeline.embed_chunks``).  Results
come back in input order, one row per document: its rows as JSON and its vectors as raw float32
bytes, staged by the driver in batches of ``--batch-chunks`` chunks, as the single-process build
stages them.

Faults: Ray Data restarts an actor whose process dies and retries its task (its actor pools'
defaults: ``max_restarts`` and ``max_task_retries`` unbounded); a document is staged only once
its row has come back, staging replaces by document id, and the driver checks every document
sent came back exactly once.  A killed driver loses at most the batch in flight: the next build
resumes.

Without an address a local Ray instance is started with this machine's CPUs
and a small object store; with one (``auto``, ``ray://host:10001``, ``host:6379``) the build joins
that cluster.  Each node needs the project installed (same version) and the embedding model
(the packaged default needs nothing more).

Devices (``--device``, ``plan_pool``): on a cluster whose nodes report GPU resources, ``auto``
(the default) and ``cuda`` give each actor a share of one GPU (``num_gpus``) and its ``threads``
CPUs, on the GPU nodes only, and the actors load the model on cuda; a cluster without GPUs (or
``--device cpu``) runs one actor per ``threads`` CPUs, on CPU.  ``cuda`` on a cluster without GPUs
is a ``DeviceError`` before any work, and so is a cluster whose GPU workers' torch cannot use
their GPU (probed with one task of the actors' resources; ``auto`` then runs on CPU).  The driver
loads its own copy of the model (to check the index) on CPU.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .chunking import Chunker, ChunkingSettings
from .corpus import Record
from .embedding import DEFAULT_DEVICE, check_device, cpu_count, cuda_available, load_embedder
from .errors import DeviceError, IngestError
from .index import IndexStore
from .pipeline import BuildReport, chunk_rows, document_row, embed_chunks

WINDOW_DOCS = 2000  # documents per Ray Dataset (bounds the driver's and object store's memory)
DOCS_PER_TASK = 4  # documents per actor call (small: the pool stays balanced)
OBJECT_STORE_BYTES = 200 * 1024 * 1024  # a local instance's object store
CONNECT_TIMEOUT_S = 10.0  # a cluster address that does not answer within this is an error
GPU_PROBE_TIMEOUT_S = 300.0  # a GPU share not granted within this (all busy) is an error
RECORD_FIELDS = ("id", "source", "clean_text", "title", "url", "origin", "line")
# Actors sharing one GPU at most (each chunks on its own CPUs while the others' batches run on
# the GPU; each holds a copy of the model and a CUDA context in the GPU's memory).
MAX_ACTORS_PER_GPU = 4


class ClusterError(IngestError):
    """Ray is missing, the cluster cannot be reached, or it lost documents."""


@dataclass(frozen=True)
class PoolPlan:
    """The embedding actor pool on a cluster: how many actors, what each requests, where its
    model runs."""

    actors: int
    num_cpus: int  # per actor (its torch threads)
    num_gpus: float  # per actor: 0, 1, or a share of one GPU (1/2, 1/3, 1/4)
    device: str  # "cpu" or "cuda": where each actor loads the model

    def remote_args(self) -> dict[str, float]:
        """Each actor's resources as ``map_batches`` arguments.  Ray Data reserves 1 CPU for an
        actor that names no ``num_cpus`` (and warns that ``num_cpus`` with ``num_gpus`` is
        experimental), so a GPU actor's single CPU is left implicit."""
        if not self.num_gpus:
            return {"num_cpus": self.num_cpus}
        return {"num_gpus": self.num_gpus} | (
            {"num_cpus": self.num_cpus} if self.num_cpus > 1 else {}
        )


def plan_pool(nodes: Sequence[Mapping[str, float]], threads: int, device: str) -> PoolPlan:
    """The actor pool for a cluster whose alive nodes have these Ray resources (``CPU``,
    ``GPU``), ``threads`` CPUs per actor and a ``--device`` setting.

    GPUs (``auto`` or ``cuda``, and a node with a whole GPU): actors run on the GPU nodes only,
    ``k`` per GPU (``num_gpus`` 1/k), k the CPUs per GPU of the poorest GPU node in actors of
    ``threads`` CPUs, between 1 and ``MAX_ACTORS_PER_GPU``; a node places no more actors than its
    GPUs' shares or its CPUs allow.  Otherwise (``cpu``, or ``auto`` without GPUs) one actor per
    ``threads`` CPUs of the cluster.  ``cuda`` with no GPU to use is a ``DeviceError``.
    """
    check_device(device)
    threads = max(1, int(threads))
    cpus = int(sum(n.get("CPU", 0) for n in nodes))
    if cpus < threads:
        raise ClusterError(f"the Ray cluster has {cpus} CPUs, fewer than --threads "
                           f"{threads} per worker")
    gpu_nodes = [(int(n.get("CPU", 0)), int(n.get("GPU", 0))) for n in nodes]
    gpu_nodes = [(c, g) for c, g in gpu_nodes if g >= 1]
    if device != "cpu" and gpu_nodes:
        per_gpu = min(c // threads // g for c, g in gpu_nodes)
        per_gpu = max(1, min(MAX_ACTORS_PER_GPU, per_gpu))
        actors = sum(min(g * per_gpu, c // threads) for c, g in gpu_nodes)
        if actors:
            return PoolPlan(actors, threads, 1 / per_gpu, "cuda")
        if device == "cuda":
            raise DeviceError(device, f"the Ray cluster's GPU nodes have fewer CPUs than "
                              f"--threads {threads}; lower --threads or add CPUs")
    if device == "cuda":
        raise DeviceError(device, "the Ray cluster reports no GPU resources; start its nodes "
                          "with GPUs (ray start --num-gpus N) or use --device auto or cpu")
    return PoolPlan(cpus // threads, threads, 0.0, "cpu")


class EmbedWorker:
    """One actor of the pool: the embedding model, loaded once; chunks and embeds documents."""

    def __init__(self, model_name: str, settings: dict, threads: int, with_parts: bool,
                 device: str = "cpu") -> None:
        self.emb = load_embedder(model_name, threads=threads, device=device)
        self.chunker = Chunker(self.emb.counter, ChunkingSettings.from_dict(settings))
        self.with_parts = with_parts

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        recs = [
            Record(str(i), str(s), str(t), _opt(ti), _opt(u), str(o), int(n))
            for i, s, t, ti, u, o, n in zip(*(batch[f] for f in RECORD_FIELDS), strict=True)
        ]
        chunked = self.chunker.chunk_many([(r.id, r.clean_text, r.title) for r in recs])
        flat = [c for cs in chunked for c in cs]
        vectors, parts = embed_chunks(self.emb, flat, self.with_parts, None)
        out: dict[str, list] = {"doc_id": [], "doc": [], "rows": [], "vectors": [], "parts": [],
                                "part_counts": []}
        at = 0
        for rec, chunks in zip(recs, chunked, strict=True):
            span = slice(at, at + len(chunks))
            at += len(chunks)
            out["doc_id"].append(rec.id)
            out["doc"].append(json.dumps(document_row(rec, chunks), ensure_ascii=False))
            out["rows"].append(json.dumps(chunk_rows(rec, chunks), ensure_ascii=False))
            out["vectors"].append(np.ascontiguousarray(vectors[span], np.float32).tobytes())
            doc_parts = parts[span] if parts is not None else []
            out["part_counts"].append(json.dumps([len(p) for p in doc_parts]))
            out["parts"].append(
                np.concatenate(doc_parts).astype(np.float32).tobytes() if doc_parts else b""
            )
        return {k: np.array(v, dtype=object) for k, v in out.items()}


def _check_reachable(address: str) -> None:
    """Fail at once on a ``host:port`` nothing listens on (Ray itself retries for minutes)."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto", "" (local) or a form Ray resolves itself
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as e:
        raise ClusterError(f"cannot connect to the Ray cluster at {address!r}: {e}") from e


def _gpu_usable(ray, plan: PoolPlan, device: str) -> bool:
    """Whether a task granted the actors' GPU share sees a CUDA GPU (not when the workers' torch
    is built without CUDA, or drivers are missing): for ``auto`` the answer, for ``cuda`` a
    ``DeviceError`` when not, before any work."""
    probe = ray.remote(num_cpus=plan.num_cpus, num_gpus=plan.num_gpus)(cuda_available)
    try:
        seen = ray.get(probe.remote(), timeout=GPU_PROBE_TIMEOUT_S)
    except ray.exceptions.GetTimeoutError as e:
        raise ClusterError(f"no share of a GPU ({plan.num_gpus:g}) became free on the Ray "
                           f"cluster within {GPU_PROBE_TIMEOUT_S:.0f} s") from e
    if not seen and device == "cuda":
        raise DeviceError(device, "the Ray cluster reports GPUs, but torch on its GPU workers "
                          "sees no CUDA GPU (torch.cuda.is_available() is False there); "
                          "install a CUDA build of torch on them, or use --device auto or cpu")
    return bool(seen)


def _opt(value: Any) -> str | None:
    return None if value is None else str(value)


class RayBuilderFactory:
    """Connects to (or starts) Ray for one build; called like ``pipeline._Builder`` to make the
    build's builder.  Use as a context manager: a local instance is shut down at the end."""

    def __init__(
        self,
        address: str,
        model_name: str,
        threads: int | None = None,
        window_docs: int = WINDOW_DOCS,
        docs_per_task: int = DOCS_PER_TASK,
        device: str = DEFAULT_DEVICE,
    ) -> None:
        try:
            import ray
        except ImportError as e:
            raise ClusterError(
                "--ray needs Ray: pip install 'guidelines-assistant[distributed]'"
            ) from e
        self.address, self.model_name = address, model_name
        self.threads = max(1, int(threads or 1))
        self.window_docs, self.docs_per_task = max(1, window_docs), max(1, docs_per_task)
        check_device(device)  # a bad setting fails before Ray starts
        self._started = False
        if not ray.is_initialized():
            self._connect(ray)
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True  # staged in input order, as without Ray
        ctx.enable_progress_bars = False  # the build's own bars say it
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        alive = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        try:
            self.plan = plan_pool(alive, self.threads, device)
            if self.plan.device == "cuda" and not _gpu_usable(ray, self.plan, device):
                self.plan = plan_pool(alive, self.threads, "cpu")  # auto: as without GPUs
        except IngestError:
            self.__exit__()  # a local instance started for nothing is stopped
            raise
        self.actors, self.nodes = self.plan.actors, len(alive)

    def _connect(self, ray) -> None:
        _check_reachable(self.address)
        try:
            if self.address:
                ray.init(address=self.address, logging_level="WARNING", log_to_driver=False)
            else:
                ray.init(num_cpus=cpu_count(), object_store_memory=OBJECT_STORE_BYTES,
                         include_dashboard=False, logging_level="WARNING", log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise ClusterError(
                f"cannot connect to the Ray cluster at {self.address!r}: {e}"
            ) from e
        self._started = True

    def describe(self) -> dict:
        """How the build ran (recorded in the manifest's ``last_build``; a build on GPUs adds
        ``device`` and ``gpus_per_actor``, one on CPUs records no device)."""
        out = {"kind": "ray", "address": self.address or "local", "nodes": self.nodes,
               "actors": self.actors, "threads_per_actor": self.threads}
        if self.plan.device != "cpu":
            out |= {"device": self.plan.device, "gpus_per_actor": self.plan.num_gpus}
        return out

    def __enter__(self) -> RayBuilderFactory:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._started:
            import ray

            ray.shutdown()

    def __call__(self, store, gen, get_embedder, settings, report, bars, batch_chunks):
        return RayBuilder(self, store, gen, get_embedder, settings, report, bars, batch_chunks)


class RayBuilder:
    """``pipeline._Builder``'s interface (``add``, ``flush``, ``n_pending_docs``) on Ray."""

    def __init__(self, factory: RayBuilderFactory, store: IndexStore, gen: int, get_embedder,
                 settings: ChunkingSettings, report: BuildReport, bars, batch_chunks: int) -> None:
        self.factory, self.store, self.gen, self.settings = factory, store, gen, settings
        self.report, self.batch_chunks = report, max(1, batch_chunks)
        self._get_embedder = get_embedder
        self.docs_bar, self.chunks_bar = bars
        self.pending: list[tuple[Record, bool]] = []
        self.checked = False
        self.with_parts = bool(store.manifest["embedding"].get("parts"))

    @property
    def n_pending_docs(self) -> int:
        return len(self.pending)

    def add(self, rec: Record, replacing: bool) -> None:
        self.pending.append((rec, replacing))
        if len(self.pending) >= self.factory.window_docs:
            self._run_window()

    def flush(self) -> None:
        self._run_window()

    def _dataset(self, recs: list[Record]):
        import ray

        f = self.factory
        items = [{k: getattr(r, k) for k in RECORD_FIELDS} for r in recs]
        ds = ray.data.from_items(items, override_num_blocks=math.ceil(len(recs) / f.docs_per_task))
        return ds.map_batches(
            EmbedWorker,
            fn_constructor_kwargs={"model_name": f.model_name, "settings": self.settings.to_dict(),
                                   "threads": f.threads, "with_parts": self.with_parts,
                                   "device": f.plan.device},
            batch_size=f.docs_per_task,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(
                size=min(f.actors, math.ceil(len(recs) / f.docs_per_task))
            ),
            **f.plan.remote_args(),
        )

    def _run_window(self) -> None:
        if not self.pending:
            return

        if not self.checked:  # the index's model and settings, checked once in the driver
            self._get_embedder()
            self.checked = True
        window, self.pending = self.pending, []
        sent = {rec.id: replacing for rec, replacing in window}
        t0 = time.perf_counter()
        staged: list[tuple[tuple, list[tuple], np.ndarray, list[np.ndarray] | None, bool]] = []
        seen: set[str] = set()
        dim = self.store.dim
        for batch in self._dataset([rec for rec, _ in window]).iter_batches(
            batch_size=None, batch_format="numpy"
        ):
            for doc_id, doc, rows, vecs, parts, counts in zip(
                batch["doc_id"], batch["doc"], batch["rows"], batch["vectors"], batch["parts"],
                batch["part_counts"], strict=True,
            ):
                doc_id = str(doc_id)
                if doc_id not in sent or doc_id in seen:
                    raise ClusterError(f"the cluster returned document {doc_id!r} "
                                       f"{'twice' if doc_id in seen else 'unasked'}")
                seen.add(doc_id)
                piece = _decode(doc, rows, vecs, parts, counts, dim, self.with_parts)
                staged.append((*piece, sent[doc_id]))
                self.chunks_bar.update(len(staged[-1][1]))
                if sum(len(s[1]) for s in staged) >= self.batch_chunks:
                    self._stage(staged)
                    staged = []
        self._stage(staged)
        self.report.embed_seconds += time.perf_counter() - t0
        if len(seen) != len(sent):
            lost = sorted(set(sent) - seen)
            raise ClusterError(f"the cluster lost {len(lost)} document(s), e.g. {lost[:3]}; "
                               "re-run the build to resume")

    def _stage(self, staged: list) -> None:
        if not staged:
            return
        docs = [s[0] for s in staged]
        rows = [r for s in staged for r in s[1]]
        vectors = np.concatenate([s[2] for s in staged])
        parts = [p for s in staged for p in s[3]] if self.with_parts else None
        self.store.stage(self.gen, docs, rows, vectors, parts)
        self.report.count_staged([s[4] for s in staged], len(rows))


def _decode(doc: str, rows: str, vecs: bytes, parts: bytes, counts: str, dim: int,
            with_parts: bool) -> tuple:
    """One document's row from a worker → the ``IndexStore.stage`` pieces (no pickle)."""
    chunk_list = [tuple(r) for r in json.loads(rows)]
    vectors = np.frombuffer(vecs, dtype=np.float32).reshape(len(chunk_list), dim)
    n_parts = json.loads(counts)
    part_list = None
    if with_parts:
        flat = np.frombuffer(parts, dtype=np.float32).reshape(sum(n_parts), dim)
        bounds = np.cumsum([0, *n_parts])
        part_list = [flat[a:b] for a, b in itertools.pairwise(bounds)]
    return tuple(json.loads(doc)), chunk_list, vectors, part_list
