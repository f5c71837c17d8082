"""Other ways to run the embedding model's forward pass, against the one ingest uses.

    pip install -e .[bench]      # onnx, onnxruntime: the benchmarks' extra, never needed to run
    python scripts/bench_embedding_backends.py [--docs 24] [--rounds 2] [--threads 2]

Embeds the anchor's chunks (``ingest.bench``: RecursiveCharacterTextSplitter 1000/200) of an even
spread of sample documents with the default MiniLM, tokenized beforehand, in length-sorted
batches of 32, through: PyTorch float32 (``ingest.embedding.Embedder``, what an index records as
``torch-float32``); ONNX Runtime float32 (the model exported with ``torch.onnx``); ONNX Runtime
with dynamic int8 weights (``onnxruntime.quantization``, per tensor and per channel). Prints, per
backend, seconds per round (rounds alternate the order) with the ratio to PyTorch's time in the
same round, and the cosine of its embeddings to PyTorch's (mean and min). Also prints the
GFLOPS of one (7040 x 384) x (384 x 1536) matrix product, the model's largest, on 1 and on
``--threads`` threads: how close PyTorch's forward pass already is to the CPU's float32 peak.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ingest import SAMPLE_CORPUS  # noqa: E402
from ingest.bench.anchor import anchor_chunks, anchor_texts, docs_spread  # noqa: E402
from ingest.embedding import BATCH_SIZE, Embedder, _length_batches, load_embedder  # noqa: E402

INPUTS = ("input_ids", "attention_mask", "token_type_ids")
OPSET = 17


def export_onnx(emb: Embedder, folder: Path) -> dict[str, Path]:
    """The transformer exported to ONNX (token embeddings out), and its int8 variants."""
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    bert = emb.model[0].auto_model

    class Hidden(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            out = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                            token_type_ids=token_type_ids)
            return out.last_hidden_state  # (batch, width, dim)

    ids = torch.ones((2, 16), dtype=torch.int64)
    paths = {"onnxruntime-float32": folder / "model.onnx"}
    axes = {name: {0: "batch", 1: "width"} for name in (*INPUTS, "hidden")}
    torch.onnx.export(Hidden().eval(), (ids, ids, torch.zeros_like(ids)),
                      str(paths["onnxruntime-float32"]), input_names=list(INPUTS),
                      output_names=["hidden"], dynamic_axes=axes, opset_version=OPSET,
                      dynamo=False)
    for name, per_channel in (("per-tensor", False), ("per-channel", True)):
        out = folder / f"model-int8-{name}.onnx"
        quantize_dynamic(str(paths["onnxruntime-float32"]), str(out),
                         weight_type=QuantType.QInt8, per_channel=per_channel)
        paths[f"onnxruntime-int8-{name}"] = out
    return paths


def ort_embedder(path: Path, emb: Embedder, threads: int):
    """A function: token id sequences -> unit-norm mean-pooled embeddings, through ONNX Runtime
    (batched and padded as ``emb`` does)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def embed(ids: list[np.ndarray]) -> np.ndarray:
        lengths = np.array([len(x) for x in ids])
        out = np.empty((len(ids), emb.dim), np.float32)  # (n, dim)
        for batch in _length_batches(lengths, BATCH_SIZE):
            x, mask = emb.pad([ids[i] for i in batch], int(lengths[batch].max()))
            feed = dict(zip(INPUTS, (x, mask, np.zeros_like(x)), strict=True))
            hidden = session.run(None, feed)[0]  # (batch, width, dim)
            vec = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)  # (batch, dim)
            out[batch] = vec / np.linalg.norm(vec, axis=1, keepdims=True)
        return out

    return embed


def gemm_gflops(threads: int) -> float:
    import torch

    a, b = torch.randn(7040, 384), torch.randn(384, 1536)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    a @ b
    t0 = time.perf_counter()
    for _ in range(10):
        a @ b
    seconds = (time.perf_counter() - t0) / 10
    torch.set_num_threads(before)
    return 2 * a.shape[0] * a.shape[1] * b.shape[1] / seconds / 1e9


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--input", default=str(SAMPLE_CORPUS))
    ap.add_argument("--docs", type=int, default=24)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    emb = load_embedder(None, threads=args.threads)
    texts = anchor_texts(anchor_chunks(docs_spread(args.input, args.docs)))
    ids = emb.counter.ids(texts, emb.max_tokens)
    mean_tokens = round(float(np.mean([len(x) for x in ids])), 1)
    gflops = {n: round(gemm_gflops(n), 1) for n in sorted({1, args.threads})}
    print(json.dumps({"chunks": len(ids), "mean_tokens": mean_tokens, "gemm_gflops": gflops}))
    with tempfile.TemporaryDirectory() as tmp:
        runs = {"torch-float32": emb.embed_ids}
        for name, path in export_onnx(emb, Path(tmp)).items():
            runs[name] = ort_embedder(path, emb, args.threads)
        ref = emb.embed_ids(ids)
        cos = {k: (f(ids) * ref).sum(1) for k, f in runs.items()}  # also warms every backend
        times: dict[str, list[float]] = {k: [] for k in runs}
        for r in range(args.rounds):
            for k in list(runs) if r % 2 == 0 else list(runs)[::-1]:
                t0 = time.perf_counter()
                runs[k](ids)
                times[k].append(time.perf_counter() - t0)
    for k in runs:
        ratio = [t / b for t, b in zip(times[k], times["torch-float32"], strict=True)]
        print(json.dumps({"backend": k, "seconds": [round(t, 2) for t in times[k]],
                          "time_vs_torch": [round(x, 2) for x in ratio],
                          "cos_mean": round(float(cos[k].mean()), 5),
                          "cos_min": round(float(cos[k].min()), 5)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
