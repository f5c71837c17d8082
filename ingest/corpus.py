"""Corpus readers in the epfl-llm/guidelines schema, with per-record validation.

Inputs: a JSONL file (``.jsonl``, ``.jsonl.gz``), a Parquet file, a folder of those (read in sorted
order, recursively), a folder written by ``datasets.Dataset.save_to_disk``, or a Hugging Face
dataset (``epfl-llm/guidelines`` or ``hf:NAME``) read with ``datasets`` in streaming mode.

Every record is validated; a bad one becomes a :class:`Rejection` (file, line, reason) and the
reading goes on. Records are never trusted: lines longer than ``MAX_RECORD_BYTES`` are skipped
without being held in memory, and no reader can execute code.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from .errors import CorpusError

# The schema of epfl-llm/guidelines: which fields we read and which must be present.
REQUIRED_FIELDS = ("id", "source", "clean_text")
OPTIONAL_STRING_FIELDS = ("title", "url", "overview", "raw_text")
HF_DEFAULT_DATASET = "epfl-llm/guidelines"
HF_PREFIX = "hf:"
# File name endings we read, and the reader of each.
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson")
PARQUET_SUFFIXES = (".parquet",)
# The largest record (one JSON line) we accept; the longest real guideline is far below this.
MAX_RECORD_BYTES = 64 * 1024 * 1024
_LINE_READ = 1 << 20
_HF_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True, slots=True)
class Record:
    """One valid guideline document."""

    id: str
    source: str
    clean_text: str
    title: str | None
    url: str | None
    origin: str  # the file (or dataset) it came from
    line: int  # 1-based line (or row) number in ``origin``

    @property
    def content_hash(self) -> str:
        """sha256 of what the index holds of this document: a change means re-indexing it."""
        key = json.dumps(
            [self.id, self.source, self.title, self.url, self.clean_text], ensure_ascii=False
        )
        return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Rejection:
    """A record that was skipped, and why."""

    origin: str
    line: int
    reason: str
    record_id: str | None = None

    def __str__(self) -> str:
        rid = f" (id {self.record_id!r})" if self.record_id else ""
        return f"{self.origin}:{self.line}{rid}: {self.reason}"


def validate(row: Any, origin: str, line: int) -> Record | Rejection:
    """Check one decoded row against the schema."""
    if not isinstance(row, dict):
        return Rejection(origin, line, f"a record must be a JSON object, not {type(row).__name__}")
    rid = row.get("id") if isinstance(row.get("id"), str) and row.get("id") else None
    for field in REQUIRED_FIELDS:
        value = row.get(field)
        if value is None:
            return Rejection(origin, line, f"missing field {field!r}", rid)
        if not isinstance(value, str):
            return Rejection(
                origin, line, f"field {field!r} is {type(value).__name__}, not a string", rid
            )
        if not value.strip():
            return Rejection(origin, line, f"field {field!r} is empty", rid)
    for field in OPTIONAL_STRING_FIELDS:
        value = row.get(field)
        if value is not None and not isinstance(value, str):
            return Rejection(
                origin, line, f"field {field!r} is {type(value).__name__}, not a string", rid
            )
    for field in (*REQUIRED_FIELDS, "title", "url"):
        value = row.get(field)
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return Rejection(
                    origin, line, f"field {field!r} holds invalid unicode (a lone surrogate)", rid
                )
    return Record(
        id=row["id"],
        source=row["source"],
        clean_text=row["clean_text"],
        title=row.get("title") or None,
        url=row.get("url") or None,
        origin=origin,
        line=line,
    )


def _read_lines(stream: BinaryIO) -> Iterator[tuple[int, bytes | None]]:
    """(line number, bytes) per line; ``None`` for a line over ``MAX_RECORD_BYTES`` (not kept)."""
    lineno = 0
    while True:
        piece = stream.readline(_LINE_READ)
        if not piece:
            return
        lineno += 1
        if piece.endswith(b"\n"):
            yield lineno, piece
            continue
        parts, size, too_long = [piece], len(piece), False
        while piece and not piece.endswith(b"\n"):
            piece = stream.readline(_LINE_READ)
            size += len(piece)
            if size > MAX_RECORD_BYTES:
                too_long = True
                parts = []
            elif not too_long:
                parts.append(piece)
        yield lineno, None if too_long else b"".join(parts)


def read_jsonl(path: Path) -> Iterator[Record | Rejection]:
    """Records of a ``.jsonl`` or ``.jsonl.gz`` file."""
    origin = str(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as stream:
            for lineno, raw in _read_lines(stream):
                if raw is None:
                    yield Rejection(origin, lineno, f"record longer than {MAX_RECORD_BYTES} bytes")
                    continue
                if not raw.strip():
                    continue
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    yield Rejection(origin, lineno, f"invalid UTF-8 at byte {e.start}")
                    continue
                try:
                    row = json.loads(text)
                except json.JSONDecodeError as e:
                    yield Rejection(origin, lineno, f"malformed JSON: {e.msg} (column {e.colno})")
                    continue
                yield validate(row, origin, lineno)
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as e:  # zlib: a damaged .gz body
        raise CorpusError(path, f"cannot be read: {e}") from e


def read_parquet(path: Path) -> Iterator[Record | Rejection]:
    """Records of a Parquet file (read in batches of rows, only the schema's columns)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    origin = str(path)
    try:
        pf = pq.ParquetFile(path)
        names = set(pf.schema_arrow.names)
    except (OSError, pa.ArrowException, UnicodeDecodeError) as e:  # names: bytes, not UTF-8
        raise CorpusError(path, f"is not a readable Parquet file: {e}") from e
    columns = [c for c in (*REQUIRED_FIELDS, "title", "url") if c in names]
    row = 0
    try:
        for batch in pf.iter_batches(batch_size=512, columns=columns):
            for item in _batch_rows(batch):
                row += 1
                if isinstance(item, UnicodeDecodeError):
                    yield Rejection(origin, row, f"invalid UTF-8 in a string column: {item}")
                else:
                    yield validate(item, origin, row)
    except (OSError, pa.ArrowException) as e:
        raise CorpusError(path, f"stopped being readable after row {row}: {e}") from e


def _batch_rows(batch: Any) -> list[dict[str, Any] | UnicodeDecodeError]:
    """The rows of a record batch; a row whose strings are not valid UTF-8 (Parquet does not
    check them) becomes its decoding error, so that only that row is rejected."""
    try:
        return batch.to_pylist()
    except UnicodeDecodeError:
        rows: list[dict[str, Any] | UnicodeDecodeError] = []
        for i in range(batch.num_rows):
            try:
                rows.append(batch.slice(i, 1).to_pylist()[0])
            except UnicodeDecodeError as e:
                rows.append(e)
        return rows


def _is_saved_dataset(folder: Path) -> bool:
    return ((folder / "dataset_info.json").is_file() and (folder / "state.json").is_file()) or (
        (folder / "dataset_dict.json").is_file()
    )


def _corpus_files(folder: Path) -> list[Path]:
    files = [
        p
        for p in sorted(folder.rglob("*"))
        if p.is_file() and (p.name.endswith(JSONL_SUFFIXES) or p.name.endswith(PARQUET_SUFFIXES))
    ]
    if not files:
        raise CorpusError(folder, "holds no .jsonl, .jsonl.gz or .parquet file")
    return files


def read_file(path: Path) -> Iterator[Record | Rejection]:
    if path.name.endswith(JSONL_SUFFIXES):
        return read_jsonl(path)
    if path.name.endswith(PARQUET_SUFFIXES):
        return read_parquet(path)
    raise CorpusError(path, "unknown format: expected .jsonl, .jsonl.gz, .parquet or a folder")


def _iter_rows(rows: Iterable[Any], origin: str) -> Iterator[Record | Rejection]:
    n = 0
    try:
        for n, row in enumerate(rows, start=1):
            yield validate(row, origin, n)
    except CorpusError:
        raise
    except Exception as e:  # the datasets library raises many kinds; report where it stopped
        raise CorpusError(origin, f"the dataset stream failed after row {n}: {e}") from e


def read_hf_dataset(name: str, split: str = "train") -> Iterator[Record | Rejection]:
    """Rows of a Hugging Face dataset (hub name or local dataset folder), streamed."""
    try:
        import datasets
    except ImportError as e:  # pragma: no cover - datasets is a dependency
        raise CorpusError(
            name, "reading a Hugging Face dataset needs the `datasets` package"
        ) from e
    local = Path(name)
    try:
        if local.is_dir() and _is_saved_dataset(local):
            ds = datasets.load_from_disk(str(local))
            if isinstance(ds, datasets.DatasetDict):
                ds = ds[split]
        else:
            ds = datasets.load_dataset(name, split=split, streaming=True)
    except Exception as e:  # offline, unknown name, gated: all end the run with one message
        raise CorpusError(
            f"{HF_PREFIX}{name}",
            f"cannot open the Hugging Face dataset ({type(e).__name__}: {e}). Without network "
            f"access, download {HF_DEFAULT_DATASET}'s open_guidelines.jsonl elsewhere and pass "
            "its path (or a folder of .jsonl/.parquet files) to --input.",
        ) from e
    return _iter_rows(ds, f"{HF_PREFIX}{name}")


def _open_spec(spec: str | Path) -> Iterator[Record | Rejection]:
    text = str(spec)
    if text.startswith(HF_PREFIX):
        yield from read_hf_dataset(text[len(HF_PREFIX) :])
        return
    path = Path(spec)
    if path.is_dir():
        if _is_saved_dataset(path):
            yield from read_hf_dataset(str(path))
            return
        for file in _corpus_files(path):
            yield from read_file(file)
        return
    if path.is_file():
        yield from read_file(path)
        return
    if _HF_NAME.match(text):
        yield from read_hf_dataset(text)
        return
    raise CorpusError(spec, "no such file or folder (nor a Hugging Face dataset name owner/name)")


def check_input(spec: str | Path) -> None:
    """Raise :class:`CorpusError` now for an input that cannot be opened (before any work)."""
    text, path = str(spec), Path(spec)
    if text.startswith(HF_PREFIX) or path.is_dir() or (not path.exists() and _HF_NAME.match(text)):
        return
    if not path.exists():
        raise CorpusError(
            spec, "no such file or folder (nor a Hugging Face dataset name owner/name)"
        )
    if not path.name.endswith(JSONL_SUFFIXES + PARQUET_SUFFIXES):
        raise CorpusError(path, "unknown format: expected .jsonl, .jsonl.gz, .parquet or a folder")


def read_corpus(
    spec: str | Path, sources: Iterable[str] | None = None, limit: int | None = None
) -> Iterator[Record | Rejection]:
    """Valid records (and rejections) of an input, de-duplicated by id, filtered and limited.

    ``sources``: keep only documents of these sources (case-insensitive); ``limit``: stop after
    that many accepted documents. A repeated id is rejected, pointing at its first occurrence.
    """
    wanted = {s.strip().lower() for s in sources} if sources else None
    seen: dict[str, str] = {}
    accepted = 0
    if limit is not None and limit <= 0:
        return
    for item in _open_spec(spec):
        if isinstance(item, Rejection):
            yield item
            continue
        first = seen.get(item.id)
        if first is not None:
            yield Rejection(item.origin, item.line, f"duplicate id, first seen at {first}", item.id)
            continue
        seen[item.id] = f"{item.origin}:{item.line}"
        if wanted is not None and item.source.lower() not in wanted:
            continue
        yield item
        accepted += 1
        if limit is not None and accepted >= limit:
            return
