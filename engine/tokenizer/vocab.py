"""The vocabulary of a GGUF as llama.cpp loads it (``llama_vocab::impl::load``).

Token texts, scores and attributes, the special ids (BOS/EOS/EOT and the end-of-generation
set) and the tokenizer flags, with llama.cpp's defaults per vocab type and its rules that find
special tokens by their text. Each rule is a table here; the tokenizers use the result.

Where llama.cpp picks "the first token found" while walking a hash map (so in no defined
order), we pick the first text in the table order, which is deterministic.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from enum import IntFlag
from pathlib import Path
from typing import Any

import numpy as np

from engine.constants import Keys, TokenType
from engine.errors import GGUFError


class TokenAttr(IntFlag):
    """``llama_token_attr`` bits."""

    UNDEFINED = 0
    UNKNOWN = 1 << 0
    UNUSED = 1 << 1
    NORMAL = 1 << 2
    CONTROL = 1 << 3
    USER_DEFINED = 1 << 4
    BYTE = 1 << 5
    NORMALIZED = 1 << 6
    LSTRIP = 1 << 7  # when cut out as a special token, whitespace before it goes too
    RSTRIP = 1 << 8  # ... whitespace after it goes too


TOKEN_TYPE_ATTR: dict[int, TokenAttr] = {
    TokenType.UNDEFINED: TokenAttr.UNDEFINED,
    TokenType.NORMAL: TokenAttr.NORMAL,
    TokenType.UNKNOWN: TokenAttr.UNKNOWN,
    TokenType.CONTROL: TokenAttr.CONTROL,
    TokenType.USER_DEFINED: TokenAttr.USER_DEFINED,
    TokenType.UNUSED: TokenAttr.UNUSED,
    TokenType.BYTE: TokenAttr.BYTE,
}
_ATTR_OF_TYPE = np.array([int(TOKEN_TYPE_ATTR.get(t, 0)) for t in range(max(TokenType) + 1)])


@dataclass(frozen=True)
class VocabDefaults:
    """llama.cpp's defaults for a ``tokenizer.ggml.model`` before the metadata overrides them."""

    kind: str  # "spm" or "bpe"
    bos_id: int | None
    eos_id: int | None
    unk_id: int | None
    add_bos: bool
    add_space_prefix: bool
    clean_spaces: bool


VOCAB_DEFAULTS: dict[str, VocabDefaults] = {
    "llama": VocabDefaults("spm", 1, 2, 0, add_bos=True, add_space_prefix=True, clean_spaces=False),
    "gpt2": VocabDefaults(
        "bpe", 11, 11, None, add_bos=False, add_space_prefix=False, clean_spaces=True
    ),
}

# Special tokens llama.cpp recognises by their text (and forces to CONTROL).
EOT_TEXTS = (
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>",
    "<EOT>", "_<EOT>", "[EOT]", "<｜end▁of▁sentence｜>", "<end_of_utterance>",
)  # fmt: skip
EOM_TEXTS = ("<|eom_id|>",)
FIM_TEXTS: dict[str, tuple[str, ...]] = {
    "pre": ("<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>", "▁<PRE>",
            "<|code_prefix|>", "<|prefix|>"),
    "suf": ("<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>", "▁<SUF>",
            "<|code_suffix|>", "<|suffix|>"),
    "mid": ("<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>", "▁<MID>",
            "<|code_middle|>", "<|middle|>"),
    "pad": ("<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"),
    "rep": ("<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"),
    "sep": ("<|file_sep|>",),
}  # fmt: skip
FIM_EOG_KINDS = ("pad", "rep", "sep")  # FIM tokens that also end generation
EOG_TEXTS = frozenset({
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
    "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
    "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
    "<｜end▁of▁sentence｜>", "[e~[",
})  # fmt: skip


SPECIAL_ATTRS = int(TokenAttr.CONTROL | TokenAttr.USER_DEFINED | TokenAttr.UNKNOWN)


@dataclass(frozen=True)
class StripRule:
    """llama.cpp's whitespace-stripping attributes, set by model name (``general.name``,
    lowercased), pre-tokenizer or architecture: ``all_special`` on every special token, then
    ``tokens`` on those texts; ``False`` in ``unset`` takes it off again."""

    attr: TokenAttr
    names: tuple[str, ...] = ()  # substrings of the lowercased general.name
    pres: tuple[str, ...] = ()  # substrings of tokenizer.ggml.pre
    archs: tuple[str, ...] = ()  # substrings of general.architecture
    all_special: bool = False
    tokens: tuple[str, ...] = ()
    unset: tuple[str, ...] = ()


