"""``python -m ingest`` (console script ``guidelines-ingest``): build, stats, query, eval."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from dataclasses import asdict, replace
from pathlib import Path

from .chunking import ChunkingSettings
from .embedding import DEFAULT_DEVICE, DEVICES
from .errors import IngestError, StrictModeFailure
from .pipeline import BATCH_CHUNKS
from .search import MODES

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


def _csv(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def _ks(text: str) -> list[int]:
    try:
        ks = sorted({int(p) for p in _csv(text)})
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--k wants integers like 1,3,5,10, not {text!r}"
        ) from None
    if not ks or ks[0] <= 0:
        raise argparse.ArgumentTypeError("--k values must be positive")
    return ks


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ingest", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build or update an index from a corpus (incremental)")
    _build_input_args(b)
    _chunking_args(b)
    _build_run_args(b)
    _stats_args(sub.add_parser("stats", help="documents, chunks per source, size, model"))
    _query_args(sub.add_parser("query", help="the best chunks for a question"))
    _eval_args(sub.add_parser("eval", help="retrieval quality and latency on a QA file"))
    return p


def _build_input_args(b: argparse.ArgumentParser) -> None:
    b.add_argument(
        "--input",
        required=True,
        help="JSONL/.jsonl.gz/Parquet file, folder, or "
        "Hugging Face dataset (epfl-llm/guidelines, hf:NAME)",
    )
    b.add_argument("--index", required=True, type=Path, help="index folder")
    b.add_argument(
        "--embedding-model",
        default=None,
        help="sentence-transformers model name or path (default: packaged MiniLM)",
    )
    b.add_argument("--sources", type=_csv, default=None, help="only these sources, e.g. nice,who")
    b.add_argument("--limit", type=int, default=None, help="stop after N documents")
    b.add_argument(
        "--strict", action="store_true", help="fail (changing nothing) on any bad record"
    )
    b.add_argument("--prune", action="store_true", help="remove documents gone from the input")


def _chunking_args(b: argparse.ArgumentParser) -> None:
    """The chunking settings: None unless given (a build keeps an existing index's own)."""
    chunking = "(default: an existing index's own; for a new one %(default_new)s)"
    b.add_argument(
        "--max-tokens",
        type=int,
        default=None,
        help="chunk size in model tokens, special tokens included "
        + chunking % {"default_new": ChunkingSettings.max_tokens},
    )
    b.add_argument(
        "--overlap-tokens",
        type=int,
        default=None,
        help="tokens of whole sentences carried into the next chunk "
        + chunking % {"default_new": ChunkingSettings.overlap_tokens},
    )
    b.add_argument(
        "--no-context",
        dest="context",
        action="store_const",
        const=False,
        default=None,
        help="do not prefix title and headings to the embedded text",
    )
    b.add_argument(
        "--min-section-tokens",
        type=int,
        default=None,
        help="chunk consecutive heading sections smaller than this together, 0: off "
        + chunking % {"default_new": ChunkingSettings.min_section_tokens},
    )
    b.add_argument(
        "--subheadings",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="add the last stand-alone title line before a chunk to its context line "
        + chunking % {"default_new": ChunkingSettings.subheadings},
    )


def _build_run_args(b: argparse.ArgumentParser) -> None:
    b.add_argument(
        "--ann",
        choices=["flat", "ivf"],
        default="flat",
        help="flat: exact search (default); ivf: approximate, for large corpora",
    )
    b.add_argument("--nlist", type=int, default=None, help="IVF lists (default ~4*sqrt(chunks))")
    b.add_argument("--nprobe", type=int, default=16, help="IVF lists searched per query")
    b.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: all CPUs; with --ray: per worker, default 1)",
    )
    b.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="chunk and embed on a Ray cluster (the 'distributed' extra): its address "
        "(auto, host:6379, ray://host:10001), or none to start Ray on this machine",
    )
    b.add_argument(
        "--device",
        choices=DEVICES,
        default=DEFAULT_DEVICE,
        help="where chunks are embedded: auto (default) a CUDA GPU when there is one, else the "
        "CPU; with --ray the cluster's GPUs, a share of one per worker; cuda fails at once "
        "without a GPU. The index is the same on either",
    )
    b.add_argument(
        "--batch-chunks",
        type=int,
        default=BATCH_CHUNKS,
        help="chunks embedded and committed together (what a crash can lose)",
    )
    b.add_argument("--quiet", action="store_true", help="no progress bars")
    b.add_argument("--json", action="store_true", help="print the build report as JSON")


def _stats_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("--index", required=True, type=Path)
    s.add_argument("--json", action="store_true")


def _query_args(q: argparse.ArgumentParser) -> None:
    q.add_argument("--index", required=True, type=Path)
    q.add_argument("text")
    q.add_argument("-k", type=int, default=5)
    q.add_argument("--mode", choices=MODES, default="hybrid")
    q.add_argument("--sources", type=_csv, default=None)
    q.add_argument("--json", action="store_true")
    _rerank_args(q)


