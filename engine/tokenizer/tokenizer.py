"""``Tokenizer``: text ↔ token ids exactly as llama.cpp's ``llama_tokenize`` / ``llama_detokenize``.

* ``encode(text, add_bos, special)``: special tokens are cut out first (longest first; control
  tokens only when ``special``, user-defined tokens always), then each text fragment goes to the
  SentencePiece (``spm``) or byte-level BPE (``bpe``) model. ``add_bos`` is
  llama.cpp's ``add_special``: it prepends BOS *when the model asks for it*
  (``tokenizer.ggml.add_bos_token``; Llama-2 yes, SmolLM2 no) and appends EOS when it asks
  for that.
* ``decode(ids, special=False)``: llama.cpp's detokenize with ``remove_special=False`` and
  ``unparse_special=special``: control tokens (``<s>``, ``<|im_end|>``) render as nothing unless
  ``special=True``; with a SentencePiece vocab the leading space of the first token is dropped
  (the space ``encode`` put there). One deliberate difference: llama.cpp keeps that space when
  the ids start with BOS (``[<s>, ▁Hello]`` → ``" Hello"``); here an unrendered leading BOS is
  passed over, so ``decode(encode(text))`` gives ``text`` back with or without BOS (as
  llama-cpp-python does). Bytes that are not valid UTF-8 become U+FFFD.
* ``StreamDecoder``: the same, one id at a time, never emitting half a UTF-8 character.
"""

from __future__ import annotations

import codecs
from pathlib import Path

from engine.errors import EngineError
from engine.gguf import GGUFFile
from engine.tokenizer.bpe import BpeModel, bpe_token_bytes
from engine.tokenizer.spm import SPACE, SpmModel
from engine.tokenizer.vocab import SPECIAL_ATTRS, TokenAttr, Vocab, read_vocab

__all__ = ["InvalidTokenId", "StreamDecoder", "Tokenizer"]

_SPECIAL = SPECIAL_ATTRS
_HIDDEN = int(TokenAttr.CONTROL | TokenAttr.UNKNOWN)  # rendered only with special=True
_LSTRIP, _RSTRIP = int(TokenAttr.LSTRIP), int(TokenAttr.RSTRIP)
_C_SPACE = " \t\n\v\f\r"  # C's isspace, which llama.cpp strips with


class InvalidTokenId(EngineError, ValueError):
    """A token id outside the vocabulary."""

    def __init__(self, token_id: int, n_vocab: int) -> None:
        self.token_id, self.n_vocab = token_id, n_vocab
        super().__init__(f"token id {token_id} is outside the vocabulary (0..{n_vocab - 1})")