# The first rule that matches applies (llama.cpp's if / else-if chain).
STRIP_RULES = (
    StripRule(TokenAttr.LSTRIP, pres=("jina-v2-de", "jina-v2-es", "jina-v2-code"),
              archs=("nomic-bert-moe", "jina-bert-v3"), tokens=("<mask>",)),
    StripRule(TokenAttr.RSTRIP, names=("phi-3", "phi3"), all_special=True, tokens=("</s>",),
              unset=("<unk>", "<s>", "<|endoftext|>")),
    StripRule(TokenAttr.LSTRIP, names=("modern-bert",), tokens=("[MASK]",)),
)  # fmt: skip


def _apply_strip_rules(md: dict[str, Any], token_to_id: dict[str, int], attrs: list[int]) -> None:
    name = str(md.get(Keys.NAME) or "").lower()
    pre = str(md.get(Keys.TOKENIZER_PRE) or "")
    arch = str(md.get(Keys.ARCHITECTURE) or "")
    for rule in STRIP_RULES:
        hits = (any(n in name for n in rule.names) or any(p in pre for p in rule.pres)
                or any(a in arch for a in rule.archs))  # fmt: skip
        if not hits:
            continue
        bit = int(rule.attr)
        if rule.all_special:
            for i, a in enumerate(attrs):
                if a & SPECIAL_ATTRS:
                    attrs[i] = a | bit
        for text in rule.tokens:
            if text in token_to_id:
                attrs[token_to_id[text]] |= bit
        for text in rule.unset:
            if text in token_to_id:
                attrs[token_to_id[text]] &= ~bit
        return


@dataclass(frozen=True)
class PreTokenizer:
    """How llama.cpp pre-tokenizes a BPE vocab: the regex family (see ``bpe``) and
    the flags that ``tokenizer.ggml.pre`` sets."""

    family: str
    clean_spaces: bool = True
    ignore_merges: bool = False
    add_bos: bool | None = None  # None: the vocab-type default


_GPT2 = PreTokenizer("gpt2")
_SMOLLM = PreTokenizer("smollm")
_LLAMA3 = PreTokenizer("llama3", ignore_merges=True, add_bos=True)
_QWEN2 = PreTokenizer("qwen2", clean_spaces=False)
DEFAULT_PRE = PreTokenizer("default")

# tokenizer.ggml.pre → pre-tokenizer (the llama.cpp names whose regexes we implement).
PRE_TOKENIZERS: dict[str, PreTokenizer] = {
    "default": DEFAULT_PRE,
    **dict.fromkeys(("gpt-2", "phi-2", "mpt", "olmo", "jais", "jina-es", "jina-de"), _GPT2),
    **dict.fromkeys(("starcoder", "refact", "codeshell", "exaone", "minerva-7b"), _SMOLLM),
    "smollm": PreTokenizer("smollm", clean_spaces=False),
    "command-r": PreTokenizer("smollm", clean_spaces=False),
    **dict.fromkeys(
        ("llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2"),
        _LLAMA3,
    ),
    **dict.fromkeys(("qwen2", "deepseek-r1-qwen"), _QWEN2),
    "megrez": PreTokenizer("qwen2"),
}


def resolve_pre(md: dict[str, Any], path: Path | str, warn: bool = False) -> PreTokenizer:
    """The pre-tokenizer of a BPE vocab; an unknown name falls back to llama.cpp's default
    regexes (with a warning when ``warn``), a missing one too (as llama.cpp does)."""
    name = md.get(Keys.TOKENIZER_PRE)
    pre = PRE_TOKENIZERS.get(name) if name else DEFAULT_PRE
    if pre is None:
        if warn:
            warnings.warn(
                f"{path}: pre-tokenizer {name!r} is unknown; using llama.cpp's default one "
                "(tokenization may differ from llama.cpp's)",
                stacklevel=3,
            )
        pre = DEFAULT_PRE
    return pre


@dataclass
class Vocab:
    """Everything the tokenizers need from the metadata."""

    model: str  # tokenizer.ggml.model
    kind: str  # "spm" or "bpe"
    pre: str | None  # tokenizer.ggml.pre
    pre_tokenizer: PreTokenizer | None  # BPE only
    tokens: list[str]
    token_to_id: dict[str, int]
    scores: np.ndarray  # float32 (n_vocab,)
    attrs: list[int]  # TokenAttr bits per id
    bos_id: int | None
    eos_id: int | None
    eot_id: int | None
    unk_id: int | None
    eog_ids: frozenset[int]
    add_bos: bool
    add_eos: bool
    add_space_prefix: bool
    clean_spaces: bool
    merges: list[str]

    @property
    def n_vocab(self) -> int:
        return len(self.tokens)


