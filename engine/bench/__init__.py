"""Benchmarks of the engine, never run by it: ``python -m engine bench`` (:mod:`.speed`: prompt
and generation speed, memory, side by side with llama.cpp) and ``python -m engine.bench.kernels``
(:mod:`.kernels`: the matrix kernels alone)."""