class Tokenizer:
    """The tokenizer of a GGUF vocabulary (SentencePiece ``llama`` or byte-level BPE ``gpt2``)."""

    def __init__(self, vocab: Vocab) -> None:
        self.vocab = vocab
        self._model = SpmModel(vocab) if vocab.kind == "spm" else BpeModel(vocab)
        tokens, attrs = vocab.tokens, vocab.attrs
        specials = [i for i, a in enumerate(attrs) if a & _SPECIAL]
        # llama.cpp tries longer special tokens first (byte length); ties in id order
        self._specials = sorted(
            specials, key=lambda i: -len(tokens[i].encode("utf-8", "surrogatepass"))
        )
        self._pieces: dict[int, bytes] = {}

    @classmethod
    def from_gguf(cls, gguf: GGUFFile) -> Tokenizer:
        return cls(read_vocab(gguf.metadata, gguf.path))

    @classmethod
    def from_file(cls, path: str | Path) -> Tokenizer:
        with GGUFFile.open(path) as g:
            return cls.from_gguf(g)

    # -- properties ---------------------------------------------------------------------

    @property
    def kind(self) -> str:
        """``"spm"`` or ``"bpe"``."""
        return self.vocab.kind

    @property
    def n_vocab(self) -> int:
        return self.vocab.n_vocab

    @property
    def bos_id(self) -> int | None:
        return self.vocab.bos_id

    @property
    def eos_id(self) -> int | None:
        return self.vocab.eos_id

    @property
    def eot_id(self) -> int | None:
        return self.vocab.eot_id

    @property
    def eog_ids(self) -> frozenset[int]:
        """Tokens that end generation (EOS, EOT and llama.cpp's end-of-generation texts)."""
        return self.vocab.eog_ids

    @property
    def add_bos(self) -> bool:
        """Whether the model asks for a BOS token in front of a prompt."""
        return self.vocab.add_bos

    @property
    def special_tokens(self) -> dict[int, str]:
        """id → text of the control and user-defined tokens."""
        mask = int(TokenAttr.CONTROL | TokenAttr.USER_DEFINED)
        return {i: self.vocab.tokens[i] for i, a in enumerate(self.vocab.attrs) if a & mask}

    def is_eog(self, token_id: int) -> bool:
        return token_id in self.vocab.eog_ids

    def token_text(self, token_id: int) -> str:
        """The token's text as stored in the vocab (``▁Hello``, ``ĠHello``, ``<0x0A>``)."""
        self._check(token_id)
        return self.vocab.tokens[token_id]

    def token_id(self, text: str) -> int | None:
        """The id of the token whose vocab text is ``text``, if any."""
        return self.vocab.token_to_id.get(text)

    # -- encode -------------------------------------------------------------------------

    def encode(self, text: str, add_bos: bool = True, special: bool = False) -> list[int]:
        """Token ids of ``text`` (see the module docstring for ``add_bos`` and ``special``)."""
        v = self.vocab
        out: list[int] = []
        if add_bos and v.add_bos:
            out.append(v.bos_id)
        fragments = self._partition(_clean_surrogates(text), special)
        if v.kind == "spm":
            prev_special = (
                True  # llama.cpp: a space goes in front of the text after a special token
            )
            for f in fragments:
                if isinstance(f, int):
                    out.append(f)
                    prev_special = True
                    continue
                if v.add_space_prefix and prev_special:
                    f = " " + f
                out.extend(self._model.encode(f.replace(" ", SPACE)))
                prev_special = False
        else:
            for f in fragments:
                if isinstance(f, int):
                    out.append(f)
                else:
                    out.extend(self._model.encode(f))
        if add_bos and v.add_eos:
            out.append(v.eos_id)
        return out

    def _partition(self, text: str, special: bool) -> list[str | int]:
        """Cut special tokens out of ``text`` (llama.cpp's ``tokenizer_st_partition``); a token
        with LSTRIP / RSTRIP takes the whitespace before / after it along."""
        fragments: list[str | int] = [text] if text else []
        tokens, attrs = self.vocab.tokens, self.vocab.attrs
        for tid in self._specials:
            attr = attrs[tid]
            if not special and attr & _HIDDEN:
                continue
            t = tokens[tid]
            if not any(isinstance(f, str) and t in f for f in fragments):
                continue
            out: list[str | int] = []
            for f in fragments:
                if isinstance(f, int) or t not in f:
                    out.append(f)
                    continue
                parts = f.split(t)
                for k, part in enumerate(parts):
                    if k:
                        out.append(tid)
                        if attr & _RSTRIP:
                            part = part.lstrip(_C_SPACE)
                    if attr & _LSTRIP and k < len(parts) - 1:
                        part = part.rstrip(_C_SPACE)
                    if part:
                        out.append(part)
            fragments = out
        return fragments

    # -- decode -------------------------------------------------------------------------

    def token_to_bytes(self, token_id: int) -> bytes:
        """The bytes the token contributes when decoding with ``special=True`` (llama.cpp's
        ``token_to_piece``): ``▁`` → space (SPM), byte-level characters → bytes (BPE),
        ``<0xXX>`` → that byte, control/user-defined tokens → their text."""
        piece = self._pieces.get(token_id)
        if piece is None:
            self._check(token_id)
            piece = self._piece(token_id)
            self._pieces[token_id] = piece
        return piece

    def _piece(self, token_id: int) -> bytes:
        text, attr = self.vocab.tokens[token_id], self.vocab.attrs[token_id]
        if attr & _SPECIAL:
            return text.encode("utf-8", "surrogateescape")
        if attr & TokenAttr.NORMAL:
            if self.vocab.kind == "spm":
                return text.replace(SPACE, " ").encode("utf-8", "surrogateescape")
            return bpe_token_bytes(text)
        if attr & TokenAttr.BYTE:
            return bytes([int(text[3:5], 16)])
        return b""  # unused / undefined tokens render as nothing

    def piece(self, token_id: int, special: bool = False) -> bytes:
        """The token's bytes as ``decode`` renders it on its own (empty for a control token
        unless ``special``)."""
        if not special and self.vocab.attrs[self._check(token_id)] & _HIDDEN:
            return b""
        return self.token_to_bytes(token_id)

    def decode_bytes(self, ids: list[int], special: bool = False) -> bytes:
        """The raw bytes of ``decode`` (may end inside a UTF-8 character)."""
        remove_space = self.vocab.add_space_prefix
        parts = []
        for k, i in enumerate(ids):
            p = self.piece(i, special)
            if remove_space and p[:1] == b" ":
                p = p[1:]
            remove_space = remove_space and k == 0 and not p and i == self.vocab.bos_id
            parts.append(p)
        out = b"".join(parts)
        return _clean_spaces(out) if self.vocab.clean_spaces else out

    def decode(self, ids: list[int], special: bool = False) -> str:
        """The text of ``ids`` (see the module docstring)."""
        return self.decode_bytes([int(i) for i in ids], special).decode("utf-8", "replace")

    def stream_decoder(self, special: bool = False) -> StreamDecoder:
        return StreamDecoder(self, special)

    def _check(self, token_id: int) -> int:
        if not 0 <= token_id < self.vocab.n_vocab:
            raise InvalidTokenId(token_id, self.vocab.n_vocab)
        return token_id

    def __repr__(self) -> str:
        pre = f", pre={self.vocab.pre!r}" if self.vocab.kind == "bpe" else ""
        return f"Tokenizer({self.vocab.model!r}{pre}, n_vocab={self.n_vocab})"