def _defaults(md: dict[str, Any], path: Path) -> tuple[str, VocabDefaults]:
    model = md.get(Keys.TOKENIZER_MODEL)
    if model not in VOCAB_DEFAULTS:
        raise GGUFError(
            path,
            f"tokenizer model {model!r} is not supported (supported: {sorted(VOCAB_DEFAULTS)})",
        )
    return model, VOCAB_DEFAULTS[model]


def _array(md: dict[str, Any], key: str, n: int, path: Path) -> np.ndarray | None:
    v = md.get(key)
    if v is None:
        return None
    if not isinstance(v, np.ndarray) or v.ndim != 1 or v.dtype.kind not in "iuf":
        raise GGUFError(path, f"metadata {key!r} is not a numeric array")
    if len(v) < n:
        raise GGUFError(path, f"metadata {key!r} has {len(v)} entries for {n} tokens")
    return v[:n]


def _special_id(md: dict[str, Any], key: str, default: int | None, n: int) -> int | None:
    """A special id from the metadata, else llama.cpp's default; out-of-range ids are dropped."""
    if default is not None and default >= n:
        default = None
    v = md.get(key)
    if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < n:
        return v
    return default


def _find_by_text(token_to_id: dict[str, int], texts: tuple[str, ...]) -> int | None:
    for t in texts:
        i = token_to_id.get(t)
        if i is not None:
            return i
    return None


_BYTE_TOKEN = re.compile(r"<0x[0-9A-Fa-f]{2}>")


def _check_byte_tokens(tokens: list[str], types: np.ndarray, path: Path) -> None:
    """A BYTE token stands for the byte its text ``<0xXX>`` names (llama.cpp's
    ``token_to_byte`` reads ``text[3:5]`` as hex): any other text is a damaged vocabulary."""
    for i in np.flatnonzero(types == TokenType.BYTE).tolist():
        if not _BYTE_TOKEN.fullmatch(tokens[i]):
            raise GGUFError(path, f"token {i} {tokens[i]!r} has type BYTE but is not <0xXX>")


def _token_list(md: dict[str, Any], path: Path) -> list[str]:
    tokens = md.get(Keys.TOKENS)
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens[:1]):
        raise GGUFError(path, f"metadata {Keys.TOKENS!r} (the token list) is missing")
    if "" not in tokens:
        return tokens
    # llama.cpp names empty tokens so that they stay distinct
    return [t if t else f"[EMPTY_{i}]" for i, t in enumerate(tokens)]


def special_token_ids(md: dict[str, Any], path: Path | str = "<metadata>") -> tuple:
    """``(bos_id, eos_id, eot_id)`` as llama.cpp sets them (None when absent)."""
    path = Path(path)
    _, d = _defaults(md, path)
    tokens = md.get(Keys.TOKENS) or []
    n = len(tokens)
    bos = _special_id(md, Keys.BOS_ID, d.bos_id, n)
    eos = _special_id(md, Keys.EOS_ID, d.eos_id, n)
    eot = _special_id(md, Keys.EOT_ID, None, n)
    if eot is None:
        wanted = set(EOT_TEXTS)
        found = {t: i for i, t in enumerate(tokens) if t in wanted}
        eot = _find_by_text(found, EOT_TEXTS)
    return bos, eos, eot


def _token_ids(tokens: list[str], path: Path) -> dict[str, int]:
    """Each token's id; ``GGUFError`` naming the first duplicate and both its ids."""
    token_to_id = dict(zip(tokens, range(len(tokens)), strict=True))
    if len(token_to_id) != len(tokens):
        first: dict[str, int] = {}
        for i, t in enumerate(tokens):
            if first.setdefault(t, i) != i:
                raise GGUFError(
                    path, f"duplicate token {t!r} in the vocabulary (ids {first[t]}, {i})"
                )
    return token_to_id


