"""Our GGUF inference engine for Llama-architecture models (numpy + numba only)."""
