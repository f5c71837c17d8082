"""The index folder (SQLite + manifest + FAISS view), one job per file: :mod:`.store` opens and
joins it (:class:`IndexStore`), :mod:`.sql` holds the schema and shared SQL, :mod:`.lock` the
write lock, :mod:`.generations` staging and publishing, :mod:`.reads` reads of the published
generation, :mod:`.view` the FAISS view, :mod:`.check` the checks on open."""

from .check import check_model
from .reads import Hit, StoredChunk
from .sql import DB_NAME, VISIBLE, VISIBLE_AT
from .store import IndexStore

__all__ = ["DB_NAME", "VISIBLE", "VISIBLE_AT", "Hit", "IndexStore", "StoredChunk", "check_model"]
