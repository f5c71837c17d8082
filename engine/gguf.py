"""The GGUF reader: header, metadata, tensor infos and zero-copy tensor views.

``GGUFFile.open(path)`` parses the header of a GGUF v2/v3 file and memory-maps it; tensor
data is never read into RAM: ``TensorInfo.data`` is a ``uint8`` view on the map.

Untrusted input: every count and length in the header is bounded by the bytes that remain
in the file before anything is allocated, so a 1 KB file claiming 2**60 tensors fails at once
with a ``GGUFError`` naming the file.

Models split in parts open as one ``GGUFFile``:

* byte splits (``x.gguf-split-a``, ``x.gguf-split-b``, ...: one GGUF cut into pieces, as
  TheBloke ships files over 50 GB), given any part (or ``x.gguf`` itself when absent);
* ``gguf-split`` shards (``x-00001-of-00003.gguf`` ...), given any shard: each shard is a
  GGUF of its own; the metadata is the first shard's and the tensors are those of all shards.
"""

from __future__ import annotations

import contextlib
import math
import mmap
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.constants import (
    ENGINE_WEIGHT_TYPES,
    GGML_BLOCK_LAYOUT,
    GGML_MAX_DIMS,
    GGML_OTHER_BLOCK_LAYOUT,
    GGUF_DEFAULT_ALIGNMENT,
    GGUF_MAGIC,
    GGUF_SCALAR_FORMAT,
    GGUF_SUPPORTED_VERSIONS,
    BlockLayout,
    GGMLType,
    GGUFValueType,
    Keys,
)
from engine.errors import GGUFError, SplitError, UnsupportedTensorType

__all__ = ["GGUFError", "GGUFFile", "TensorInfo", "block_layout", "open_gguf"]

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_SCALAR_STRUCTS = {t: struct.Struct(f) for t, f in GGUF_SCALAR_FORMAT.items()}
_ARRAY_DTYPES = {t: np.dtype(f) for t, f in GGUF_SCALAR_FORMAT.items()}

# Smallest encoding of each header record, used to bound counts by the bytes left.
_MIN_STRING = 8  # u64 length, empty text
_MIN_KV = _MIN_STRING + 4 + 1  # key, u32 type, a 1-byte value
_MIN_ARRAY = 4 + 8  # u32 element type, u64 count
_MAX_ELEMENTS = (1 << 63) - 1  # llama.cpp's ggml int64 element count (and numpy's index)
_MIN_TENSOR_INFO = _MIN_STRING + 4 + 8 + 4 + 8  # name, n_dims, one dim, type, offset
_HEADER_SIZE = 4 + 4 + 8 + 8  # magic, version, n_tensors, n_kv

_BYTE_SPLIT = re.compile(r"^(?P<base>.+)-split-(?P<letter>[a-z])$")
_SHARD = re.compile(r"^(?P<prefix>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")


def block_layout(ggml_type: GGMLType) -> BlockLayout:
    """Elements per block and bytes per block of a tensor type (any type ggml defines)."""
    layout = GGML_BLOCK_LAYOUT.get(ggml_type) or GGML_OTHER_BLOCK_LAYOUT.get(ggml_type)
    if layout is None:  # every GGMLType member has a layout; this guards table edits
        raise KeyError(ggml_type)
    return layout


# --------------------------------------------------------------------------------------
# bytes: one file, or a byte split seen as one concatenation
# --------------------------------------------------------------------------------------


