"""Typed errors of the ingest package, raised at its boundaries (input file, record, index folder).

Each carries the bad value; ``str(error)`` is a complete sentence naming what is wrong and where.
"""

from __future__ import annotations

from pathlib import Path


class IngestError(Exception):
    """Base class of every error the ingest package raises on bad input or a bad request."""


class CorpusError(IngestError):
    """An input that cannot be read at all (missing path, unknown format, dataset unreachable)."""

    def __init__(self, source: str | Path, message: str) -> None:
        self.source = str(source)
        self.message = message
        super().__init__(f"{self.source}: {message}")


class IndexFolderError(IngestError):
    """An index folder that is not usable: missing, not an index, corrupt, unsupported version.

    ``fix`` is the command that repairs it, when one is known.
    """

    fix: str | None = None

    def __init__(self, path: str | Path, message: str) -> None:
        self.path = Path(path)
        self.message = message
        super().__init__(f"index {self.path}: {message}")

    @property
    def what(self) -> str:
        """What is wrong (for a page that shows ``fix`` apart)."""
        return self.message


class IndexDamaged(IndexFolderError):
    """An index whose files are damaged or do not agree with each other (truncated or altered
    database, vectors that differ from the manifest, a manifest.json of another generation).

    ``file`` is the file at fault, ``problem`` what is wrong with it, ``advice`` and ``fix`` (a
    command) how to repair it.
    """

    def __init__(
        self, path: str | Path, file: str | Path, problem: str, advice: str, fix: str
    ) -> None:
        self.file = Path(file)
        self.problem = problem
        self.advice = advice
        self.fix = fix
        super().__init__(path, f"{self.file.name} {problem}. {advice}: {fix}")

    @property
    def what(self) -> str:
        """What is wrong, without the fix: ``"index.sqlite is damaged (...)"``."""
        return f"{self.file.name} {self.problem}"


class IndexWriteFailed(IndexFolderError):
    """A write the index database refused (disk full, file size limit, I/O error): the
    transaction was rolled back, every committed batch is kept."""

    def __init__(self, path: str | Path, file: str | Path, reason: str) -> None:
        self.file = Path(file)
        self.reason = reason
        super().__init__(
            path,
            f"writing {self.file.name} failed ({reason}); the published generation is intact "
            "and committed batches are kept. Free disk space, then re-run the same build: it "
            "resumes where it stopped",
        )


class EmbeddingMismatch(IndexFolderError):
    """An index opened or extended with another embedding model or dimension than its own."""

    def __init__(
        self, path: str | Path, expected: str, expected_dim: int, got: str, got_dim: int
    ) -> None:
        self.expected, self.expected_dim = expected, expected_dim
        self.got, self.got_dim = got, got_dim
        super().__init__(
            path,
            f"was built with embedding model {expected!r} (dim {expected_dim}), "
            f"not {got!r} (dim {got_dim}); query it with the same model or build a new index",
        )


class ModelUnavailable(IndexFolderError):
    """An index whose embedding model cannot be loaded here (not installed, not found)."""

    def __init__(self, path: str | Path, error: EmbedderError) -> None:
        self.model = error.model
        super().__init__(
            path,
            f"was built with embedding model {error.model!r}, which cannot be loaded here "
            f"({error.message}); install that model, or build an index with a model you have "
            "(the default: python -m ingest build --input CORPUS --index NEW_FOLDER)",
        )


class SettingsMismatch(IndexFolderError):
    """A build whose chunking settings differ from those the index was built with."""


class IndexBusy(IndexFolderError):
    """Another process is writing the index."""


class StrictModeFailure(IngestError):
    """A ``--strict`` build that met bad records: nothing was changed."""

    def __init__(self, n_bad: int) -> None:
        self.n_bad = n_bad
        super().__init__(f"--strict: {n_bad} bad record(s) in the input; the index was not changed")


class EmbedderError(IngestError):
    """An embedding model that cannot be loaded or does not behave (e.g. a text over its length)."""

    def __init__(self, model: str, message: str) -> None:
        self.model = model
        self.message = message
        super().__init__(f"embedding model {model!r}: {message}")


class DeviceError(IngestError):
    """An embedding device setting (``--device``, ``device=``) that is not a known choice, or
    that asks for a GPU where there is none (no work has started)."""

    def __init__(self, device: str, message: str) -> None:
        self.device = device
        self.message = message
        super().__init__(f"--device {device}: {message}")

    def __reduce__(self):  # raised in a Ray actor, it reaches the driver whole
        return type(self), (self.device, self.message)
