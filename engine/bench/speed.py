"""``python -m engine bench``: prompt and generation speed, start-up, memory; optionally the same
measurement on llama.cpp (llama-cpp-python, when installed) in the same run, with ratios.

Both sides are measured alike, on the same token ids, greedy, without repeat penalty:
``prompt_tps`` = prompt tokens / time to first token (reading the prompt and choosing the first
token); ``gen_tps`` = (M - 1) / time from the first to the M-th token (M - 1 single-token
forwards, EOS ignored).  The machine may be shared: compare ratios measured in one run.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import resource
import sys
import time
from pathlib import Path
from typing import Any

# A fixed clinical paragraph, repeated as needed to make an N-token prompt.
BENCH_TEXT = (
    "Hypertension is diagnosed when blood pressure measured on two or more occasions is at least "
    "140/90 mm Hg. Lifestyle changes such as reducing salt intake, regular physical activity and "
    "limiting alcohol are recommended for all patients, and drug treatment is started when the "
    "risk of cardiovascular disease is high or blood pressure remains elevated. "
)


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB.

    Linux: ``VmHWM`` of /proc/self/status, the peak of this process image. (``getrusage``'s
    ru_maxrss also counts the parent's peak when the parent forked and exec'd us.)"""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def prompt_ids(model: Any, n: int) -> list[int]:
    """Exactly ``n`` token ids of the bench text (with BOS when the model adds one)."""
    if n < 1:
        raise ValueError(f"--prompt-tokens must be at least 1, got {n}")
    ids = model.tokenize(BENCH_TEXT, add_bos=bool(model.config.add_bos))
    body = model.tokenize(BENCH_TEXT, add_bos=False)
    while len(ids) < n:
        ids += body
    return ids[:n]


def bench_engine(args: argparse.Namespace) -> dict[str, Any]:
    """Load, warm up (compile or load numba's cache), then one measured generation."""
    import engine
    from engine.kernels import amx as kernels_amx

    t0 = time.perf_counter()
    model = engine.load(args.model, n_threads=args.threads, n_batch=args.batch,
                        kv_type=args.kv_type)  # fmt: skip
    load_s = time.perf_counter() - t0
    ids = prompt_ids(model, args.prompt_tokens)
    t0 = time.perf_counter()
    # compile or load from numba's cache every kernel the measurement uses: a full prompt batch
    # (float path, threaded attention) and decode steps
    model.generate(ids[: model.n_batch], max_tokens=3, temperature=0.0, ignore_eos=True)
    warmup_s = time.perf_counter() - t0
    profiler = cProfile.Profile() if args.profile else None
    if profiler:
        profiler.enable()
    gen = model.generate(
        ids, max_tokens=args.gen_tokens, temperature=0.0, repeat_penalty=1.0,
        ignore_eos=True, stream=True,
    )  # fmt: skip
    for _ in gen:
        pass
    if profiler:
        profiler.disable()
    t = gen.timings
    weight_bytes = sum(
        info.n_bytes for name, info in model.gguf.tensors.items() if name != "token_embd.weight"
    ) + (model.gguf.tensors["token_embd.weight"].n_bytes if model.config.tied_output else 0)
    result = {
        "engine": "ours",
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "prompt_products": "amx-bfloat16" if kernels_amx.available() else "blas-float32",
        "kv_type": model.kv_type,
        "model": str(model.path),
        "quantization": model.quantization,
        "threads": args.threads,
        "prompt_tokens": len(ids),
        "gen_tokens": gen.n_generated_tokens,
        "prompt_tps": len(ids) / t["ttft_s"],
        "gen_tps": (gen.n_generated_tokens - 1) / t["gen_s"] if gen.n_generated_tokens > 1 else 0.0,
        "ttft_s": t["ttft_s"],
        "load_s": load_s,
        "warmup_s": warmup_s,
        "peak_rss_mb": peak_rss_mb(),
        "architecture": model.config.architecture,
        "load_average_1min": os.getloadavg()[0],
        "file_mb": sum(p.stat().st_size for p in model.gguf.parts) / 2**20,
        "weights_read_per_token_mb": weight_bytes / 2**20,
    }
    result["gen_gb_per_s"] = result["gen_tps"] * weight_bytes / 1e9
    if profiler:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(18)
        result["profile"] = out.getvalue()
    return result