class _Part:
    """One memory-mapped file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            with open(path, "rb") as f:
                self.size = f.seek(0, 2)
                self.mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if self.size else None
        except OSError as e:
            raise GGUFError(path, f"cannot open: {e.strerror or e}") from e
        self.array = (
            np.frombuffer(self.mm, dtype=np.uint8) if self.mm is not None else np.empty(0, np.uint8)
        )

    def close(self) -> None:
        self.array = None
        if self.mm is not None:
            # tensor views still alive keep the map open; it closes when they go
            with contextlib.suppress(BufferError):
                self.mm.close()
            self.mm = None


class _Source:
    """The bytes of a model: one file or the concatenation of byte-split parts."""

    def __init__(self, parts: list[_Part]) -> None:
        self.parts = parts
        self.starts = []
        total = 0
        for p in parts:
            self.starts.append(total)
            total += p.size
        self.size = total
        self._mm0 = parts[0].mm if parts[0].mm is not None else b""
        self._end0 = parts[0].size

    @property
    def first(self) -> mmap.mmap | bytes:
        """The first part's bytes (where the header lives)."""
        return self._mm0

    @property
    def first_size(self) -> int:
        return self._end0

    def read(self, offset: int, n: int) -> bytes:
        """A copy of ``n`` bytes at ``offset`` (the caller checked the bounds)."""
        if offset + n <= self._end0:
            return self._mm0[offset : offset + n]
        return self.view(offset, n).tobytes()

    def view(self, offset: int, n: int) -> np.ndarray:
        """A ``uint8`` array of ``n`` bytes at ``offset``: zero-copy unless it spans two parts."""
        pieces = []
        for start, part in zip(self.starts, self.parts, strict=True):
            lo, hi = max(offset, start), min(offset + n, start + part.size)
            if lo < hi:
                pieces.append(part.array[lo - start : hi - start])
        if len(pieces) == 1:
            return pieces[0]
        if not pieces:
            return np.empty(0, np.uint8)
        copy = np.concatenate(pieces)  # a tensor straddling a byte-split boundary: a copy
        copy.flags.writeable = False
        return copy

    def close(self) -> None:
        self._mm0 = b""
        for p in self.parts:
            p.close()


# --------------------------------------------------------------------------------------
# tensor infos
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorInfo:
    """One tensor: name, shape in ggml order (``shape[0]`` = ne0, the contiguous row length),
    type, and where its bytes are. ``data`` is a ``uint8`` view shaped ``(n_rows, row_bytes)``."""

    name: str
    shape: tuple[int, ...]
    ggml_type: GGMLType
    offset: int  # absolute byte offset of the data in its file (or byte-split concatenation)
    n_bytes: int
    row_bytes: int
    _source: _Source = field(repr=False, compare=False)

    @property
    def n_elements(self) -> int:
        return int(np.prod(self.shape, dtype=object))

    @property
    def n_rows(self) -> int:
        """Rows of ``shape[0]`` elements: the product of ``shape[1:]``."""
        return int(np.prod(self.shape[1:], dtype=object)) if len(self.shape) > 1 else 1

    @property
    def data(self) -> np.ndarray:
        """The raw bytes, ``uint8`` of shape ``(n_rows, row_bytes)``, read-only.

        A zero-copy view on the memory map (F32/F16/BF16 callers ``.view()`` it), valid while
        the array is referenced. Only a tensor that straddles the boundary between two parts of
        a byte split is copied into RAM (that one tensor, nothing else).
        """
        return self._source.view(self.offset, self.n_bytes).reshape(self.n_rows, self.row_bytes)


# --------------------------------------------------------------------------------------
# header parser
# --------------------------------------------------------------------------------------


