"""Coverage-guided fuzzing of the readers of untrusted input (atheris / libFuzzer).

    python scripts/fuzz.py --target all --runs 100000        # the long run (README figures)
    python scripts/fuzz.py --target gguf --runs 2000 --json  # a short run (the CI test)

Targets:

* ``gguf``: ``engine.gguf`` on one file, a byte split in two parts or a two-shard gguf-split
  set (the first input byte chooses), then the vocabulary, the tokenizer built from it and the
  Llama config read from the fuzzed metadata, and every tensor's data view;
* ``tokenizer``: the tokenizers of six real vocabularies (SmolLM2's byte-level BPE, GPT-2,
  Llama-3 BPE, Qwen2, Llama-2 SPM, Phi-3 SPM) on arbitrary bytes and arbitrary Unicode, with and
  without special-token parsing, and on arbitrary id lists (decode and the stream decoder);
* ``corpus``: ``ingest.corpus.read_corpus`` on a ``.jsonl``, ``.jsonl.gz`` (raw, or the input
  gzip-compressed) or ``.parquet`` file made of the input.

Seeds are the real files: the default GGUF's header and the tiny reference models' headers and
the llama.cpp vocab-only files (shrunk to their first tokens and tensors, and cut at 4 KB), the
sample corpus (``../shared/data/guidelines-sample.jsonl``) and a Parquet file written from it.

Each input is checked for: no exception but the project's typed errors (``EngineError``,
``IngestError``); at most ``--max-seconds`` (1 s) of CPU time (a slower input is timed again
once, to tell the shared machine's noise from a real finding; wall time is reported too); at
most ``--max-alloc-mb`` (64 MB) of Python/numpy allocation at peak (``tracemalloc``, per
input; with ``--alloc-every N`` on every N-th input only, the others running under a soft
address-space limit (``RLIMIT_AS``) of the same 64 MB past the worker's size, an input past it
being run again and measured), and a hard address-space limit on the worker against native
allocations; the byte-level BPE property (the bytes of the tokens of any valid UTF-8 text are
that text's bytes, less those bytes the vocabulary has no token for, as in llama.cpp; and
``decode`` gives the text back where the vocabulary does not clean spaces); ``StreamDecoder``
equal to ``decode``.
A failing input is written to ``--workdir``/crash-* and the run exits non-zero.

Each target runs in its own worker process (libFuzzer runs once per process); the parent
prints a table (or ``--json``) of inputs run, outcomes, slowest input and largest allocation.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import resource
import struct
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GUIDELINES_SHARED", ROOT.parent / "shared"))
DEFAULT_GGUF = Path.home() / ".cache/guidelines-assistant/models/SmolLM2-135M-Instruct.Q4_1.gguf"
TARGETS = ("gguf", "tokenizer", "corpus")
MAX_LEN = {"gguf": 65536, "tokenizer": 4096, "corpus": 16384}
SEED_CUT = 4096  # a raw seed: the first bytes of a real file (a truncated header)
SHRINK_TOKENS = 300  # a shrunk seed keeps this many vocabulary entries ...
SHRINK_TENSORS = 6  # ... and this many tensor infos
ADDRESS_SPACE_HEADROOM = 2 << 30  # RLIMIT_AS = the worker's size after start-up + this
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


class FuzzFinding(AssertionError):
    """An input that broke a property (too slow, too much memory, a wrong round trip)."""


# --------------------------------------------------------------------------------------
# seeds
# --------------------------------------------------------------------------------------


def _gguf_files() -> list[Path]:
    files = [DEFAULT_GGUF, *sorted((SHARED / "models").glob("tiny-llama-spm.*.gguf")),
             *sorted((SHARED / "tokenizer-tests").glob("*.gguf"))]
    return [f for f in files if f.is_file()]


def _vocab_files() -> list[Path]:
    names = ("ggml-vocab-llama-spm", "ggml-vocab-phi-3", "ggml-vocab-gpt-2",
             "ggml-vocab-llama-bpe", "ggml-vocab-qwen2")
    files = [DEFAULT_GGUF, *(SHARED / "tokenizer-tests" / f"{n}.gguf" for n in names)]
    return [f for f in files if f.is_file()]


def _gguf_value(vtype: int, value: Any) -> bytes:
    """GGUF encoding of a value as the reader returned it (the type tag is the caller's)."""
    from engine.constants import GGUF_SCALAR_FORMAT, GGUFValueType

    if vtype == GGUFValueType.STRING:
        b = value.encode("utf-8", "surrogateescape")
        return struct.pack("<Q", len(b)) + b
    return struct.pack("<" + GGUF_SCALAR_FORMAT[GGUFValueType(vtype)].lstrip("<"), value)


def shrink_gguf(path: Path) -> bytes:
    """The header of a real GGUF with its arrays cut to ``SHRINK_TOKENS`` entries and its first
    ``SHRINK_TENSORS`` tensors shrunk to one block row each (zeros): every key, type and
    tensor type of the real file, small enough to fuzz quickly."""
    import numpy as np

    from engine.constants import GGUFValueType as V
    from engine.gguf import GGUFFile, block_layout

    with GGUFFile.open(path) as g:
        kv = []
        for key, value in g.metadata.items():
            tag = g.field_types[key]
            body = struct.pack("<I", tag[0])
            if tag[0] == V.ARRAY:
                items = value[:SHRINK_TOKENS]
                body += struct.pack("<IQ", tag[1], len(items))
                if tag[1] == V.STRING:
                    body += b"".join(_gguf_value(V.STRING, s) for s in items)
                else:
                    body += np.asarray(items).astype(np.asarray(items).dtype.newbyteorder("<"))\
                        .tobytes()
            else:
                body += _gguf_value(tag[0], value)
            kv.append(_gguf_value(V.STRING, key) + body)
        infos, offset = [], 0
        for t in list(g.tensors.values())[:SHRINK_TENSORS]:
            layout = block_layout(t.ggml_type)
            shape = (layout.block_size, *([1] * (len(t.shape) - 1)))
            name = _gguf_value(V.STRING, t.name)
            infos.append(name + struct.pack("<I", len(shape))
                         + b"".join(struct.pack("<Q", d) for d in shape)
                         + struct.pack("<IQ", t.ggml_type, offset))
            offset += -(-layout.type_size // g.alignment) * g.alignment
        head = struct.pack("<4sIQQ", b"GGUF", 3, len(infos), len(kv)) + b"".join(kv + infos)
        pad = -len(head) % g.alignment
        return head + b"\0" * (pad + offset)


def _sample_rows(n: int = 6, text_chars: int = 1500) -> list[dict[str, Any]]:
    path = SHARED / "data" / "guidelines-sample.jsonl"
    rows = []
    if path.is_file():
        with open(path, encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                row["clean_text"] = row["clean_text"][:text_chars]
                row.pop("raw_text", None)
                rows.append(row)
                if len(rows) >= n:
                    break
    return rows or [{"id": "a", "source": "who", "title": "T", "clean_text": "Text.", "url": ""}]


def write_seeds(target: str, folder: Path) -> int:
    """Write the seed inputs of ``target`` into ``folder``; returns how many."""
    folder.mkdir(parents=True, exist_ok=True)
    seeds: list[bytes] = []
    if target == "gguf":
        for f in _gguf_files():
            with open(f, "rb") as h:
                raw = h.read(SEED_CUT)
            small = shrink_gguf(f)
            seeds += [b"\0" + raw, b"\0" + small]
            cut = len(small) // 2
            seeds += [b"\1" + struct.pack("<I", cut) + small,  # a byte split
                      b"\2" + struct.pack("<I", cut) + small + small]  # two "shards"
    elif target == "tokenizer":
        texts = ["Hello world", " Take 2 tablets (500 mg) every 6 h.\n\n", "<|im_start|>user\n"
                 "Hi<|im_end|>", "naïve café — 日本語 🤖 \u200b\t\r\n", "<s> </s> [INST]"]
        texts += [r["clean_text"][:600] for r in _sample_rows(4)]
        for k, t in enumerate(texts):
            seeds += [bytes([k % 6]) + t.encode(), bytes([0x10 | k % 6]) + t.encode(),
                      bytes([0x30 | k % 6]) + t.encode()]
        seeds += [bytes([0x20 | k]) + bytes(range(0, 200, 3)) for k in range(6)]
    elif target == "corpus":
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows = _sample_rows()
        jsonl = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
        seeds += [b"\0" + jsonl, b"\1" + jsonl, b"\2" + gzip.compress(jsonl, mtime=0)]
        seeds += [b"\0" + b'{"id": "x", "source": 1}\n[1]\n\xff\n{bad json\n']
        buf = io.BytesIO()
        cols = ("id", "source", "title", "clean_text", "url")
        table = pa.table({c: [str(r.get(c) or "") for r in rows[:3]] for c in cols})
        pq.write_table(table, buf)
        seeds.append(b"\3" + buf.getvalue())
    for i, s in enumerate(seeds):
        (folder / f"seed-{i:03d}").write_bytes(s[: MAX_LEN[target]])
    return len(seeds)


# --------------------------------------------------------------------------------------
# the targets (each returns the name of its outcome: "ok" or the typed error's class)
# --------------------------------------------------------------------------------------


class GGUFTarget:
    typed: tuple[type[BaseException], ...]

    def __init__(self, scratch: Path) -> None:
        from engine.errors import EngineError

        self.typed = (EngineError,)
        self.scratch = scratch

    def __call__(self, data: bytes) -> str:
        from engine.config import ModelConfig
        from engine.gguf import GGUFFile
        from engine.tokenizer import Tokenizer

        mode = data[0] % 3 if data else 0
        for old in self.scratch.iterdir():
            old.unlink()
        if mode == 0 or len(data) < 5:
            path = self.scratch / "m.gguf"
            path.write_bytes(data[1:])
        else:
            (cut,) = struct.unpack("<I", data[1:5])
            body = data[5:]
            cut %= len(body) + 1
            if mode == 1:
                path = self.scratch / "m.gguf-split-a"
                path.write_bytes(body[:cut])
                (self.scratch / "m.gguf-split-b").write_bytes(body[cut:])
            else:
                path = self.scratch / "m-00001-of-00002.gguf"
                path.write_bytes(body[:cut])
                (self.scratch / "m-00002-of-00002.gguf").write_bytes(body[cut:])
        with GGUFFile.open(path) as g:
            for t in g.tensors.values():
                view = t.data
                assert view.shape == (t.n_rows, t.row_bytes), t
            if g.architecture == "llama":
                ModelConfig.from_gguf(g)
            tok = Tokenizer.from_gguf(g)
            ids = tok.encode("Hello <|im_start|> wörld 12", special=True)
            assert all(0 <= i < tok.n_vocab for i in ids)
            tok.decode(ids, special=True)
        return "ok"


class TokenizerTarget:
    def __init__(self, scratch: Path) -> None:
        from engine.errors import EngineError
        from engine.tokenizer import Tokenizer

        self.typed = (EngineError,)
        self.tokenizers = [Tokenizer.from_file(f) for f in _vocab_files()]
        self.roundtrips = Counter()

    def __call__(self, data: bytes) -> str:
        if not data:
            return "ok"
        tok = self.tokenizers[data[0] % len(self.tokenizers)]
        mode = (data[0] >> 4) % 4
        body = data[1:]
        if mode == 2:  # arbitrary ids: decode and the stream decoder must agree
            n = len(body) // 2
            ids = [v % (tok.n_vocab + 8) for v in struct.unpack(f"<{n}H", body[: 2 * n])]
            special = bool(data[0] & 0x80)
            text = tok.decode(ids, special=special)
            stream = tok.stream_decoder(special=special)
            streamed = "".join(stream.feed(i) for i in ids) + stream.flush()
            if streamed != text:
                raise FuzzFinding(f"stream decode {streamed!r} != decode {text!r} for {ids}")
            return "ok"
        if mode == 1:  # arbitrary Unicode (any code point but surrogates)
            import atheris

            text = atheris.FuzzedDataProvider(body).ConsumeUnicodeNoSurrogates(len(body))
        else:
            text = body.decode("utf-8", "surrogateescape")  # lone surrogates from bad bytes
        special = mode == 3
        ids = tok.encode(text, add_bos=bool(data[0] & 0x80), special=special)
        if not all(isinstance(i, int) and 0 <= i < tok.n_vocab for i in ids):
            raise FuzzFinding(f"token id outside the vocabulary: {ids}")
        decoded = tok.decode(ids, special=special)
        valid = not any("\ud800" <= c <= "\udfff" for c in text)
        if tok.kind == "bpe" and not special and valid:
            self._check_bpe_roundtrip(tok, text, ids, decoded)
        return "ok"

    def _check_bpe_roundtrip(self, tok: Any, text: str, ids: list[int], decoded: str) -> None:
        """The tokens' bytes are the text's bytes. A vocabulary without a token for some byte
        (SmolLM2 has none for 21 of the 256) drops that byte, as llama.cpp does: the rest
        must still come back in order."""
        uncovered = self._uncovered(tok)
        raw = text.encode("utf-8")
        want = bytes(b for b in raw if b not in uncovered) if uncovered else raw
        body = [i for i in ids if not (tok.add_bos and i == tok.bos_id)]
        pieces = b"".join(tok.token_to_bytes(i) for i in body)
        if pieces != want:
            raise FuzzFinding(f"byte-level BPE lost bytes: {text!r} -> {ids} -> {pieces!r}")
        if want != raw:
            self.roundtrips["bpe_bytes_without_token"] += 1
        elif not tok.vocab.clean_spaces and decoded != text:
            raise FuzzFinding(f"BPE round trip failed: {text!r} -> {decoded!r}")
        else:
            self.roundtrips["bpe_roundtrip"] += 1

    def _uncovered(self, tok: Any) -> frozenset[int]:
        """Bytes whose byte-level character is not a token of ``tok``'s vocabulary."""
        cache = self.__dict__.setdefault("_uncovered_cache", {})
        if id(tok) not in cache:
            from engine.tokenizer.bpe import BYTE_TO_CHAR

            t2i = tok.vocab.token_to_id
            cache[id(tok)] = frozenset(b for b, c in BYTE_TO_CHAR.items() if c not in t2i)
        return cache[id(tok)]


class CorpusTarget:
    SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.gz", ".parquet")

    def __init__(self, scratch: Path) -> None:
        from ingest.errors import IngestError

        self.typed = (IngestError,)
        self.scratch = scratch

    def __call__(self, data: bytes) -> str:
        from ingest.corpus import Record, Rejection, read_corpus

        mode = data[0] % 4 if data else 0
        body = data[1:]
        if mode == 1:
            body = gzip.compress(body, mtime=0)
        path = self.scratch / f"c{self.SUFFIXES[mode]}"
        path.write_bytes(body)
        for item in read_corpus(path):
            if isinstance(item, Record):
                for v in (item.id, item.source, item.clean_text):
                    v.encode("utf-8")  # a Record holds valid text
                    assert v.strip()
            elif not isinstance(item, Rejection):
                raise FuzzFinding(f"read_corpus yielded {type(item).__name__}")
        return "ok"


TARGET_CLASSES = {"gguf": GGUFTarget, "tokenizer": TokenizerTarget, "corpus": CorpusTarget}


# --------------------------------------------------------------------------------------
# the worker: one target under libFuzzer, checking time and allocation per input
# --------------------------------------------------------------------------------------


def _vm_size() -> int:
    """The process's address space in bytes (``/proc/self/statm``'s first field, in pages)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split(maxsplit=1)[0]) * PAGE_SIZE


def run_input(target: Any, data: bytes, measure: bool, bound: int,
              limit: int) -> tuple[str, float, float, int]:
    """One input: its outcome, CPU and wall time, and its peak allocation in bytes, measured
    with ``tracemalloc`` if ``measure``; else -1, and the input runs under a soft address-space
    limit of ``bound`` bytes past the process's present size (outcome ``"MemoryError"`` past
    it). ``limit`` is the worker's own address-space limit, restored after the input."""
    if measure:
        tracemalloc.start()
    else:
        soft = _vm_size() + bound
        if limit != resource.RLIM_INFINITY:
            soft = min(soft, limit)
        resource.setrlimit(resource.RLIMIT_AS, (soft, limit))
    alloc = -1
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        outcome = target(data)
    except target.typed as e:
        outcome = type(e).__name__
    except MemoryError:
        if measure:
            raise
        outcome = "MemoryError"
    finally:
        cpu, wall = time.process_time() - c0, time.perf_counter() - t0
        if measure:
            alloc = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        else:
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return outcome, cpu, wall, alloc


def worker(args: argparse.Namespace) -> None:
    import atheris

    with atheris.instrument_imports(include=["engine", "ingest"]):
        import engine.config
        import engine.gguf
        import engine.tokenizer  # noqa: F401
        import ingest.corpus  # noqa: F401

    scratch = Path(tempfile.mkdtemp(prefix=f"fuzz-{args.worker}-", dir=args.scratch))
    target = TARGET_CLASSES[args.worker](scratch)
    limit = _vm_size() + ADDRESS_SPACE_HEADROOM
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    stats: dict[str, Any] = {"target": args.worker, "inputs": 0, "outcomes": Counter(),
                             "max_seconds": 0.0, "max_wall_seconds": 0.0, "max_alloc_bytes": 0,
                             "max_input_bytes": 0, "alloc_every": args.alloc_every,
                             "alloc_measured": 0, "address_space_retried": 0,
                             "slow_retimed": 0, "address_space_limit_mb": limit >> 20}
    bound = int(args.max_alloc_mb * (1 << 20))
    stats_path = Path(args.stats)
    tmp = stats_path.with_suffix(".tmp")

    def one_input(data: bytes) -> None:
        measure = stats["inputs"] % args.alloc_every == 0
        outcome, cpu, wall, alloc = run_input(target, data, measure, bound, limit)
        if outcome == "MemoryError":  # past the bound in address space: measure it
            stats["address_space_retried"] += 1
            measure = True
            outcome, cpu, wall, alloc = run_input(target, data, measure, bound, limit)
        if cpu > args.max_seconds:  # the shared machine, or the input? time it again
            stats["slow_retimed"] += 1
            outcome, cpu, wall, alloc = run_input(target, data, measure, bound, limit)
            if cpu > args.max_seconds:
                raise FuzzFinding(f"input of {len(data)} bytes took {cpu:.2f} s of CPU")
        if alloc > bound:
            raise FuzzFinding(f"input of {len(data)} bytes allocated {alloc >> 20} MB at peak")
        stats["alloc_measured"] += measure
        stats["inputs"] += 1
        stats["outcomes"][outcome] += 1
        stats["max_seconds"] = max(stats["max_seconds"], cpu)
        stats["max_wall_seconds"] = max(stats["max_wall_seconds"], wall)
        stats["max_alloc_bytes"] = max(stats["max_alloc_bytes"], alloc)
        stats["max_input_bytes"] = max(stats["max_input_bytes"], len(data))
        if True:  # every input: libFuzzer ends the process without returning
            stats["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10
            stats.update(getattr(target, "roundtrips", {}))
            tmp.write_text(json.dumps(stats))
            os.replace(tmp, stats_path)  # a reader never sees a half-written file

    corpus = Path(args.corpus)
    argv = [sys.argv[0], str(corpus), f"-runs={args.runs}", f"-max_len={MAX_LEN[args.worker]}",
            "-timeout=60", f"-max_total_time={int(args.max_minutes * 60)}",
            f"-artifact_prefix={args.artifacts}/", f"-seed={args.seed}",
            "-print_final_stats=1"]
    atheris.Setup(argv, one_input)
    atheris.Fuzz()


# --------------------------------------------------------------------------------------
# the parent: seeds, one worker per target, the report
# --------------------------------------------------------------------------------------


def start_target(target: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Write the seeds and start the worker; ``finish_target`` waits for it."""
    corpus = workdir / target / "corpus"
    artifacts = workdir / target / "findings"
    artifacts.mkdir(parents=True, exist_ok=True)
    n_seeds = write_seeds(target, corpus)
    stats_path = workdir / target / "stats.json"
    stats_path.unlink(missing_ok=True)
    cmd = [sys.executable, __file__, "--worker", target, "--runs", str(args.runs), "--corpus",
           str(corpus), "--artifacts", str(artifacts), "--stats", str(stats_path),
           "--scratch", str(workdir), "--seed", str(args.seed),
           "--max-seconds", str(args.max_seconds), "--max-alloc-mb", str(args.max_alloc_mb),
           "--alloc-every", str(args.alloc_every),
           "--max-minutes", str(args.max_minutes)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    log = open(workdir / target / "worker.log", "w")  # noqa: SIM115 - closed in finish_target
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    return {"target": target, "seeds": n_seeds, "proc": proc, "log": log, "t0": time.perf_counter(),
            "stats_path": stats_path, "artifacts": artifacts}


def finish_target(job: dict[str, Any]) -> dict[str, Any]:
    returncode = job["proc"].wait()
    job["log"].close()
    path = job["stats_path"]
    stats = json.loads(path.read_text()) if path.exists() else {"inputs": 0}
    stats.update(target=job["target"], seeds=job["seeds"], returncode=returncode,
                 wall_seconds=round(time.perf_counter() - job["t0"], 1),
                 findings=sorted(str(p) for p in job["artifacts"].glob("*-*")
                                 if not p.name.startswith("slow-unit-")),
                 slow_units=len(list(job["artifacts"].glob("slow-unit-*"))))
    if returncode != 0:
        text = Path(job["log"].name).read_text(errors="replace")
        stats["log_tail"] = "\n".join(
            line for line in text.splitlines()
            if not line.startswith(("INFO:", "WARNING:", "#")))[-4000:]
    return stats


def replay(target: Any, data: bytes) -> str:
    """The outcome of one input, outside libFuzzer (an untyped exception propagates)."""
    try:
        return target(data)
    except target.typed as e:
        return f"{type(e).__name__}: {e}"


def report(results: list[dict[str, Any]]) -> str:
    lines = [f"{'target':<10} {'inputs':>8} {'ok':>8} {'typed errors':>12} {'max CPU s':>9} "
             f"{'max alloc MB':>12} {'peak RSS MB':>11} {'findings':>8}"]
    for r in results:
        outcomes = r.get("outcomes", {})
        ok = outcomes.get("ok", 0)
        lines.append(
            f"{r['target']:<10} {r['inputs']:>8} {ok:>8} {r['inputs'] - ok:>12} "
            f"{r.get('max_seconds', 0):>9.3f} {r.get('max_alloc_bytes', 0) / 2**20:>12.1f} "
            f"{r.get('peak_rss_mb', 0):>11} {len(r['findings']):>8}")
    for r in results:
        errs = {k: v for k, v in r.get("outcomes", {}).items() if k != "ok"}
        extra = f", BPE round trips checked: {r['bpe_roundtrip']}" if "bpe_roundtrip" in r else ""
        lines.append(f"{r['target']}: {r['seeds']} seeds, {r['wall_seconds']} s, "
                     f"inputs over 10 s of wall time (libFuzzer's slow units; CPU time is the "
                     f"criterion on a shared machine): {r.get('slow_units', 0)}, "
                     f"max wall {r.get('max_wall_seconds', 0):.3f} s, "
                     f"slow inputs re-timed: {r.get('slow_retimed', 0)}, allocation measured "
                     f"on {r.get('alloc_measured', 0)} inputs (the others under the "
                     f"address-space bound; {r.get('address_space_retried', 0)} past it, "
                     f"measured){extra}; errors: {errs}")
        for f in r["findings"]:
            lines.append(f"  FINDING {f}")
        if r["returncode"] != 0:
            lines.append(f"  worker exit {r['returncode']}:\n{r.get('log_tail', '')}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--target", choices=(*TARGETS, "all"), default="all")
    p.add_argument("--runs", type=int, default=100_000, help="inputs per target")
    p.add_argument("--workdir", type=Path, default=None,
                   help="seeds, findings and stats (default: a temporary folder)")
    p.add_argument("--seed", type=int, default=1, help="libFuzzer's random seed")
    p.add_argument("--max-minutes", type=float, default=0,
                   help="stop each target after this long even before --runs (0: no limit)")
    p.add_argument("--max-seconds", type=float, default=1.0)
    p.add_argument("--max-alloc-mb", type=float, default=64.0)
    p.add_argument("--alloc-every", type=int, default=1, metavar="N",
                   help="measure the peak allocation (tracemalloc) of every N-th input; the "
                        "others run under an address-space limit of --max-alloc-mb (default "
                        "1: every input measured; tracemalloc makes the instrumented "
                        "tokenizer ~4x slower)")
    p.add_argument("--jobs", type=int, default=1, help="targets fuzzed at the same time")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--replay", type=Path, nargs="+", metavar="FILE",
                   help="run --target on these inputs (e.g. a finding) and show what happens")
    p.add_argument("--worker", choices=TARGETS, help=argparse.SUPPRESS)
    for hidden in ("--corpus", "--artifacts", "--stats", "--scratch"):
        p.add_argument(hidden, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.alloc_every < 1:
        p.error(f"--alloc-every must be 1 or more, not {args.alloc_every}")
    if args.worker:
        worker(args)
        return 0
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="guidelines-fuzz-"))
    if args.replay:
        target = TARGET_CLASSES[args.target](Path(tempfile.mkdtemp(dir=workdir)))
        for f in args.replay:
            print(f"{f}: {replay(target, f.read_bytes())}")
        return 0
    targets = TARGETS if args.target == "all" else (args.target,)
    results: list[dict[str, Any]] = []
    running: list[dict[str, Any]] = []
    for t in targets:
        if len(running) >= args.jobs:
            results.append(finish_target(running.pop(0)))
        running.append(start_target(t, args, workdir))
    results += [finish_target(job) for job in running]
    print(json.dumps(results, indent=1) if args.json else report(results))
    bad = [r for r in results if r["returncode"] != 0 or r["findings"] or r["inputs"] == 0]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
