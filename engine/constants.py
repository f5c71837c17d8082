"""GGUF and GGML format facts, each written once, as typed tables.

Everything the reader, the quantization kernels and the model loader need to know about
the file format lives here: the magic, the versions we read, the metadata value types, the
tensor (ggml) types with their block layout, and the metadata keys of the ``llama``
architecture.  Values follow ggml's ``ggml.h`` and gguf-py's ``constants.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

GGUF_MAGIC = b"GGUF"
GGUF_SUPPORTED_VERSIONS = (2, 3)
GGUF_DEFAULT_ALIGNMENT = 32


class GGUFValueType(IntEnum):
    """Type tag of a metadata value (``gguf_type`` in ggml)."""

    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


# Little-endian struct format of each fixed-size metadata value type.
GGUF_SCALAR_FORMAT: dict[GGUFValueType, str] = {
    GGUFValueType.UINT8: "<B",
    GGUFValueType.INT8: "<b",
    GGUFValueType.UINT16: "<H",
    GGUFValueType.INT16: "<h",
    GGUFValueType.UINT32: "<I",
    GGUFValueType.INT32: "<i",
    GGUFValueType.FLOAT32: "<f",
    GGUFValueType.BOOL: "<?",
    GGUFValueType.UINT64: "<Q",
    GGUFValueType.INT64: "<q",
    GGUFValueType.FLOAT64: "<d",
}


class GGMLType(IntEnum):
    """Tensor element type (``ggml_type`` in ggml.h). Gaps are types ggml removed."""

    F32 = 0
    F16 = 1
    Q4_0 = 2
    Q4_1 = 3
    Q5_0 = 6
    Q5_1 = 7
    Q8_0 = 8
    Q8_1 = 9
    Q2_K = 10
    Q3_K = 11
    Q4_K = 12
    Q5_K = 13
    Q6_K = 14
    Q8_K = 15
    IQ2_XXS = 16
    IQ2_XS = 17
    IQ3_XXS = 18
    IQ1_S = 19
    IQ4_NL = 20
    IQ3_S = 21
    IQ2_S = 22
    IQ4_XS = 23
    I8 = 24
    I16 = 25
    I32 = 26
    I64 = 27
    F64 = 28
    IQ1_M = 29
    BF16 = 30
    TQ1_0 = 34
    TQ2_0 = 35
    MXFP4 = 39


@dataclass(frozen=True)
class BlockLayout:
    """How a tensor type packs elements: ``block_size`` elements in ``type_size`` bytes."""

    block_size: int
    type_size: int


# Block layout of every type the engine can compute with (the llama.cpp model types).
# Super-block size of the K-quants is QK_K = 256.
QK_K = 256
GGML_BLOCK_LAYOUT: dict[GGMLType, BlockLayout] = {
    GGMLType.F32: BlockLayout(1, 4),
    GGMLType.F16: BlockLayout(1, 2),
    GGMLType.BF16: BlockLayout(1, 2),
    GGMLType.Q4_0: BlockLayout(32, 2 + 16),  # d:f16, qs:16 bytes of nibbles
    GGMLType.Q4_1: BlockLayout(32, 2 + 2 + 16),  # d:f16, m:f16, qs
    GGMLType.Q5_0: BlockLayout(32, 2 + 4 + 16),  # d:f16, qh:u32, qs
    GGMLType.Q5_1: BlockLayout(32, 2 + 2 + 4 + 16),  # d, m, qh, qs
    GGMLType.Q8_0: BlockLayout(32, 2 + 32),  # d:f16, qs:int8[32]
    GGMLType.Q8_1: BlockLayout(32, 4 + 4 + 32),  # d:f32, s:f32, qs:int8[32]
    GGMLType.Q2_K: BlockLayout(QK_K, QK_K // 16 + QK_K // 4 + 2 + 2),  # scales, qs, d, dmin
    GGMLType.Q3_K: BlockLayout(QK_K, QK_K // 8 + QK_K // 4 + 12 + 2),  # hmask, qs, scales, d
    GGMLType.Q4_K: BlockLayout(QK_K, 2 + 2 + 12 + QK_K // 2),  # d, dmin, scales, qs
    GGMLType.Q5_K: BlockLayout(QK_K, 2 + 2 + 12 + QK_K // 8 + QK_K // 2),  # d, dmin, scales, qh, qs
    GGMLType.Q6_K: BlockLayout(QK_K, QK_K // 2 + QK_K // 4 + QK_K // 16 + 2),  # ql, qh, scales, d
    GGMLType.Q8_K: BlockLayout(QK_K, 4 + QK_K + QK_K // 16 * 2),  # d:f32, qs, bsums:i16[16]
    GGMLType.IQ4_NL: BlockLayout(32, 2 + 16),  # d:f16, qs: 16 bytes of 4-bit indices
    # d:f16, scales_h:u16, scales_l[4], qs[128]
    GGMLType.IQ4_XS: BlockLayout(QK_K, 2 + 2 + QK_K // 64 + QK_K // 2),
}

# The 16 signed values a 4-bit IQ4_NL / IQ4_XS index selects (ggml's kvalues_iq4nl).
IQ4_VALUES = (-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113)

# Types the llama forward pass accepts for weights (what TheBloke's and SmolLM2's files hold).
ENGINE_WEIGHT_TYPES: frozenset[GGMLType] = frozenset(
    {
        GGMLType.F32,
        GGMLType.F16,
        GGMLType.BF16,
        GGMLType.Q4_0,
        GGMLType.Q4_1,
        GGMLType.Q5_0,
        GGMLType.Q5_1,
        GGMLType.Q8_0,
        GGMLType.Q2_K,
        GGMLType.Q3_K,
        GGMLType.Q4_K,
        GGMLType.Q5_K,
        GGMLType.Q6_K,
        GGMLType.IQ4_NL,
        GGMLType.IQ4_XS,
    }
)

# ``general.file_type`` (llama_ftype) → the name llama.cpp gives the mix.
LLAMA_FILE_TYPE_NAMES: dict[int, str] = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    19: "IQ2_XXS",
    20: "IQ2_XS",
    21: "Q2_K_S",
    22: "IQ3_XS",
    23: "IQ3_XXS",
    24: "IQ1_S",
    25: "IQ4_NL",
    26: "IQ3_S",
    27: "IQ3_M",
    28: "IQ2_S",
    29: "IQ2_M",
    30: "IQ4_XS",
    31: "IQ1_M",
    32: "BF16",
    36: "TQ1_0",
    37: "TQ2_0",
    38: "MXFP4_MOE",
}


class Keys:
    """Metadata keys.  ``{arch}`` is replaced by ``general.architecture``."""

    ARCHITECTURE = "general.architecture"
    ALIGNMENT = "general.alignment"
    FILE_TYPE = "general.file_type"
    NAME = "general.name"
    QUANTIZATION_VERSION = "general.quantization_version"

    CONTEXT_LENGTH = "{arch}.context_length"
    EMBEDDING_LENGTH = "{arch}.embedding_length"
    BLOCK_COUNT = "{arch}.block_count"
    FEED_FORWARD_LENGTH = "{arch}.feed_forward_length"
    VOCAB_SIZE = "{arch}.vocab_size"
    HEAD_COUNT = "{arch}.attention.head_count"
    HEAD_COUNT_KV = "{arch}.attention.head_count_kv"
    KEY_LENGTH = "{arch}.attention.key_length"
    VALUE_LENGTH = "{arch}.attention.value_length"
    RMS_EPS = "{arch}.attention.layer_norm_rms_epsilon"
    ROPE_DIMENSION_COUNT = "{arch}.rope.dimension_count"
    ROPE_FREQ_BASE = "{arch}.rope.freq_base"
    ROPE_SCALING_TYPE = "{arch}.rope.scaling.type"
    ROPE_SCALING_FACTOR = "{arch}.rope.scaling.factor"
    ROPE_SCALE_LINEAR = "{arch}.rope.scale_linear"  # older files
    SLIDING_WINDOW = "{arch}.attention.sliding_window"
    SLIDING_WINDOW_PATTERN = "{arch}.attention.sliding_window_pattern"
    ROPE_FREQ_BASE_SWA = "{arch}.rope.freq_base_swa"

    SPLIT_NO = "split.no"
    SPLIT_COUNT = "split.count"
    SPLIT_TENSORS_COUNT = "split.tensors.count"

    TOKENIZER_MODEL = "tokenizer.ggml.model"
    TOKENIZER_PRE = "tokenizer.ggml.pre"
    TOKENS = "tokenizer.ggml.tokens"
    TOKEN_TYPE = "tokenizer.ggml.token_type"
    SCORES = "tokenizer.ggml.scores"
    MERGES = "tokenizer.ggml.merges"
    BOS_ID = "tokenizer.ggml.bos_token_id"
    EOS_ID = "tokenizer.ggml.eos_token_id"
    EOT_ID = "tokenizer.ggml.eot_token_id"
    UNK_ID = "tokenizer.ggml.unknown_token_id"
    PAD_ID = "tokenizer.ggml.padding_token_id"
    ADD_BOS = "tokenizer.ggml.add_bos_token"
    ADD_EOS = "tokenizer.ggml.add_eos_token"
    ADD_SPACE_PREFIX = "tokenizer.ggml.add_space_prefix"
    CHAT_TEMPLATE = "tokenizer.chat_template"


class TokenType(IntEnum):
    """``tokenizer.ggml.token_type`` values (llama_token_type)."""

    UNDEFINED = 0
    NORMAL = 1
    UNKNOWN = 2
    CONTROL = 3
    USER_DEFINED = 4
    UNUSED = 5
    BYTE = 6


# Most dimensions a ggml tensor has (GGML_MAX_DIMS).
GGML_MAX_DIMS = 4

# Block layout of the tensor types the reader can size but the engine does not compute with
# (a file holding them opens; computing with them raises UnsupportedTensorType).
GGML_OTHER_BLOCK_LAYOUT: dict[GGMLType, BlockLayout] = {
    GGMLType.IQ2_XXS: BlockLayout(QK_K, 2 + QK_K // 4),
    GGMLType.IQ2_XS: BlockLayout(QK_K, 2 + QK_K // 4 + QK_K // 32),
    GGMLType.IQ3_XXS: BlockLayout(QK_K, 2 + QK_K // 4 + QK_K // 8),
    GGMLType.IQ1_S: BlockLayout(QK_K, 2 + QK_K // 8 + QK_K // 16),
    GGMLType.IQ3_S: BlockLayout(QK_K, 2 + QK_K // 4 + QK_K // 8 + QK_K // 32 + 4),
    GGMLType.IQ2_S: BlockLayout(QK_K, 2 + QK_K // 4 + QK_K // 16),
    GGMLType.I8: BlockLayout(1, 1),
    GGMLType.I16: BlockLayout(1, 2),
    GGMLType.I32: BlockLayout(1, 4),
    GGMLType.I64: BlockLayout(1, 8),
    GGMLType.F64: BlockLayout(1, 8),
    GGMLType.IQ1_M: BlockLayout(QK_K, QK_K // 8 + QK_K // 16 + QK_K // 32),
    GGMLType.TQ1_0: BlockLayout(QK_K, 2 + 4 * 13),
    GGMLType.TQ2_0: BlockLayout(QK_K, 2 + QK_K // 4),
    GGMLType.MXFP4: BlockLayout(32, 1 + 16),
}