class _HeaderReader:
    """Reads the header fields in order, bounding every count by the bytes left."""

    def __init__(self, source: _Source, path: Path) -> None:
        self.src = source
        self.path = path
        self.pos = 0
        self.size = source.size

    def fail(self, message: str) -> GGUFError:
        return GGUFError(self.path, message)

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.size:
            raise self.fail(
                f"truncated header: {what} at byte {self.pos} needs {n} bytes "
                f"but the file ends at byte {self.size}"
            )

    def take(self, n: int, what: str) -> bytes:
        self.need(n, what)
        b = self.src.read(self.pos, n)
        self.pos += n
        return b

    def u32(self, what: str) -> int:
        return _U32.unpack(self.take(4, what))[0]

    def u64(self, what: str) -> int:
        return _U64.unpack(self.take(8, what))[0]

    def count(self, what: str, min_each: int) -> int:
        """A u64 count whose items take at least ``min_each`` bytes each."""
        n = self.u64(what)
        left = self.size - self.pos
        if n * min_each > left:
            raise self.fail(
                f"header claims {n} {what} but only {left} bytes remain in the file "
                f"(at least {min_each} bytes each)"
            )
        return n

    def string(self, what: str) -> str:
        n = self.u64(f"length of {what}")
        return _decode(self.take(n, what))

    def value(self, vtype: int, key: str) -> Any:
        t = _value_type(vtype, self.path, key)
        if t == GGUFValueType.STRING:
            return self.string(f"value of {key!r}")
        if t == GGUFValueType.ARRAY:
            return self.array(key)
        st = _SCALAR_STRUCTS[t]
        v = st.unpack(self.take(st.size, f"value of {key!r}"))[0]
        return bool(v) if t == GGUFValueType.BOOL else v

    def array(self, key: str) -> Any:
        etype = _value_type(self.u32(f"array type of {key!r}"), self.path, key)
        if etype == GGUFValueType.STRING:
            n = self.count(f"strings in {key!r}", _MIN_STRING)
            return self.string_array(n, key)
        if etype == GGUFValueType.ARRAY:
            n = self.count(f"arrays in {key!r}", _MIN_ARRAY)
            return [self.array(key) for _ in range(n)]
        dtype = _ARRAY_DTYPES[etype]
        n = self.count(f"elements in {key!r}", dtype.itemsize)
        raw = self.take(n * dtype.itemsize, f"array {key!r}")
        arr = np.frombuffer(raw, dtype=dtype, count=n).astype(dtype.newbyteorder("="))
        return arr.astype(bool) if etype == GGUFValueType.BOOL else arr

    def string_array(self, n: int, key: str) -> list[str]:
        """``n`` strings. Those in the first part (all of them, but in a byte split whose cut
        falls inside the array) are located by one loop and decoded in one go."""
        buf, end, pos = self.src.first, self.src.first_size, self.pos
        unpack = _U64.unpack_from
        starts: list[int] = []
        append = starts.append
        for _ in range(n):
            if pos + 8 > end:
                break
            (ln,) = unpack(buf, pos)
            if pos + 8 + ln > end:
                break
            pos += 8
            append(pos)
            pos += ln
        out = _decode_joined(buf, self.pos, pos, starts)
        if out is None:  # a NUL or bad UTF-8 inside: string by string
            out = []
            for s in starts:
                (ln,) = unpack(buf, s - 8)
                out.append(_decode(buf[s : s + ln]))
        self.pos = pos
        for i in range(len(out), n):
            out.append(self.string(f"string {i} of {key!r}"))
        return out


def _decode_joined(buf: Any, first: int, end: int, starts: list[int]) -> list[str] | None:
    """Decode the strings at ``starts`` (each after its 8-byte length, the last ending at
    ``end``) at once: the length fields are cut out, leaving a NUL before each text."""
    if not starts:
        return []
    region = np.frombuffer(buf, np.uint8, count=end - first, offset=first).copy()
    s = np.asarray(starts, dtype=np.int64) - first
    keep = np.ones(len(region), dtype=bool)
    keep[(s[:, None] - np.arange(2, 9)).ravel()] = False  # length bytes but the last
    region[s - 1] = 0  # the last length byte becomes the separator
    joined = region[keep].tobytes()
    if joined.count(0) != len(starts):
        return None
    try:
        return joined.decode().split("\0")[1:]
    except UnicodeDecodeError:
        return None


def _decode(b: bytes) -> str:
    try:
        return b.decode()
    except UnicodeDecodeError:
        return b.decode("utf-8", "surrogateescape")  # keeps the bytes (token texts)


def _value_type(v: int, path: Path, key: str) -> GGUFValueType:
    try:
        return GGUFValueType(v)
    except ValueError:
        raise GGUFError(path, f"metadata key {key!r} has unknown value type {v}") from None


@dataclass
class _Parsed:
    """What one GGUF header says."""

    version: int
    metadata: dict[str, Any]
    field_types: dict[str, tuple[GGUFValueType, ...]]
    tensors: dict[str, TensorInfo]
    alignment: int
    data_offset: int