def _eval_args(e: argparse.ArgumentParser) -> None:
    e.add_argument("--index", required=True, type=Path)
    e.add_argument("--qa", required=True, type=Path, help="JSONL with question, answer, doc_id")
    e.add_argument("--k", type=_ks, default=[1, 3, 5, 10])
    e.add_argument("--mode", choices=MODES, default="hybrid")
    _rerank_args(e)
    e.add_argument(
        "--context-weight",
        type=float,
        default=None,
        help="BM25 weight of the context line (title › headings) against the text's 1",
    )
    e.add_argument(
        "--abbreviations",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="BM25 also searches the other form of medical abbreviations (COPD, ...)",
    )
    e.add_argument(
        "--half",
        choices=["even", "odd"],
        default=None,
        help="only the questions at even (0, 2, 4, ...) or odd (1, 3, ...) positions of the "
        "file, counted from 0 (see docs/retrieval.md: choices on even, odd reported once)",
    )
    e.add_argument("--json", type=Path, default=None, help="write the metrics here")
    e.add_argument("--threads", type=int, default=None)


def _rerank_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rerank",
        action="append",
        default=None,
        metavar="STEP",
        help="a re-ranking step after the fusion, e.g. parts:depth=5 (repeat for several; "
        "default: HybridSettings.rerank; see ingest/rerank)",
    )
    parser.add_argument(
        "--no-rerank",
        "--no-parts",
        action="store_true",
        help="hybrid without re-ranking steps (to compare)",
    )


def _hybrid(args):
    """HybridSettings with the re-ranking flags (``--rerank``, ``--no-rerank``) applied."""
    from .search import HybridSettings

    hybrid = HybridSettings()
    if args.no_rerank:
        return replace(hybrid, rerank=())
    if args.rerank is not None:
        return replace(hybrid, rerank=tuple(args.rerank))
    return hybrid


def _chunking(args) -> ChunkingSettings | None:
    """The chunking flags given, over the index's own settings (or the defaults for a new
    index); None when no flag is given (the build then keeps an existing index's settings)."""
    from .pipeline import recorded_chunking

    names = ("max_tokens", "overlap_tokens", "context", "min_section_tokens", "subheadings")
    given = {n: getattr(args, n) for n in names if getattr(args, n) is not None}
    if not given:
        return None
    return replace(recorded_chunking(args.index) or ChunkingSettings(), **given)


def _build(args) -> int:
    from .pipeline import build

    ann = None
    if args.ann == "ivf":
        ann = {"type": "ivf", "nlist": args.nlist, "nprobe": args.nprobe}
    settings = _chunking(args)
    try:
        # stdout holds only the report: what the build's libraries print (Ray's raylet messages
        # about retried tasks) goes to stderr
        with contextlib.redirect_stdout(sys.stderr):
            report = build(
                args.input,
                args.index,
                embedding_model=args.embedding_model,
                sources=args.sources,
                limit=args.limit,
                strict=args.strict,
                prune=args.prune,
                settings=settings,
                threads=args.threads,
                progress=not args.quiet,
                ann=ann,
                batch_chunks=args.batch_chunks,
                ray=args.ray,
                device=args.device,
            )
    except StrictModeFailure as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(report.summary(), file=sys.stderr)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    return 0


def _stats(args) -> int:
    from .search import open_index

    st = open_index(args.index).stats()
    if args.json:
        print(json.dumps(st, indent=2))
        return 0
    print(
        f"index      {st['path']}  (generation {st['generation']}, {st['size_bytes'] / 1e6:.1f} MB)"
    )
    print(f"model      {st['embedding_model']}  (dim {st['dim']})")
    print(f"documents  {st['documents']}    chunks {st['chunks']}")
    for src, c in st["per_source"].items():
        print(f"  {src:<12} {c['documents']:>7} documents {c['chunks']:>9} chunks")
    if st.get("chunking"):
        print(f"chunking   {st['chunking']}")
    print(f"search     {st['ann']}")
    return 0


def _query(args) -> int:
    from .index import check_model
    from .search import open_index

    idx = open_index(args.index, hybrid=_hybrid(args))
    check_model(idx)
    hits = idx.search(args.text, k=args.k, sources=args.sources, mode=args.mode)
    if args.json:
        out = [
            {"chunk_id": h.chunk_id, "score": h.score, "text": h.text, **h.metadata} for h in hits
        ]
        print(json.dumps(out, indent=2, ensure_ascii=False))
        return 0
    for rank, h in enumerate(hits, start=1):
        md = h.metadata
        print(
            f"{rank}. [{h.score:.4f}] {md.get('title') or md.get('doc_id')}  ({md.get('source')})"
        )
        if md.get("heading"):
            print(f"   § {md['heading']}")
        if md.get("url"):
            print(f"   {md['url']}")
        text = " ".join(h.text.split())
        print(f"   {text[:400]}{'…' if len(text) > 400 else ''}\n")
    return 0


def _eval(args) -> int:
    from .evaluate import evaluate, format_table, half, load_qa
    from .search import open_index

    hybrid = _hybrid(args)
    if args.context_weight is not None:
        hybrid = replace(hybrid, context_weight=args.context_weight)
    if args.abbreviations is not None:
        hybrid = replace(hybrid, abbreviations=args.abbreviations)
    idx = open_index(args.index, hybrid=hybrid, threads=args.threads)
    qas = load_qa(args.qa)
    if args.half is not None:
        qas = half(qas, args.half)
    metrics = evaluate(idx, qas, ks=args.k, mode=args.mode)
    metrics["half"] = args.half or "all"
    metrics["hybrid"] = asdict(idx.hybrid)
    print(format_table(metrics, args.k))
    if args.json:
        args.json.write_text(json.dumps(metrics, indent=2) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    commands = {"build": _build, "stats": _stats, "query": _query, "eval": _eval}
    try:
        return commands[args.command](args)
    except KeyboardInterrupt:
        print(
            "interrupted: committed batches are kept; re-run the same build to resume",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    except (IngestError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
