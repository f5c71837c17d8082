"""Craft small GGUF files byte by byte, valid or broken on purpose, for the reader's tests.

Independent of ``engine.gguf`` (it writes the format from the spec), so a reader bug cannot
hide behind a writer with the same bug; the valid files are also checked against gguf-py.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.constants import GGML_BLOCK_LAYOUT, GGML_OTHER_BLOCK_LAYOUT, GGMLType, GGUFValueType

V = GGUFValueType
_SCALAR = {V.UINT8: "<B", V.INT8: "<b", V.UINT16: "<H", V.INT16: "<h", V.UINT32: "<I",
           V.INT32: "<i", V.FLOAT32: "<f", V.BOOL: "<?", V.UINT64: "<Q", V.INT64: "<q",
           V.FLOAT64: "<d"}  # fmt: skip
_NP_TYPE = {np.dtype(np.uint8): V.UINT8, np.dtype(np.int8): V.INT8, np.dtype(np.uint16): V.UINT16,
            np.dtype(np.int16): V.INT16, np.dtype(np.uint32): V.UINT32, np.dtype(np.int32): V.INT32,
            np.dtype(np.float32): V.FLOAT32, np.dtype(np.bool_): V.BOOL,
            np.dtype(np.uint64): V.UINT64, np.dtype(np.int64): V.INT64,
            np.dtype(np.float64): V.FLOAT64}  # fmt: skip


def gguf_string(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def infer_type(value: Any) -> V:
    if isinstance(value, bool):
        return V.BOOL
    if isinstance(value, int):
        return V.UINT32 if 0 <= value < 2**32 else V.INT64
    if isinstance(value, float):
        return V.FLOAT32
    if isinstance(value, str | bytes):
        return V.STRING
    return V.ARRAY


def value_bytes(value: Any, vtype: V | None = None) -> bytes:
    """The encoding of a value (without its type tag)."""
    vtype = infer_type(value) if vtype is None else vtype
    if vtype == V.STRING:
        return gguf_string(value)
    if vtype != V.ARRAY:
        return struct.pack(_SCALAR[vtype], value)
    if isinstance(value, np.ndarray):
        etype = _NP_TYPE[value.dtype]
        return (
            struct.pack("<IQ", etype, len(value))
            + value.astype(value.dtype.newbyteorder("<")).tobytes()
        )
    etype = infer_type(value[0]) if value else V.UINT8
    body = b"".join(value_bytes(v, etype) for v in value)
    return struct.pack("<IQ", etype, len(value)) + body


def type_tag(value: Any, vtype: V | None = None) -> bytes:
    return struct.pack("<I", infer_type(value) if vtype is None else vtype)


def tensor_nbytes(shape: tuple[int, ...], ggml_type: GGMLType) -> int:
    layout = GGML_BLOCK_LAYOUT.get(ggml_type) or GGML_OTHER_BLOCK_LAYOUT[ggml_type]
    n = int(np.prod(shape))
    return n // layout.block_size * layout.type_size


@dataclass
class CraftTensor:
    name: str
    shape: tuple[int, ...]
    ggml_type: int
    data: bytes
    offset: int | None = None  # relative to the data section; None: next aligned slot


@dataclass
class GGUFCraft:
    """A GGUF under construction. ``to_bytes()`` lays it out like llama.cpp's writer."""

    version: int = 3
    magic: bytes = b"GGUF"
    alignment: int = 32
    kvs: list[tuple[str, bytes]] = field(default_factory=list)  # key, type tag + value
    tensors: list[CraftTensor] = field(default_factory=list)

    def add(self, key: str, value: Any, vtype: V | None = None) -> GGUFCraft:
        self.kvs.append((key, type_tag(value, vtype) + value_bytes(value, vtype)))
        return self

    def add_raw(self, key: str, raw: bytes) -> GGUFCraft:
        """A metadata entry whose type tag and value bytes are given as is."""
        self.kvs.append((key, raw))
        return self

    def add_tensor(
        self,
        name: str,
        shape: tuple[int, ...],
        ggml_type: int = GGMLType.F32,
        data: bytes | None = None,
        seed: int = 0,
    ) -> GGUFCraft:
        if data is None:
            n = tensor_nbytes(shape, GGMLType(ggml_type))
            data = np.random.default_rng(seed + len(self.tensors)).bytes(n)
        self.tensors.append(CraftTensor(name, tuple(shape), int(ggml_type), data))
        return self

    def _align(self, n: int) -> int:
        return -(-n // self.alignment) * self.alignment

    def layout(self) -> list[int]:
        offsets, pos = [], 0
        for t in self.tensors:
            off = t.offset if t.offset is not None else pos
            offsets.append(off)
            pos = self._align(off + len(t.data))
        return offsets

    def header_bytes(self, n_tensors: int | None = None, n_kv: int | None = None) -> bytes:
        out = [self.magic, struct.pack("<I", self.version)]
        out.append(struct.pack("<QQ", len(self.tensors) if n_tensors is None else n_tensors,
                               len(self.kvs) if n_kv is None else n_kv))  # fmt: skip
        out += [gguf_string(k) + v for k, v in self.kvs]
        for t, off in zip(self.tensors, self.layout(), strict=True):
            out.append(gguf_string(t.name) + struct.pack("<I", len(t.shape)))
            out.append(b"".join(struct.pack("<Q", d) for d in t.shape))
            out.append(struct.pack("<IQ", t.ggml_type, off))
        return b"".join(out)

    def to_bytes(self) -> bytes:
        head = self.header_bytes()
        buf = bytearray(head + bytes(self._align(len(head)) - len(head)))
        base = len(buf)
        for t, off in zip(self.tensors, self.layout(), strict=True):
            end = base + off + len(t.data)
            if len(buf) < end:
                buf += bytes(end - len(buf))
            buf[base + off : end] = t.data
        if self.tensors:
            buf += bytes(self._align(len(buf)) - len(buf))
        return bytes(buf)

    def write(self, path: Path) -> Path:
        path.write_bytes(self.to_bytes())
        return path


def llama_craft(
    n_vocab: int = 8, n_embd: int = 64, n_layer: int = 1, arch: str = "llama"
) -> GGUFCraft:
    """A tiny llama-shaped model: metadata, a small SPM vocab and F32/Q8_0 tensors."""
    tokens = ["<unk>", "<s>", "</s>", "▁a", "▁b", "a", "b", "▁"][:n_vocab]
    tokens += [f"<0x{i:02X}>" for i in range(n_vocab - len(tokens))]
    types = [2, 3, 3] + [1] * (n_vocab - 3)
    c = GGUFCraft()
    c.add("general.architecture", arch).add("general.name", "crafted")
    c.add(f"{arch}.context_length", 128).add(f"{arch}.embedding_length", n_embd)
    c.add(f"{arch}.block_count", n_layer).add(f"{arch}.feed_forward_length", 2 * n_embd)
    c.add(f"{arch}.attention.head_count", 4).add(f"{arch}.attention.head_count_kv", 2)
    c.add(f"{arch}.attention.layer_norm_rms_epsilon", 1e-5)
    c.add("general.file_type", 7)
    c.add("tokenizer.ggml.model", "llama").add("tokenizer.ggml.tokens", tokens)
    c.add("tokenizer.ggml.scores", np.linspace(0, -1, n_vocab, dtype=np.float32))
    c.add("tokenizer.ggml.token_type", np.array(types, np.int32))
    c.add_tensor("token_embd.weight", (n_embd, n_vocab), GGMLType.Q8_0)
    for i in range(n_layer):
        c.add_tensor(f"blk.{i}.attn_norm.weight", (n_embd,), GGMLType.F32)
        c.add_tensor(f"blk.{i}.attn_q.weight", (n_embd, n_embd), GGMLType.Q8_0)
    c.add_tensor("output_norm.weight", (n_embd,), GGMLType.F32)
    return c