class StreamDecoder:
    """Decode ids one at a time: ``feed(id)`` returns the new complete text (possibly ``""``),
    ``flush()`` the rest. The concatenation equals ``tokenizer.decode(ids, special)``."""

    # llama.cpp's space cleaning looks up to 3 bytes ahead, so that much is held back
    _CLEAN_LOOKAHEAD = 3
    _KEEP_RAW = 256  # raw bytes kept before the sent head is dropped

    def __init__(self, tokenizer: Tokenizer, special: bool = False) -> None:
        self.tokenizer = tokenizer
        self.special = special
        self._utf8 = codecs.getincrementaldecoder("utf-8")("replace")
        self._remove_space = tokenizer.vocab.add_space_prefix
        self._first = True
        self._clean = tokenizer.vocab.clean_spaces
        self._raw = bytearray()  # bytes not yet known sent (only kept when cleaning spaces)
        self._sent = 0  # cleaned bytes already passed to the UTF-8 decoder

    def feed(self, token_id: int) -> str:
        token_id = int(token_id)
        p = self.tokenizer.piece(token_id, self.special)
        if self._remove_space and p[:1] == b" ":
            p = p[1:]
        first, self._first = self._first, False
        bos = self.tokenizer.bos_id
        self._remove_space = self._remove_space and first and not p and token_id == bos
        if not self._clean:
            return self._utf8.decode(p)
        self._raw += p
        cleaned = _clean_spaces(bytes(self._raw))
        stable = max(self._sent, len(cleaned) - self._CLEAN_LOOKAHEAD)
        new, self._sent = cleaned[self._sent : stable], stable
        if len(self._raw) > self._KEEP_RAW:
            self._drop_sent_head()
        return self._utf8.decode(new)

    def _drop_sent_head(self) -> None:
        """Forget the raw bytes already sent, so each ``feed`` costs O(piece), not O(text).

        Every cleaning pattern starts with a space and spans at most 4 bytes, and only spaces
        are removed; so after 3 bytes without a space, ``clean(a + b) = clean(a) + clean(b)``.
        """
        raw = self._raw
        cut = len(raw) - 8
        while cut >= 3 and 0x20 in raw[cut - 3 : cut]:
            cut -= 1
        if cut < 3:
            return
        head = _clean_spaces(bytes(raw[:cut]))
        if len(head) <= self._sent:
            del raw[:cut]
            self._sent -= len(head)

    def flush(self) -> str:
        rest = b""
        if self._clean:
            cleaned = _clean_spaces(bytes(self._raw))
            rest, self._sent = cleaned[self._sent :], len(cleaned)
        return self._utf8.decode(rest, final=True)


def _clean_surrogates(text: str) -> str:
    """Lone surrogates cannot come from UTF-8 input; they become U+FFFD."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def _clean_spaces(text: bytes) -> bytes:
    """llama.cpp's ``clean_up_tokenization_spaces`` (three in-place passes over the bytes)."""
    t = bytearray(text)
    # 1: " ?", " !", " .", " ," lose the space
    n, total = len(t), min(len(t), 1)
    for i in range(1, n):
        x = t[i]
        if t[i - 1] == 0x20 and x in b"?!.,":
            total -= 1
        t[total] = x
        total += 1
    # 2: " ' " becomes "'"
    n, total, i = total, min(total, 1), 1
    while i < n:
        x = t[i]
        if x == 0x27 and i + 1 < n and t[i - 1] == 0x20 and t[i + 1] == 0x20:
            total -= 1
            i += 1
            t[i] = 0
        t[total] = x
        total += 1
        i += 1
    # 3: " 's", " 'm", " 're", " 've" lose the space
    n, total = total, min(total, 1)
    for i in range(1, n):
        x = t[i]
        if t[i - 1] == 0x20 and x == 0x27 and i + 1 < n:
            x1 = t[i + 1]
            if x1 in b"sm" or (i + 2 < n and (x1, t[i + 2]) in ((0x72, 0x65), (0x76, 0x65))):
                total -= 1
        t[total] = x
        total += 1
    return bytes(t[:total])
