"""Tokenizers of GGUF vocabularies, exactly as llama.cpp's ``llama-vocab.cpp``.

* ``vocab``: the vocabulary as llama.cpp loads it (tokens, attributes, special ids, flags);
* ``spm``: SentencePiece merges (``tokenizer.ggml.model`` = ``llama``: Llama-2, Phi-3, Gemma);
* ``bpe``: byte-level BPE with llama.cpp's pre-tokenizer regexes (``gpt2``: GPT-2, SmolLM2,
  Llama-3, Qwen2);
* ``tokenizer``: ``Tokenizer`` (special-token partition, encode, decode) and ``StreamDecoder``.

A vocabulary loads on its own, whatever the file's architecture: ``Tokenizer.from_file`` reads
only the ``tokenizer.*`` metadata.
"""

from engine.tokenizer.tokenizer import InvalidTokenId, StreamDecoder, Tokenizer

__all__ = ["InvalidTokenId", "StreamDecoder", "Tokenizer"]
