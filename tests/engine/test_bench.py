"""``python -m engine run`` and ``bench`` as a user runs them, and memory while generating.

Speeds are not asserted (machines are shared and noisy: see the README's benchmark section);
memory is: generating with the default model stays under file size + KV cache + 300 MB.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import shared_path
from tests.engine.llama_reference import QT, write_tiny_llama

ROOT = Path(__file__).resolve().parents[2]


def engine_cli(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_llama(tmp_path_factory.mktemp("bench") / "tiny.gguf", QT.Q4_K, seed=9)


def test_bench_json_line(tiny_path: Path) -> None:
    out = engine_cli("bench", str(tiny_path), "--prompt-tokens", "12", "--gen-tokens", "5",
                     "--threads", "1", "--json")  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    assert result["prompt_tokens"] == 12 and result["gen_tokens"] == 5  # EOS ignored
    assert result["prompt_tps"] > 0 and result["gen_tps"] > 0 and result["peak_rss_mb"] > 0
    assert any("tok/s" in line for line in lines[:-1])


def test_bench_compare_needs_llama_cpp_or_runs(tiny_path: Path) -> None:
    out = engine_cli("bench", str(tiny_path), "--prompt-tokens", "8", "--gen-tokens", "3",
                     "--threads", "1", "--json", "--compare")  # fmt: skip
    if importlib.util.find_spec("llama_cpp") is None:  # the optional extra is not installed
        assert out.returncode != 0 and "llama-cpp-python" in out.stderr
        return
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["llama_cpp"]["gen_tokens"] == 3 and result["gen_ratio"] > 0


def test_run_streams_a_continuation(tiny_path: Path) -> None:
    out = engine_cli("run", str(tiny_path), "-p", "the blood", "-n", "6", "--temp", "0")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("the blood") and "finish:" in out.stderr


def test_run_answers_a_chatml_prompt(default_model_path: Path) -> None:
    """The CLI's greedy answer starts as llama.cpp's does on the same prompt (the shared
    reference, ``reference/smollm2-q4_1-dev.json``: greedy_q4_1), for as many tokens as
    llama.cpp and the exact float64 computation agree (past that, a near-tie may part them)."""
    from engine.cli import chat_prompt
    from engine.tokenizer import Tokenizer

    refs = json.loads(shared_path("reference", "smollm2-q4_1-dev.json").read_text())
    system, user = "You are a careful clinical assistant.", "What is hypertension?"
    tok = Tokenizer.from_file(default_model_path)
    ref = next(r for r in refs["greedy_q4_1"] if f"user\n{user}<" in r["prompt"])
    assert chat_prompt(tok, user, system) == ref["prompt"]
    n = 0
    while n < 24 and ref["greedy"][n] == ref["exact_greedy"][n]:
        n += 1
    golden = tok.decode(ref["greedy"][:n]).strip()
    assert n >= 8 and golden.startswith("Hypertension is a serious")
    out = engine_cli("run", str(default_model_path), "-p", user, "--chat", "--system", system,
                     "-n", "24", "--temp", "0", "--repeat-penalty", "1.0")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().startswith(golden), (out.stdout, golden)


def test_run_bad_model_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 20)
    out = engine_cli("run", str(bad), "-p", "x")
    assert out.returncode == 1 and out.stderr.startswith("error:") and "bad.gguf" in out.stderr


MEMORY_PROBE = """
import json, sys
import engine
from engine.llama import KVCache
m = engine.load(sys.argv[1])
prompt = "<|im_start|>user\\nWhat is hypertension?<|im_end|>\\n<|im_start|>assistant\\n"
n = int(sys.argv[2])
gen = m.generate(prompt, max_tokens=n, temperature=0, ignore_eos=True, stream=True)
text = "".join(gen)
kv = KVCache(m.config, gen.n_prompt_tokens + n).nbytes
from engine.bench.speed import peak_rss_mb
peak = peak_rss_mb() * 2**20  # this process's own peak (VmHWM), not the forking parent's
from numba.core.registry import CPUDispatcher
import engine.kernels, engine.llama
kernels = [f for mod in (engine.kernels, engine.llama) for f in vars(mod).values()
           if isinstance(f, CPUDispatcher)]
compiled = sum(sum(f.stats.cache_misses.values()) for f in kernels)
print(json.dumps({"peak": peak, "kv": kv, "n": gen.n_generated_tokens, "compiled": compiled}))
"""


def test_peak_rss_while_generating(default_model_path: Path) -> None:
    """Weights stay quantized on the memory map: no float copy of the model appears.

    Measured in a process that loads its kernels from numba's cache: compiling (once per
    machine, or after the sources change) takes LLVM memory that generating does not."""
    run = [sys.executable, "-c", MEMORY_PROBE, str(default_model_path)]
    for _ in range(3):
        out = subprocess.run([*run, "48"], cwd=ROOT, check=True, capture_output=True, text=True,
                             timeout=900)  # fmt: skip
        r = json.loads(out.stdout.strip().splitlines()[-1])
        if r["compiled"] == 0:
            break
    assert r["compiled"] == 0, "every run compiled kernels: numba's cache is not being written"
    assert r["n"] == 48
    limit = default_model_path.stat().st_size + r["kv"] + 300 * 2**20
    assert r["peak"] <= limit, (r["peak"] / 2**20, limit / 2**20)


def test_bench_streams_json_line(tiny_path: Path) -> None:
    """``bench --streams``: concurrent greedy streams equal their runs alone, with the rates of
    both phases (prompts included, and after them)."""
    out = engine_cli("bench", str(tiny_path), "--streams", "3", "--prompt-tokens", "6",
                     "--gen-tokens", "8", "--threads", "1", "--json")  # fmt: skip
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["identical"] and result["streams"] == 3
    for key in ("one_at_a_time_tps", "concurrent_tps", "one_at_a_time_decode_tps",
                "concurrent_decode_tps"):  # fmt: skip
        assert result[key] > 0, (key, result)
    assert "after the prompts" in out.stdout