def _parse(source: _Source, path: Path) -> _Parsed:
    r = _HeaderReader(source, path)
    if source.size < 4 or bytes(source.read(0, 4)) != GGUF_MAGIC:
        head = bytes(source.read(0, min(4, source.size)))
        raise GGUFError(path, f"not a GGUF file (magic {head!r}, expected {GGUF_MAGIC!r})")
    r.pos = 4
    version = r.u32("version")
    if version not in GGUF_SUPPORTED_VERSIONS:
        raise GGUFError(
            path, f"GGUF version {version} is not supported (supported: {GGUF_SUPPORTED_VERSIONS})"
        )
    n_tensors = r.count("tensors", _MIN_TENSOR_INFO)
    n_kv = r.count("metadata entries", _MIN_KV)
    metadata: dict[str, Any] = {}
    types: dict[str, tuple[GGUFValueType, ...]] = {}
    for i in range(n_kv):
        key = r.string(f"key of metadata entry {i}")
        if key in metadata:
            raise GGUFError(path, f"duplicate metadata key {key!r}")
        vtype = r.u32(f"type of {key!r}")
        start = r.pos
        metadata[key] = r.value(vtype, key)
        types[key] = _type_tag(source, start, vtype)
    alignment = _alignment(metadata, types, path)
    infos = [_read_tensor_info(r, i) for i in range(n_tensors)]
    data_offset = -(-r.pos // alignment) * alignment
    tensors = _place_tensors(infos, source, path, alignment, data_offset)
    return _Parsed(version, metadata, types, tensors, alignment, data_offset)


def _type_tag(source: _Source, start: int, vtype: int) -> tuple[GGUFValueType, ...]:
    if vtype != GGUFValueType.ARRAY:
        return (GGUFValueType(vtype),)
    return (GGUFValueType.ARRAY, GGUFValueType(_U32.unpack(source.read(start, 4))[0]))


def _alignment(metadata: dict[str, Any], types: dict, path: Path) -> int:
    if Keys.ALIGNMENT not in metadata:
        return GGUF_DEFAULT_ALIGNMENT
    a = metadata[Keys.ALIGNMENT]
    if types[Keys.ALIGNMENT] != (GGUFValueType.UINT32,) or a <= 0 or a & (a - 1):
        raise GGUFError(path, f"{Keys.ALIGNMENT} = {a!r} is not a power-of-two uint32")
    return a


def _read_tensor_info(r: _HeaderReader, i: int) -> tuple[str, tuple[int, ...], int, int]:
    name = r.string(f"name of tensor {i}")
    n_dims = r.u32(f"n_dims of tensor {name!r}")
    if not 1 <= n_dims <= GGML_MAX_DIMS:
        raise r.fail(f"tensor {name!r} has {n_dims} dimensions (1 to {GGML_MAX_DIMS} allowed)")
    shape = tuple(r.u64(f"shape of tensor {name!r}") for _ in range(n_dims))
    if math.prod(max(d, 1) for d in shape) > _MAX_ELEMENTS:  # a zero dimension excuses none
        raise r.fail(f"tensor {name!r} has too many elements (shape {list(shape)})")
    type_id = r.u32(f"type of tensor {name!r}")
    offset = r.u64(f"offset of tensor {name!r}")
    return name, shape, type_id, offset


def _place_tensors(
    infos: list[tuple[str, tuple[int, ...], int, int]],
    source: _Source,
    path: Path,
    alignment: int,
    data_offset: int,
) -> dict[str, TensorInfo]:
    tensors: dict[str, TensorInfo] = {}
    for name, shape, type_id, offset in infos:
        if name in tensors:
            raise GGUFError(path, f"duplicate tensor name {name!r}")
        try:
            ggml_type = GGMLType(type_id)
        except ValueError:
            raise UnsupportedTensorType(path, name, f"unknown ggml type id {type_id}") from None
        layout = block_layout(ggml_type)
        if shape[0] % layout.block_size:
            raise GGUFError(
                path,
                f"tensor {name!r}: row length {shape[0]} is not a multiple of the "
                f"{ggml_type.name} block size {layout.block_size}",
            )
        row_bytes = shape[0] // layout.block_size * layout.type_size
        n_rows = 1
        for d in shape[1:]:
            n_rows *= d
        n_bytes = row_bytes * n_rows
        if offset % alignment:
            raise GGUFError(path, f"tensor {name!r} offset {offset} is not {alignment}-aligned")
        start = data_offset + offset
        if start + n_bytes > source.size:
            raise GGUFError(
                path,
                f"tensor {name!r} data (bytes {start} to {start + n_bytes}) extends past "
                f"the end of the file ({source.size} bytes): truncated file?",
            )
        tensors[name] = TensorInfo(name, shape, ggml_type, start, n_bytes, row_bytes, source)
    return tensors


# --------------------------------------------------------------------------------------
# parts of a split model
# --------------------------------------------------------------------------------------


def _byte_split_parts(path: Path) -> list[Path] | None:
    """The parts of a byte split given one part (or the unsplit name), else None."""
    m = _BYTE_SPLIT.match(path.name)
    if m is None:
        if path.exists() or not path.with_name(path.name + "-split-a").exists():
            return None
        base = path.name
    else:
        base = m["base"]
    parts = []
    for letter in "abcdefghijklmnopqrstuvwxyz":
        p = path.with_name(f"{base}-split-{letter}")
        if not p.exists():
            break
        parts.append(p)
    if m is not None and path not in parts:
        missing = path.with_name(f"{base}-split-{chr(ord('a') + len(parts))}")
        raise SplitError(path, f"byte-split part {missing.name} is missing")
    return parts


def _shard_paths(path: Path) -> list[Path] | None:
    m = _SHARD.match(path.name)
    if m is None:
        return None
    count = int(m["count"])
    if count < 1 or not 1 <= int(m["no"]) <= count:
        raise SplitError(path, f"shard number {m['no']} of {m['count']} is impossible")
    shards = [
        path.with_name(f"{m['prefix']}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)
    ]
    missing = [p.name for p in shards if not p.exists()]
    if missing:
        raise SplitError(path, f"shard(s) {', '.join(missing)} of the split model are missing")
    return shards


# --------------------------------------------------------------------------------------
# the file
# --------------------------------------------------------------------------------------


class GGUFFile:
    """An open GGUF model (one file, a byte split, or gguf-split shards).

    Attributes: ``path`` (the first file), ``parts`` (all files), ``version``, ``metadata``
    (str keys; strings as ``str``, string arrays as ``list[str]``, numeric arrays as numpy
    arrays), ``field_types`` (the value type of each key; arrays as ``(ARRAY, element type)``),
    ``tensors`` (name → ``TensorInfo`` in file order), ``alignment``, ``data_offset``.
    Use as a context manager or call ``close()``; tensor views already taken stay valid.
    """

    def __init__(self, path: Path, parsed: list[_Parsed], sources: list[_Source]) -> None:
        self.path = path
        self.parts = [p.path for s in sources for p in s.parts]
        first = parsed[0]
        self.version = first.version
        self.metadata = first.metadata
        self.field_types = first.field_types
        self.alignment = first.alignment
        self.data_offset = first.data_offset
        self.tensors: dict[str, TensorInfo] = {}
        for p in parsed:
            self.tensors.update(p.tensors)
        self._sources = sources

    @classmethod
    def open(cls, path: str | Path) -> GGUFFile:
        """Open a GGUF file, byte split (any part) or gguf-split shard set (any shard)."""
        path = Path(path)
        byte_parts = _byte_split_parts(path)
        if byte_parts is not None:
            return cls._open_byte_split(byte_parts)
        shards = _shard_paths(path)
        if shards is not None:
            return cls._open_shards(shards)
        source = _Source([_Part(path)])
        try:
            parsed = _parse(source, path)
            n_split = parsed.metadata.get(Keys.SPLIT_COUNT, 1)
            if n_split != 1:
                raise SplitError(
                    path,
                    f"this file is one shard of a model split in {n_split} "
                    "(rename the shards back to NAME-0000i-of-0000N.gguf)",
                )
        except BaseException:
            source.close()
            raise
        return cls(path, [parsed], [source])

    @classmethod
    def _open_byte_split(cls, parts: list[Path]) -> GGUFFile:
        source = _Source([_Part(p) for p in parts])
        first = parts[0]
        try:
            try:
                parsed = _parse(source, first)
            except GGUFError as e:
                if "truncated" in e.message or "past the end" in e.message:
                    nxt = parts[-1].name[:-1] + chr(ord(parts[-1].name[-1]) + 1)
                    raise SplitError(first, f"{e.message}; is part {nxt} missing?") from e
                raise
            end = max((t.offset + t.n_bytes for t in parsed.tensors.values()), default=0)
            if source.size - end > parsed.alignment:
                raise SplitError(
                    first,
                    f"the parts hold {source.size} bytes but the model ends at byte {end}: "
                    "a part from another file?",
                )
        except BaseException:
            source.close()
            raise
        return cls(first, [parsed], [source])

    @classmethod
    def _open_shards(cls, shards: list[Path]) -> GGUFFile:
        sources: list[_Source] = []
        parsed: list[_Parsed] = []
        try:
            for i, p in enumerate(shards):
                sources.append(_Source([_Part(p)]))
                parsed.append(_parse(sources[-1], p))
                _check_shard(p, parsed[-1], i, len(shards))
            names: set[str] = set()
            for p, s in zip(shards, parsed, strict=True):
                dup = names.intersection(s.tensors)
                if dup:
                    raise SplitError(p, f"tensor {sorted(dup)[0]!r} appears in two shards")
                names.update(s.tensors)
            want = parsed[0].metadata.get(Keys.SPLIT_TENSORS_COUNT, len(names))
            if want != len(names):
                raise SplitError(
                    shards[0], f"the shards hold {len(names)} tensors, the first says {want}"
                )
        except BaseException:
            for s in sources:
                s.close()
            raise
        return cls(shards[0], parsed, sources)

    # ----------------------------------------------------------------------------------

    @property
    def architecture(self) -> str | None:
        return self.metadata.get(Keys.ARCHITECTURE)

    def check_types(self, allowed: Iterable[GGMLType] = ENGINE_WEIGHT_TYPES) -> None:
        """Raise ``UnsupportedTensorType`` for the first tensor whose type is not ``allowed``."""
        allowed = frozenset(allowed)
        for t in self.tensors.values():
            if t.ggml_type not in allowed:
                raise UnsupportedTensorType(self.path, t.name, t.ggml_type.name)

    def close(self) -> None:
        """Release the memory maps (views already handed out keep theirs alive)."""
        for s in self._sources:
            s.close()
        self._sources = []

    def __enter__(self) -> GGUFFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"GGUFFile({str(self.path)!r}, version={self.version}, "
            f"{len(self.metadata)} metadata keys, {len(self.tensors)} tensors)"
        )


def _check_shard(path: Path, parsed: _Parsed, index: int, count: int) -> None:
    md = parsed.metadata
    if count == 1 and Keys.SPLIT_COUNT not in md:
        return  # a whole model that is merely named NAME-00001-of-00001.gguf
    if md.get(Keys.SPLIT_COUNT) != count or md.get(Keys.SPLIT_NO) != index:
        raise SplitError(
            path,
            f"the file says {Keys.SPLIT_NO}={md.get(Keys.SPLIT_NO)!r} of {Keys.SPLIT_COUNT}="
            f"{md.get(Keys.SPLIT_COUNT)!r}, its name says shard {index + 1} of {count} "
            f"({Keys.SPLIT_NO}={index}): a shard from another model?",
        )


def open_gguf(path: str | Path) -> GGUFFile:
    """Same as ``GGUFFile.open(path)``."""
    return GGUFFile.open(path)