def _token_attrs(md: dict[str, Any], tokens: list[str], path: Path) -> list[int]:
    """Each token's attributes from ``tokenizer.ggml.token_type`` (all NORMAL without it)."""
    types = _array(md, Keys.TOKEN_TYPE, len(tokens), path)
    if types is None:
        return [int(TokenAttr.NORMAL)] * len(tokens)
    _check_byte_tokens(tokens, types, path)
    known = (types >= 0) & (types < len(_ATTR_OF_TYPE))  # other values: UNDEFINED
    return _ATTR_OF_TYPE[np.where(known, types, TokenType.UNDEFINED)].tolist()


def _generation_ends(
    token_to_id: dict[str, int], eos: int | None, eot: int | None
) -> tuple[int | None, frozenset[int], set[int]]:
    """EOT (when the metadata names none), every end-of-generation id (EOS, EOT, EOM, the FIM
    ends) and the ids found by their texts as llama.cpp finds them (to be marked CONTROL)."""
    by_text: set[int] = set()

    def find(texts: tuple[str, ...]) -> int | None:
        i = _find_by_text(token_to_id, texts)
        if i is not None:
            by_text.add(i)
        return i

    if eot is None:
        eot = find(EOT_TEXTS)
    eom = find(EOM_TEXTS)
    fim = {kind: find(texts) for kind, texts in FIM_TEXTS.items()}
    eog = {fim[k] for k in FIM_EOG_KINDS if fim[k] is not None}
    for t in EOG_TEXTS:
        i = token_to_id.get(t)
        if i is not None:
            eog.add(i)
            by_text.add(i)
    eog.update(i for i in (eos, eot, eom) if i is not None)
    return eot, frozenset(eog), by_text


def read_vocab(md: dict[str, Any], path: Path | str) -> Vocab:
    """Read the vocabulary the way ``llama_vocab::impl::load`` does."""
    path = Path(path)
    model, d = _defaults(md, path)
    tokens = _token_list(md, path)
    n = len(tokens)
    token_to_id = _token_ids(tokens, path)
    scores = _array(md, Keys.SCORES, n, path)
    scores = np.zeros(n, np.float32) if scores is None else scores.astype(np.float32)
    attrs = _token_attrs(md, tokens, path)
    bos = _special_id(md, Keys.BOS_ID, d.bos_id, n)
    eos = _special_id(md, Keys.EOS_ID, d.eos_id, n)
    unk = _special_id(md, Keys.UNK_ID, d.unk_id, n)
    eot, eog, control = _generation_ends(token_to_id, eos, _special_id(md, Keys.EOT_ID, None, n))
    for i in control:
        attrs[i] |= int(TokenAttr.CONTROL)
    _apply_strip_rules(md, token_to_id, attrs)

    pre = resolve_pre(md, path, warn=True) if d.kind == "bpe" else None
    add_bos = default_add_bos(md)
    add_eos = bool(md.get(Keys.ADD_EOS, False))
    if add_bos and bos is None:
        raise GGUFError(path, f"{Keys.ADD_BOS} is true but there is no BOS token")
    if add_eos and eos is None:
        raise GGUFError(path, f"{Keys.ADD_EOS} is true but there is no EOS token")
    merges = md.get(Keys.MERGES)
    if d.kind == "bpe" and not isinstance(merges, list):
        raise GGUFError(path, f"a BPE vocabulary needs {Keys.MERGES!r} (a string array)")
    return Vocab(
        model=model,
        kind=d.kind,
        pre=md.get(Keys.TOKENIZER_PRE),
        pre_tokenizer=pre,
        tokens=tokens,
        token_to_id=token_to_id,
        scores=scores,
        attrs=attrs,
        bos_id=bos,
        eos_id=eos,
        eot_id=eot,
        unk_id=unk,
        eog_ids=eog,
        add_bos=add_bos,
        add_eos=add_eos,
        add_space_prefix=bool(md.get(Keys.ADD_SPACE_PREFIX, d.add_space_prefix)),
        clean_spaces=pre.clean_spaces if pre is not None else d.clean_spaces,
        merges=merges or [],
    )


def default_add_bos(md: dict[str, Any]) -> bool:
    """Whether llama.cpp prepends BOS for this vocab: ``tokenizer.ggml.add_bos_token``, else
    the pre-tokenizer's or the vocab type's default."""
    if Keys.ADD_BOS in md:
        return bool(md[Keys.ADD_BOS])
    d = VOCAB_DEFAULTS.get(md.get(Keys.TOKENIZER_MODEL))
    if d is None:
        return False
    if d.kind == "bpe":
        pre = resolve_pre(md, "<metadata>")
        if pre.add_bos is not None:
            return pre.add_bos
    return d.add_bos