def bench_streams(args: argparse.Namespace) -> dict[str, Any]:
    """Generation throughput of ``args.streams`` concurrent greedy generations (continuous
    batching, ``engine.decode.batcher``) against the same prompts generated one after another; and
    whether each stream's tokens equal its tokens alone.  Throughput = generated tokens / wall
    time of the whole run (prompts included: keep them short); the decode rates leave the
    prompts out (concurrent: from the moment every stream has its first token)."""
    import threading

    import engine

    model = engine.load(args.model, n_threads=args.threads, n_batch=args.batch,
                        kv_type=args.kv_type)  # fmt: skip
    base = prompt_ids(model, args.prompt_tokens + 8 * args.streams)
    prompts = [base[8 * i : 8 * i + args.prompt_tokens] for i in range(args.streams)]  # distinct
    opts = {"max_tokens": args.gen_tokens, "temperature": 0.0, "repeat_penalty": 1.0,
            "ignore_eos": True, "stream": True}  # fmt: skip

    def run(prompts: list[list[int]], concurrent: bool) -> tuple[float, float, list[list[int]]]:
        """Wall seconds, generation rate once every prompt is read (tok/s), the tokens."""
        gens = [model.generate(p, **opts) for p in prompts]
        seen: list[list[tuple[float, int]]] = [[] for _ in gens]  # (time, tokens so far)

        def read(i: int) -> None:
            for _ in gens[i]:
                seen[i].append((time.perf_counter(), len(gens[i].tokens)))

        t0 = time.perf_counter()
        if concurrent:
            threads = [threading.Thread(target=read, args=(i,)) for i in range(len(gens))]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            # from the moment the last stream had its first token (every prompt read) on
            start = max(s[0][0] for s in seen)
            before = sum(max(n for t, n in s if t <= start) for s in seen)
            rate = (sum(len(g.tokens) for g in gens) - before) / (time.perf_counter() - start)
        else:
            for i in range(len(gens)):
                read(i)
            spent = sum(s[-1][0] - s[0][0] for s in seen)  # each stream after its prompt
            rate = sum(s[-1][1] - s[0][1] for s in seen) / spent
        return time.perf_counter() - t0, rate, [g.tokens for g in gens]

    model.generate(prompts[0], max_tokens=3, temperature=0.0, ignore_eos=True)  # compile
    run(prompts[:2], concurrent=True)  # compile the batched step too
    batcher = model.batcher()
    one_s, one_rate, alone = run(prompts, concurrent=False)
    steps0, seq_steps0 = batcher.steps, batcher.sequence_steps
    many_s, many_rate, together = run(prompts, concurrent=True)
    n_tokens = sum(len(t) for t in together)
    steps = batcher.steps - steps0
    return {
        "model": str(model.path), "streams": args.streams, "threads": args.threads,
        "prompt_tokens": args.prompt_tokens, "gen_tokens": args.gen_tokens,
        "one_at_a_time_tps": sum(len(t) for t in alone) / one_s,
        "concurrent_tps": n_tokens / many_s,
        "speedup": one_s / many_s * n_tokens / max(1, sum(len(t) for t in alone)),
        "one_at_a_time_decode_tps": one_rate,  # the same after the prompts are read
        "concurrent_decode_tps": many_rate,
        "decode_speedup": many_rate / one_rate,
        "identical": together == alone,
        "mean_sequences_per_step": (batcher.sequence_steps - seq_steps0) / max(1, steps),
        "load_average_1min": os.getloadavg()[0],
    }  # fmt: skip


def llama_cpp_model(path: str | Path, repack: bool = False, **kwargs: Any) -> Any:
    """``llama_cpp.Llama(path, **kwargs)``; without ``repack``, with llama.cpp's extra weight
    buffer types off (``use_extra_bufts``: AMX and repacked Q4_0/Q4_K rows).

    On the development machines (a VM whose CPU reports AMX) llama-cpp-python 0.3.36 built by
    pip dies with a general protection fault in ``libggml-cpu.so`` on the first forward with
    them on; with them off it runs.  Comparisons made without ``repack`` say so (``"repack"``
    in the result): llama.cpp may be faster where repacking works."""
    import llama_cpp
    import llama_cpp.llama_cpp as low

    if repack:
        return llama_cpp.Llama(model_path=str(path), **kwargs)
    default_params = low.llama_model_default_params

    def no_extra_bufts() -> Any:
        params = default_params()
        params.use_extra_bufts = False
        return params

    low.llama_model_default_params = no_extra_bufts
    try:
        return llama_cpp.Llama(model_path=str(path), **kwargs)
    finally:
        low.llama_model_default_params = default_params


def bench_llama_cpp(args: argparse.Namespace, ids: list[int]) -> dict[str, Any]:
    """The same measurement through llama-cpp-python (optional; never a dependency)."""
    import llama_cpp

    t0 = time.perf_counter()
    llm = llama_cpp_model(
        args.model, repack=args.llama_cpp_repack, n_ctx=len(ids) + args.gen_tokens + 8,
        n_threads=args.threads, n_threads_batch=args.threads, verbose=False,
    )  # fmt: skip
    load_s = time.perf_counter() - t0
    for i, _ in enumerate(llm.generate(ids[:2], temp=0.0, repeat_penalty=1.0, reset=True)):
        if i >= 1:  # warm-up: prompt and two tokens
            break
    t0 = time.perf_counter()
    t_first = t_last = t0
    n = 0
    for tok in llm.generate(ids, temp=0.0, top_k=1, repeat_penalty=1.0, reset=True):
        del tok
        n += 1
        t_last = time.perf_counter()
        if n == 1:
            t_first = t_last
        if n >= args.gen_tokens:
            break
    return {
        "engine": f"llama.cpp (llama-cpp-python {llama_cpp.__version__})",
        "repack": bool(args.llama_cpp_repack),
        "prompt_tokens": len(ids),
        "gen_tokens": n,
        "prompt_tps": len(ids) / (t_first - t0),
        "gen_tps": (n - 1) / (t_last - t_first) if n > 1 else 0.0,
        "ttft_s": t_first - t0,
        "load_s": load_s,
    }


