"""Answer receipts: what it takes to reproduce an answer, and the answer as a Markdown file.

Every :class:`~assistant.answer.Answer` the chain returns carries ``receipt``, a JSON-ready dict:

``model``      the GGUF file: name, path, size, sha256, quantization
``engine``     the package version, a sha256 of the engine's sources and how prompt products run
``sampler``    every generation setting (temperature, top-k/p, min-p, penalties, DRY, the loop
               stop, seed, max_tokens, n_ctx, stop strings)
``retrieval``  k, the similarity threshold, the search mode, the source filter
``index``      the folder, its published generation, the sha256 of its manifest, the embedder
``chunks``     the chunk ids of the passages, in the order the prompt numbers them
``prompt_sha256``, ``answer_sha256`` (of the answer text shown, without sources and notice),
``answer``, ``finish_reason``, ``deterministic`` (greedy, or sampling with a seed).

``python -m assistant replay RECEIPT.json`` (:mod:`assistant.replay`) runs the question again and
compares.  A 4 GB model is not hashed per answer: :func:`file_sha256` keeps the digests in a small
JSON file keyed by the file's resolved path, size and modification time.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from assistant.notice import ADVISORY_NOTICE

RECEIPT_FORMAT = "guidelines-answer-receipt"
RECEIPT_VERSION = 1
HASH_CACHE_NAME = "file-sha256.json"
HASH_CACHE_MAX_BYTES = 1 << 20  # a larger cache file is ignored (and rewritten)
HASH_CACHE_MAX_ENTRIES = 256
_CHUNK = 1 << 22

_hash_lock = threading.Lock()
_hashes: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256, this process


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _read_hash_cache(cache_file: Path) -> dict[str, dict[str, Any]]:
    try:
        if cache_file.stat().st_size > HASH_CACHE_MAX_BYTES:
            return {}
        data = json.loads(cache_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_hash_cache(cache_file: Path, data: dict[str, dict[str, Any]]) -> None:
    entries = list(data.items())[-HASH_CACHE_MAX_ENTRIES:]
    tmp = cache_file.with_name(f".{cache_file.name}.{os.getpid()}.tmp")
    with contextlib.suppress(OSError):  # a read-only home: the digest is still returned
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(dict(entries), indent=1), encoding="utf-8")
        os.replace(tmp, cache_file)


def file_sha256(path: str | Path, cache_file: Path | None = None) -> str:
    """The sha256 of a file, hashed once per (resolved path, size, mtime): kept in this process
    and, when ``cache_file`` is given, in that JSON file for the next processes."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), int(st.st_size), int(st.st_mtime_ns))
    with _hash_lock:
        if key in _hashes:
            return _hashes[key]
        if cache_file is not None:
            hit = _read_hash_cache(cache_file).get(key[0])
            if (isinstance(hit, dict) and hit.get("size") == key[1]
                    and hit.get("mtime_ns") == key[2] and isinstance(hit.get("sha256"), str)):
                _hashes[key] = hit["sha256"]
                return hit["sha256"]
        digest = hashlib.sha256()
        with p.open("rb") as f:
            while block := f.read(_CHUNK):
                digest.update(block)
        value = digest.hexdigest()
        _hashes[key] = value
        if cache_file is not None:
            data = _read_hash_cache(cache_file)
            data.pop(key[0], None)
            data[key[0]] = {"size": key[1], "mtime_ns": key[2], "sha256": value}
            _write_hash_cache(cache_file, data)
        return value


@lru_cache(maxsize=1)
def engine_version() -> dict[str, str]:
    """The installed package version and a sha256 of every ``engine/**/*.py`` (the code that
    turns a prompt into tokens: an edit in a checkout changes it, the version may not)."""
    from importlib import metadata

    import engine
    from engine.kernels import amx as kernels_amx

    try:
        version = metadata.version("guidelines-assistant")
    except metadata.PackageNotFoundError:
        version = "unknown"
    here = Path(engine.__file__).resolve().parent
    digest = hashlib.sha256()
    for source in sorted(here.rglob("*.py")):
        digest.update(source.relative_to(here).as_posix().encode())
        digest.update(source.read_bytes())
    # prompt products in bfloat16 AMX tiles or float32 BLAS: the same code may answer
    # differently on a CPU without AMX (engine/kernels/amx.py)
    products = "amx-bfloat16" if kernels_amx.available() else "blas-float32"
    return {"version": version, "source_sha256": digest.hexdigest(), "prompt_products": products}


def manifest_sha256(manifest: dict[str, Any]) -> str:
    return text_sha256(json.dumps(manifest, sort_keys=True, separators=(",", ":")))


def _default_cache_file() -> Path:
    from assistant.config import Settings

    return Settings.from_env().home / HASH_CACHE_NAME


def model_record(model: Any, cache_file: Path | None = None) -> dict[str, Any]:
    """The GGUF file an engine model runs: name, path, size, sha256, quantization."""
    path = Path(model.path).resolve()
    return {"file": path.name, "path": str(path), "size": path.stat().st_size,
            "sha256": file_sha256(path, cache_file or _default_cache_file()),
            "quantization": getattr(model, "quantization", None)}


