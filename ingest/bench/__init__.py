"""Benchmarks of the ingest pipeline and of retrieval; never run by the pipeline itself.

``python -m ingest.bench speed | anchor-eval | latency | variants | ann`` (:mod:`.cli`): ingest
speed and retrieval quality against the LangChain recipe (:mod:`.anchor`), search latency,
several search settings on the same questions, IVF recall.
``python -m ingest.bench.distributed`` (:mod:`.distributed`): a Ray build against a
single-process build at equal cores.
"""