def configure_bench(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", type=Path, help="GGUF file")
    p.add_argument("--prompt-tokens", type=int, default=207, help="prompt length N (default 207)")
    p.add_argument("--gen-tokens", type=int, default=128, help="tokens generated M (default 128)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads")
    p.add_argument("--batch", type=int, default=None, help="prompt positions per forward")
    p.add_argument("--json", action="store_true", help="end with one line of JSON")
    p.add_argument("--compare", action="store_true", help="also measure llama.cpp (if installed)")
    p.add_argument("--llama-cpp-repack", action="store_true",
                   help="let llama.cpp repack weights (AMX etc.; crashes on some VMs)")
    p.add_argument("--profile", action="store_true", help="cProfile the measured generation")
    p.add_argument("--kv-type", choices=("f32", "f16"), default="f32",
                   help="KV cache element type (llama.cpp's default is f16)")
    p.add_argument("--streams", type=int, default=0,
                   help="instead: N concurrent greedy generations against the same one at a time")


def _print(r: dict[str, Any]) -> None:
    ttft_ms, load_ms = r["ttft_s"] * 1000, r["load_s"] * 1000
    print(f"{r['engine']}: prompt {r['prompt_tokens']} tokens at {r['prompt_tps']:.1f} tok/s, "
          f"generation {r['gen_tokens']} tokens at {r['gen_tps']:.1f} tok/s, "
          f"first token after {ttft_ms:.0f} ms, load {load_ms:.0f} ms")  # fmt: skip


def run_bench(args: argparse.Namespace) -> int:
    if args.gen_tokens < 2:
        raise SystemExit("--gen-tokens must be at least 2 (generation speed needs two tokens)")
    if args.batch is None:
        from engine.llama import DEFAULT_BATCH

        args.batch = DEFAULT_BATCH
    if args.compare:
        try:
            import llama_cpp  # noqa: F401
        except ImportError:
            raise SystemExit("--compare needs llama-cpp-python: pip install '.[compare]'") from None
    if args.streams:
        r = bench_streams(args)
        print(f"{r['streams']} streams of {r['gen_tokens']} tokens after {r['prompt_tokens']}: "
              f"one at a time {r['one_at_a_time_tps']:.1f} tok/s, concurrent "
              f"{r['concurrent_tps']:.1f} tok/s: {r['speedup']:.2f} x (prompts included); "
              f"after the prompts {r['one_at_a_time_decode_tps']:.1f} and "
              f"{r['concurrent_decode_tps']:.1f} tok/s: {r['decode_speedup']:.2f} x; "
              f"{r['mean_sequences_per_step']:.2f} sequences per decode step; each stream's "
              f"tokens {'identical to' if r['identical'] else 'DIFFERENT from'} its tokens "
              f"alone; load average {r['load_average_1min']:.1f}")  # fmt: skip
        if args.json:
            print(json.dumps(r))
        return 0 if r["identical"] else 1
    ours = bench_engine(args)
    _print(ours)
    print(f"  warm-up (first forward: numba compile or cache load) {ours['warmup_s']:.2f} s, "
          f"peak RSS {ours['peak_rss_mb']:.0f} MiB (file {ours['file_mb']:.0f} MiB), "
          f"weights read per token {ours['weights_read_per_token_mb']:.1f} MiB "
          f"= {ours['gen_gb_per_s']:.2f} GB/s while generating; "
          f"{ours['architecture']}, prompt products {ours['prompt_products']}, "
          f"load average {ours['load_average_1min']:.1f}")  # fmt: skip
    profile = ours.pop("profile", None)
    if profile:
        print(profile)
    result: dict[str, Any] = dict(ours)
    if args.compare:
        import engine

        ref = bench_llama_cpp(args, prompt_ids(engine.load(args.model), args.prompt_tokens))
        _print(ref)
        ratios = {
            "prompt_ratio": ours["prompt_tps"] / ref["prompt_tps"],
            "gen_ratio": ours["gen_tps"] / ref["gen_tps"],
        }
        print(f"ratio ours / llama.cpp: prompt {ratios['prompt_ratio']:.2f}, "
              f"generation {ratios['gen_ratio']:.2f}")  # fmt: skip
        result.update({"llama_cpp": ref, **ratios})
    if args.json:
        sys.stdout.flush()
        print(json.dumps(result))
    return 0