def index_record(index: Any, path: str | Path) -> dict[str, Any]:
    manifest = dict(getattr(index, "manifest", {}) or {})
    return {"path": str(Path(path).expanduser().resolve()),
            "generation": manifest.get("generation"),
            "manifest_sha256": manifest_sha256(manifest),
            "embedding_model": (manifest.get("embedding") or {}).get("model")}


def prompt_text(model_input: Any) -> str:
    """What the model read, as one string: the rendered prompt, or a chat model's messages."""
    if isinstance(model_input, str):
        return model_input
    return json.dumps([[type(m).__name__, str(getattr(m, "content", m))] for m in model_input],
                      ensure_ascii=False)


def _is_deterministic(sampler: dict[str, Any]) -> bool:
    temperature = sampler.get("temperature")
    return temperature is not None and (temperature <= 0 or sampler.get("seed") is not None)


def build_receipt(chain: Any, answer: Any, prompt: str | None,
                  retriever_kwargs: dict[str, Any]) -> dict[str, Any]:
    """The receipt of ``answer`` produced by ``chain`` (a :class:`~assistant.chain.RAGChain`)
    from ``prompt`` (the text the model read; ``None`` for a refusal)."""
    llm, retriever = chain.llm, chain.retriever
    model = getattr(llm, "engine_model", None)
    sampler: dict[str, Any] = {}
    if hasattr(llm, "sampling_params"):
        stops = list(chain._llm_kwargs().get("stop", []))
        sampler = {**llm.sampling_params(), "n_ctx": chain.context_length(), "stop": stops}
    index = getattr(retriever, "index", None)
    retrieval = {"k": retriever_kwargs.get("k", getattr(retriever, "k", None)),
                 "min_similarity": getattr(retriever, "score_threshold", None),
                 "mode": getattr(retriever, "mode", None),
                 "sources": retriever_kwargs.get("sources", getattr(retriever, "sources", None))}
    return {
        "format": RECEIPT_FORMAT,
        "version": RECEIPT_VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "question": answer.question,
        "model": model_record(model) if model is not None else None,
        "engine": engine_version(),
        "sampler": sampler,
        "retrieval": retrieval,
        "index": (index_record(index, getattr(retriever, "index_path", ""))
                  if index is not None else None),
        "chunks": [p.chunk_id for p in answer.passages],
        "prompt_sha256": text_sha256(prompt) if prompt is not None else None,
        "prompt_tokens": answer.usage.get("prompt_tokens"),
        "answer": answer.text,
        "answer_sha256": text_sha256(answer.text),
        "finish_reason": answer.finish_reason,
        "refused": answer.refused,
        "deterministic": _is_deterministic(sampler),
    }


def safe_receipt(chain: Any, answer: Any, prompt: str | None,
                 retriever_kwargs: dict[str, Any]) -> dict[str, Any]:
    """:func:`build_receipt`, or a receipt saying why it could not be made (a missing model file,
    an index that cannot be read): the answer is still returned."""
    try:
        return build_receipt(chain, answer, prompt, retriever_kwargs)
    except Exception as e:  # the answer must not be lost over its receipt
        return {"format": RECEIPT_FORMAT, "version": RECEIPT_VERSION,
                "error": f"no receipt: {type(e).__name__}: {e}", "question": answer.question,
                "answer_sha256": text_sha256(answer.text)}


def answer_markdown(answer: Any) -> str:
    """The answer as a Markdown file: question, answer, sources (with their passages), the
    receipt's key facts and the advisory notice."""
    lines = [f"# {answer.question.strip()}", "", answer.text.strip(), ""]
    note = getattr(answer, "status_note", lambda: "")()
    if note:
        lines += [f"*{note}*", ""]
    if answer.citations:
        lines += ["## Sources", ""]
        passages = {p.number: p for p in answer.passages}
        for c in answer.citations:
            lines.append(f"- **{c.head}**" + (f" <{c.url}>" if c.url else "") + f" — {c.label}")
            passage = passages.get(c.number)
            if passage is not None:
                quoted = "\n".join(f"  > {line}" for line in passage.text.strip().splitlines())
                lines += [quoted]
        lines.append("")
    receipt = getattr(answer, "receipt", None) or {}
    if receipt:
        model = receipt.get("model") or {}
        index = receipt.get("index") or {}
        chunks = ", ".join(map(str, receipt.get("chunks") or [])) or "none"
        lines += ["## Receipt", "",
                  f"- model: {model.get('file')} ({model.get('quantization')}), "
                  f"sha256 {model.get('sha256')}",
                  f"- engine: {(receipt.get('engine') or {}).get('version')}, "
                  f"sources sha256 {(receipt.get('engine') or {}).get('source_sha256')}",
                  f"- index: generation {index.get('generation')}, "
                  f"manifest sha256 {index.get('manifest_sha256')}",
                  f"- passages (chunk ids, in order): {chunks}",
                  f"- prompt sha256 {receipt.get('prompt_sha256')}, "
                  f"answer sha256 {receipt.get('answer_sha256')}",
                  "- replay: `python -m assistant replay RECEIPT.json`", ""]
    lines += ["---", "", f"**{getattr(answer, 'notice', ADVISORY_NOTICE)}**", ""]
    return "\n".join(lines)
