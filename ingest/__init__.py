"""Ingest: clinical guidelines (epfl-llm/guidelines schema) → chunks → embeddings → FAISS index."""

from pathlib import Path

# The demo corpus shipped with the project (262 real documents; see data/PROVENANCE.md).
SAMPLE_CORPUS = Path(__file__).parent / "data" / "guidelines-sample.jsonl"
