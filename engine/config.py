"""``LlamaConfig``: hyper-parameters of a ``llama``-architecture GGUF, read from its metadata."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

from engine.constants import LLAMA_FILE_TYPE_NAMES, SUPPORTED_ARCHITECTURES, Keys
from engine.errors import GGUFError, UnsupportedArchitecture
from engine.gguf import GGUFFile
from engine.tokenizer.vocab import default_add_bos, special_token_ids

OUTPUT_TENSOR = "output.weight"  # absent when the output projection is tied to token_embd


@dataclass(frozen=True)
class LlamaConfig:
    """Hyper-parameters of a Llama-architecture model (Llama-2/Meditron, SmolLM2)."""

    architecture: str
    name: str | None
    n_vocab: int
    n_ctx_train: int
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ff: int
    rms_eps: float
    rope_freq_base: float
    rope_scale: float  # linear factor: positions are divided by it (1.0 = no scaling)
    rope_scaling_type: str | None
    rope_dim: int
    bos_id: int | None
    eos_id: int | None
    eot_id: int | None
    add_bos: bool
    chat_template: str | None
    tied_output: bool
    file_type: str | None  # llama.cpp's name of the quantization mix, e.g. "Q4_K_M"

    @property
    def n_gqa(self) -> int:
        """Query heads per KV head."""
        return self.n_head // self.n_head_kv

    @classmethod
    def from_gguf(cls, gguf: GGUFFile) -> LlamaConfig:
        """Read the config; ``UnsupportedArchitecture`` unless ``general.architecture`` is llama."""
        md = gguf.metadata
        arch = md.get(Keys.ARCHITECTURE)
        if arch not in SUPPORTED_ARCHITECTURES:
            raise UnsupportedArchitecture(gguf.path, str(arch))
        r = _Reader(gguf, arch)
        n_embd = r.positive(Keys.EMBEDDING_LENGTH)
        n_head = r.positive(Keys.HEAD_COUNT)
        n_head_kv = r.positive(Keys.HEAD_COUNT_KV, default=n_head)
        if n_head % n_head_kv:
            raise GGUFError(gguf.path, f"{n_head} heads is not a multiple of {n_head_kv} KV heads")
        if Keys.KEY_LENGTH.format(arch=arch) not in md and n_embd % n_head:
            raise GGUFError(gguf.path, f"n_embd {n_embd} is not a multiple of {n_head} heads")
        head_dim = r.positive(Keys.KEY_LENGTH, default=n_embd // n_head)
        scale, scaling_type = _rope_scale(r)
        bos, eos, eot = special_token_ids(md, gguf.path)
        return cls(
            architecture=arch,
            name=md.get(Keys.NAME),
            n_vocab=_n_vocab(r),
            n_ctx_train=r.positive(Keys.CONTEXT_LENGTH),
            n_embd=n_embd,
            n_layer=r.positive(Keys.BLOCK_COUNT),
            n_head=n_head,
            n_head_kv=n_head_kv,
            head_dim=head_dim,
            n_ff=r.positive(Keys.FEED_FORWARD_LENGTH),
            rms_eps=float(r.number(Keys.RMS_EPS)),
            rope_freq_base=float(r.number(Keys.ROPE_FREQ_BASE, default=10000.0)),
            rope_scale=scale,
            rope_scaling_type=scaling_type,
            rope_dim=r.positive(Keys.ROPE_DIMENSION_COUNT, default=head_dim),
            bos_id=bos,
            eos_id=eos,
            eot_id=eot,
            add_bos=default_add_bos(md),
            chat_template=md.get(Keys.CHAT_TEMPLATE),
            tied_output=OUTPUT_TENSOR not in gguf.tensors,
            file_type=LLAMA_FILE_TYPE_NAMES.get(md.get(Keys.FILE_TYPE, -1)),
        )


class _Reader:
    """Typed access to ``{arch}.*`` keys with errors naming the file and key."""

    def __init__(self, gguf: GGUFFile, arch: str) -> None:
        self.gguf, self.arch = gguf, arch

    def get(self, key: str, default: Any = None) -> Any:
        return self.gguf.metadata.get(key.format(arch=self.arch), default)

    def number(self, key: str, default: float | None = None) -> float:
        v = self.get(key, default)
        name = key.format(arch=self.arch)
        if v is None:
            raise GGUFError(self.gguf.path, f"metadata key {name!r} is missing")
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise GGUFError(self.gguf.path, f"metadata key {name!r} = {v!r} is not a number")
        return v

    def positive(self, key: str, default: int | None = None) -> int:
        v = self.number(key, default)
        if not isinstance(v, int) or v <= 0:
            name = key.format(arch=self.arch)
            raise GGUFError(
                self.gguf.path, f"metadata key {name!r} = {v!r} is not a positive integer"
            )
        return v


def _n_vocab(r: _Reader) -> int:
    n = r.get(Keys.VOCAB_SIZE)
    if n is None:
        tokens = r.gguf.metadata.get(Keys.TOKENS)
        if tokens is None:
            raise GGUFError(r.gguf.path, "neither a vocab size nor a token list in the metadata")
        return len(tokens)
    return r.positive(Keys.VOCAB_SIZE)


def _rope_scale(r: _Reader) -> tuple[float, str | None]:
    """Linear RoPE factor as llama.cpp reads it: ``rope.scaling.factor``, else the older
    ``rope.scale_linear``; 0 or absent means 1; scaling type ``none`` disables it."""
    scaling_type = r.get(Keys.ROPE_SCALING_TYPE)
    factor = r.get(Keys.ROPE_SCALING_FACTOR)
    if factor is None:
        factor = r.get(Keys.ROPE_SCALE_LINEAR)
    factor = float(factor or 0.0)
    if factor < 0:
        raise GGUFError(r.gguf.path, f"RoPE scaling factor {factor} is negative")
    if scaling_type == "none" or factor == 0.0:
        return 1.0, scaling_type
    if scaling_type not in (None, "linear"):
        warnings.warn(
            f"{r.gguf.path}: RoPE scaling type {scaling_type!r} is applied as linear scaling",
            stacklevel=3,
        )
    return factor, scaling_type
