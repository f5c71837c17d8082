"""Accuracy of the engine against the exact computation, beside llama.cpp's own error.

    .venv/bin/python scripts/accuracy.py [--shared ../shared] [--json]

Prints, for every teacher-forced sequence of ``../shared/reference`` (SmolLM2 Q4_1 and the tiny
Llama-SPM models in Q8_0 and Q4_K_M) and of ``tests/engine/data/families-reference.json`` (the
real Qwen2.5-Coder and Gemma-3 models, where they are in the models directory), the RMS error of
our logits against the exact float64 computation and the top-1 agreement with it, through both
engine paths (batched prompt processing, ``model.logits``, and single-token decode steps, the
generation path), next to llama.cpp's error on the same positions. Issue 4's bar: RMS ≤ 1.5 ×
llama.cpp's, top-1 ≥ llama.cpp's − 5 points. ``tests/engine/test_accuracy.py`` asserts the same
bar (this script uses its helpers, so it needs the ``test`` extra).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import engine  # noqa: E402
from tests.engine.test_accuracy import decode_logits, rms  # noqa: E402 (the test's own paths)

DEFAULT_MODEL = Path.home() / ".cache/guidelines-assistant/models/SmolLM2-135M-Instruct.Q4_1.gguf"
FAMILIES = ROOT / "tests" / "engine" / "data" / "families-reference.json"
TINY = {"Q8_0": "tiny-llama-spm.Q8_0.gguf", "Q4_K_M": "tiny-llama-spm.Q4_K_M.gguf"}


def score(logits: np.ndarray, e: dict) -> tuple[float, float]:
    """(RMS vs exact at the reference columns, top-1 agreement with exact)."""
    err = rms(logits[:, e["cols"]], np.asarray(e["exact_col_logits"]))  # (n, 256) columns
    return err, float(np.mean(logits.argmax(axis=1) == np.asarray(e["exact_argmax"])))


def cases(shared: Path) -> list[tuple[str, Path, dict]]:
    ref = shared / "reference"
    out = []
    smol = json.loads((ref / "smollm2-q4_1-dev.json").read_text())
    for i, e in enumerate(smol["teacher_forced"]):
        out.append((f"SmolLM2-135M Q4_1 #{i}", DEFAULT_MODEL, e))
    tiny = json.loads((ref / "tiny-llama-spm-dev.json").read_text())
    for e in tiny["tiny"]:
        out.append((f"tiny-llama-spm {e['tag']}", shared / "models" / TINY[e["tag"]], e))
    from assistant.config import Settings

    models = Settings.from_env().models_dir
    for name, fam in json.loads(FAMILIES.read_text()).items():
        if not (models / name).exists():
            print(f"({models / name} is absent: skipped)")
            continue
        for i, e in enumerate(fam["teacher_forced"]):
            out.append((f"{name.removesuffix('.gguf')[:22]} #{i}", models / name, e))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    p.add_argument("--json", action="store_true", help="end with one line of JSON")
    args = p.parse_args()
    rows = []
    print(f"{'model':26} {'path':8} {'RMS':>8} {'llama.cpp':>9} {'ratio':>6} "
          f"{'top-1':>6} {'llama.cpp':>9}")  # fmt: skip
    for name, path, e in cases(args.shared):
        model = engine.load(path)
        for kind, logits in (("batched", model.logits(e["tokens"])),
                             ("decode", decode_logits(model, e["tokens"]))):  # fmt: skip
            err, top1 = score(logits, e)
            ref_err, ref_top1 = e["ref_rms_vs_exact"], e["ref_top1_vs_exact"]
            rows.append({"model": name, "path": kind, "rms": err, "ref_rms": ref_err,
                         "top1": top1, "ref_top1": ref_top1})  # fmt: skip
            print(f"{name:26} {kind:8} {err:8.2g} {ref_err:9.3f} {err / ref_err:6.2f} "
                  f"{top1:6.3f} {ref_top1:9.3f}")  # fmt: skip
    if args.json:
        print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
