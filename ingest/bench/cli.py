"""Benchmarks of the ingest pipeline against the standard LangChain recipe (the anchor).

``python -m ingest.bench speed``  — chunks/s of the anchor (RecursiveCharacterTextSplitter
    1000/200 + the same MiniLM through sentence-transformers ``encode`` + a flat FAISS index, what
    ``FAISS.from_documents`` does) and of ``ingest.build``, on the same documents, in one run,
    alternating, with chunk sizes reported (mean model tokens per chunk) so they can be matched;
    and of the model's forward passes alone on the anchor's chunks ("forward_only"), the ceiling
    of any pipeline that embeds with this forward pass.
``python -m ingest.bench anchor-eval --qa FILE`` — the anchor's retrieval quality with our harness.
``python -m ingest.bench latency --index DIR --qa FILE [--compare STEPS]`` — search latency of the
    default and of other re-ranking steps (by default the best-sentence re-ordering alone, and
    none), alternating question by question in one process.
``python -m ingest.bench variants --index DIR --qa FILE --half even --variant LABEL=SETTINGS ...``
    — retrieval metrics of several search settings, the questions embedded once.
``python -m ingest.bench ann --index DIR --qa FILE`` — IVF recall against exact search on the
    embeddings of real questions, per nprobe.

The anchor needs ``langchain-text-splitters``: ``pip install -e .[bench]`` (the benchmarks' extra;
never a dependency of the project).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .. import SAMPLE_CORPUS
from ..chunking import ChunkingSettings
from ..embedding import load_embedder
from .anchor import docs_spread, run_anchor, run_forward, run_ours


def cmd_speed(args) -> None:
    emb = load_embedder(args.embedding_model, threads=args.threads)
    docs = docs_spread(args.input, args.docs)
    settings = ChunkingSettings(max_tokens=args.max_tokens)
    emb.model.encode(["warm up"] * 8)
    rows = []
    whos = ("anchor", "ours", "forward")
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            for who in whos if rep % 2 == 0 else whos[::-1]:
                if who == "anchor":
                    chunks, _, sec, toks = run_anchor(docs, emb)
                    n = len(chunks)
                elif who == "forward":
                    n, sec, toks = run_forward(docs, emb)
                else:
                    n, sec, toks = run_ours(docs, emb, settings, Path(tmp))
                rows.append(
                    {
                        "run": who,
                        "repeat": rep,
                        "chunks": n,
                        "seconds": round(sec, 2),
                        "chunks_per_s": round(n / sec, 2),
                        "tokens_per_s": round(sum(toks) / sec, 1),
                        "mean_tokens_per_chunk": round(statistics.mean(toks), 1),
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
    best = {
        w: max((r for r in rows if r["run"] == w), key=lambda r: r["chunks_per_s"])
        for w in whos
    }
    ratio = best["ours"]["chunks_per_s"] / best["anchor"]["chunks_per_s"]
    tok_ratio = best["ours"]["tokens_per_s"] / best["anchor"]["tokens_per_s"]
    summary = {
        "documents": len(docs),
        "max_tokens": args.max_tokens,
        "threads": args.threads,
        "anchor": best["anchor"],
        "ours": best["ours"],
        "chunks_per_s_ratio": round(ratio, 2),
        "tokens_per_s_ratio": round(tok_ratio, 2),
        # the most any pipeline with this forward pass could reach at the anchor's chunk sizes
        "forward_only": best["forward"],
        "forward_only_ratio": round(
            best["forward"]["chunks_per_s"] / best["anchor"]["chunks_per_s"], 2
        ),
    }
    print(json.dumps(summary, indent=2))


def cmd_anchor_eval(args) -> None:
    import faiss

    from ..evaluate import format_table, load_qa, run_queries, score_rankings

    emb = load_embedder(args.embedding_model, threads=args.threads)
    docs = docs_spread(args.input, None)
    chunks, vecs, sec, _ = run_anchor(docs, emb)
    print(f"anchor: {len(chunks)} chunks embedded in {sec:.1f} s", file=sys.stderr)
    index = faiss.IndexFlatL2(vecs.shape[1])
    index.add(np.asarray(vecs, dtype=np.float32))

    def search(question: str, k: int):
        q = emb.model.encode([question], convert_to_numpy=True)
        _, ids = index.search(np.asarray(q, dtype=np.float32), k)
        return [chunks[i] for i in ids[0] if i >= 0]

    qas = load_qa(args.qa)
    rankings, times = run_queries(search, qas, max(args.k))
    metrics = score_rankings(qas, rankings, args.k)
    metrics.update(
        p50_ms=round(float(np.percentile(times, 50)), 2),
        p95_ms=round(float(np.percentile(times, 95)), 2),
    )
    print(format_table(metrics, args.k, label="anchor (LangChain recipe)"))
    if args.json:
        Path(args.json).write_text(json.dumps(metrics, indent=2) + "\n")


def cmd_latency(args) -> None:
    from ..evaluate import load_qa
    from ..search import HybridSettings, open_index

    default = open_index(args.index, threads=args.threads)
    runs = {"default " + " ".join(default.hybrid.rerank): (default, [])}
    compare = args.compare if args.compare is not None else ["parts:depth=5", ""]  # the old ones
    for spec in compare:  # other re-ranking steps, space-separated ("" for none)
        steps = tuple(s for s in spec.split() if s)
        other = open_index(
            args.index, embedder=default.embedder, hybrid=HybridSettings(rerank=steps)
        )
        runs[" ".join(steps) or "no re-ranking"] = (other, [])
    qas = load_qa(args.qa)
    vectors = [None] * len(qas)
    if args.no_embedding:  # time the search after the query's embedding (fusion + re-ranking)
        vectors = list(default.embedder.embed([qa.question for qa in qas]))
    for qa, v in list(zip(qas, vectors, strict=True))[:3]:  # warm-up
        for idx, _ in runs.values():
            idx.search(qa.question, k=10, vector=v)
    for i, (qa, v) in enumerate(zip(qas, vectors, strict=True)):
        order = list(runs.values()) if i % 2 == 0 else list(runs.values())[::-1]
        for idx, times in order:
            t0 = time.perf_counter()
            idx.search(qa.question, k=10, vector=v)
            times.append((time.perf_counter() - t0) * 1000)
    out = {
        name: {
            "p50_ms": round(float(np.percentile(t, 50)), 2),
            "p95_ms": round(float(np.percentile(t, 95)), 2),
        }
        for name, (_, t) in runs.items()
    }
    print(json.dumps({"queries": len(qas), **out}, indent=2))


def cmd_variants(args) -> None:
    """Retrieval metrics of several search settings on the same questions, in one process: the
    questions are embedded once (latency is not measured here; see ``latency``)."""
    from dataclasses import replace

    from ..evaluate import format_comparison, half, load_qa, score_rankings
    from ..search import HybridSettings, open_index

    qas = load_qa(args.qa)
    if args.half:
        qas = half(qas, args.half)
    base = open_index(args.index, threads=args.threads)
    vectors = base.embedder.embed([qa.question for qa in qas])  # (n, dim)
    runs = {}
    for variant in args.variant:
        label, _, spec = variant.partition("=")
        hybrid = HybridSettings()
        for item in spec.split():
            key, _, value = item.partition(":")
            if key == "rerank":
                steps = tuple(s for s in value.split("+") if s)
                hybrid = replace(hybrid, rerank=steps)
            elif key in ("context_weight", "lexical_weight", "dense_weight"):
                hybrid = replace(hybrid, **{key: float(value)})
            elif key == "abbreviations":
                hybrid = replace(hybrid, abbreviations=value == "1")
            else:
                raise ValueError(f"variant {variant!r}: unknown setting {key!r}")
        idx = open_index(args.index, embedder=base.embedder, hybrid=hybrid)
        rankings = [
            [(h.metadata.get("doc_id"), h.text) for h in idx.search(qa.question, k=10, vector=v)]
            for qa, v in zip(qas, vectors, strict=True)
        ]
        runs[label] = score_rankings(qas, rankings, (1, 3, 5, 10))
        print(format_comparison({label: runs[label]}, (1, 3, 5, 10)).splitlines()[-1], flush=True)
    print(format_comparison(runs, (1, 3, 5, 10)))
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=2) + "\n")


def cmd_ann(args) -> None:
    from .. import ann as ann_mod
    from ..evaluate import load_qa
    from ..search import open_index

    idx = open_index(args.index, threads=args.threads)
    view = idx.store.view()
    vecs = view.vectors
    queries = idx.embedder.embed([q.question for q in load_qa(args.qa)])
    nlist = args.nlist or ann_mod.default_nlist(len(vecs))
    centroids = ann_mod.train(vecs, nlist)
    lists = ann_mod.assign(vecs, centroids)
    exact = vecs @ queries.T  # (n, n_queries)
    k = min(10, len(vecs))
    want = np.argsort(-exact, axis=0)[:k].T  # (n_queries, k)
    import faiss

    quantizer = faiss.IndexFlatIP(vecs.shape[1])
    quantizer.add(centroids)
    ivf = faiss.IndexIVFFlat(quantizer, vecs.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)
    ivf.is_trained = True
    ids = np.arange(len(vecs), dtype=np.int64)
    ivf.add_core(len(vecs), faiss.swig_ptr(vecs), faiss.swig_ptr(ids), faiss.swig_ptr(lists))
    out = {"chunks": len(vecs), "nlist": nlist, "queries": len(queries), "recall@10": {}}
    for nprobe in args.nprobe:
        ivf.nprobe = nprobe
        _, got = ivf.search(queries, k)
        rec = float(np.mean([len(set(w) & set(g)) / k for w, g in zip(want, got, strict=True)]))
        out["recall@10"][nprobe] = round(rec, 4)
    print(json.dumps(out, indent=2))


def _speed_args(speed: argparse.ArgumentParser) -> None:
    speed.add_argument("--docs", type=int, default=40, help="documents (an even spread)")
    speed.add_argument(
        "--max-tokens",
        type=int,
        default=208,
        help="our chunk bound; 208 matches the anchor's mean tokens per chunk",
    )
    speed.add_argument("--repeats", type=int, default=2)


def _anchor_eval_args(ae: argparse.ArgumentParser) -> None:
    ae.add_argument("--qa", required=True)
    ae.add_argument("--k", type=lambda s: [int(x) for x in s.split(",")], default=[1, 3, 5, 10])
    ae.add_argument("--json", default=None)


def _ann_args(an: argparse.ArgumentParser) -> None:
    an.add_argument("--index", required=True)
    an.add_argument("--qa", required=True)
    an.add_argument("--nlist", type=int, default=None)
    an.add_argument("--nprobe", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4, 16])


def _latency_args(lat: argparse.ArgumentParser) -> None:
    lat.add_argument("--index", required=True)
    lat.add_argument("--qa", required=True)
    lat.add_argument(
        "--compare",
        action="append",
        default=None,
        metavar="STEPS",
        help="re-ranking steps to time against the default, space-separated "
        "(repeatable; '' is none; default: 'parts:depth=5' and '', the earlier defaults)",
    )
    lat.add_argument(
        "--no-embedding",
        action="store_true",
        help="embed the questions beforehand and time the rest of the search alone",
    )


def _variants_args(var: argparse.ArgumentParser) -> None:
    var.add_argument("--threads", type=int, default=2)
    var.add_argument("--index", required=True)
    var.add_argument("--qa", required=True)
    var.add_argument("--half", choices=["even", "odd"], default=None)
    var.add_argument("--json", default=None)
    var.add_argument(
        "--variant",
        action="append",
        required=True,
        help="LABEL=SETTINGS, settings space-separated: rerank:STEP+STEP (empty: none), "
        "context_weight:F, lexical_weight:F, dense_weight:F, abbreviations:0|1",
    )


# command → (its arguments beyond the shared ones, what it runs)
_COMMANDS = {
    "speed": (_speed_args, cmd_speed),
    "anchor-eval": (_anchor_eval_args, cmd_anchor_eval),
    "ann": (_ann_args, cmd_ann),
    "latency": (_latency_args, cmd_latency),
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ingest.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True)
    for name, (add_args, _) in _COMMANDS.items():
        s = sub.add_parser(name)
        s.add_argument("--threads", type=int, default=2)
        s.add_argument("--embedding-model", default=None)
        if name not in ("ann", "latency"):
            s.add_argument("--input", default=str(SAMPLE_CORPUS))
        add_args(s)
    var = sub.add_parser("variants", help="retrieval metrics of several settings, one process")
    _variants_args(var)
    return p


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    run = cmd_variants if args.command == "variants" else _COMMANDS[args.command][1]
    run(args)

