"""Decoding one token per sequence: the compiled step of every layer (:mod:`.step`), the same step
for several sequences at once (:mod:`.batch`), and continuous batching, which gathers concurrent
generations' steps into batched steps (:mod:`.batcher`)."""
