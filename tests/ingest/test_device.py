"""The embedding device (``--device``) and the Ray actor pool's plan (``plan_pool``).

``plan_pool`` is pure: fake per-node Ray resource dicts (as ``ray.nodes()`` reports them) stand in
for clusters with and without GPUs.  The device checks run on this machine's real torch; a test
that needs the machine to have no CUDA GPU says so and skips where there is one.
"""

from __future__ import annotations

import pytest
from ingest_helpers import THREADS, run_cli, shortest, write_jsonl

import ingest
from ingest import embedding
from ingest.distributed import MAX_ACTORS_PER_GPU, ClusterError, PoolPlan, plan_pool
from ingest.errors import DeviceError


def node(cpus: float, gpus: float = 0, ip: str = "10.0.0.1") -> dict[str, float]:
    """One alive node's resources, with the keys Ray adds beside CPU and GPU."""
    out = {"CPU": float(cpus), "memory": 8e9, "object_store_memory": 2e9, f"node:{ip}": 1.0}
    if gpus:
        out["GPU"] = float(gpus)
    return out


def test_no_gpus_one_actor_per_threads_cpus_on_cpu():
    for device in ("auto", "cpu"):
        assert plan_pool([node(2)], 1, device) == PoolPlan(2, 1, 0.0, "cpu")
        # the two one-CPU nodes of tests/ingest/test_ray_build.py: two actors, as before
        assert plan_pool([node(1), node(1, ip="10.0.0.2")], 1, device) == PoolPlan(2, 1, 0, "cpu")
        assert plan_pool([node(8), node(8)], 3, device) == PoolPlan(5, 3, 0.0, "cpu")


def test_two_gpus_one_node_share_each_gpu_among_its_cpus():
    # 8 CPUs for 2 GPUs: 4 one-thread actors per GPU, a quarter of a GPU each
    assert plan_pool([node(8, 2)], 1, "auto") == PoolPlan(8, 1, 0.25, "cuda")
    # 4 threads per actor: one actor per GPU, a whole GPU each
    assert plan_pool([node(8, 2)], 4, "cuda") == PoolPlan(2, 4, 1.0, "cuda")
    # many CPUs per GPU: at most MAX_ACTORS_PER_GPU share one
    plan = plan_pool([node(64, 2)], 1, "auto")
    assert plan == PoolPlan(2 * MAX_ACTORS_PER_GPU, 1, 1 / MAX_ACTORS_PER_GPU, "cuda")


def test_four_gpus_on_two_nodes():
    nodes = [node(4, 2), node(4, 2, ip="10.0.0.2")]
    assert plan_pool(nodes, 1, "auto") == PoolPlan(8, 1, 0.5, "cuda")
    assert plan_pool(nodes, 2, "cuda") == PoolPlan(4, 2, 1.0, "cuda")
    # uneven nodes: the share is set by the poorest GPU node; each node places what it can
    uneven = [node(2, 2), node(16, 2, ip="10.0.0.2")]
    assert plan_pool(uneven, 1, "auto") == PoolPlan(4, 1, 1.0, "cuda")


def test_remote_args():
    assert PoolPlan(2, 1, 0.0, "cpu").remote_args() == {"num_cpus": 1}  # as before GPUs
    assert PoolPlan(2, 3, 0.0, "cpu").remote_args() == {"num_cpus": 3}
    assert PoolPlan(8, 1, 0.25, "cuda").remote_args() == {"num_gpus": 0.25}  # Ray's 1 CPU
    assert PoolPlan(2, 4, 1.0, "cuda").remote_args() == {"num_gpus": 1.0, "num_cpus": 4}


def test_gpu_plans_fit_the_cluster():
    """Every GPU plan's requests fit the cluster's GPUs and its GPU nodes' CPUs."""
    clusters = [[node(c, g)] for c in (1, 2, 3, 8, 13) for g in (1, 2, 3, 4)]
    clusters += [[node(2, 1), node(6, 3, ip="b"), node(32, ip="c")], [node(1, 4), node(9, 1)]]
    for nodes in clusters:
        for threads in (1, 2, 4):
            gpu_cpus = sum(n["CPU"] for n in nodes if n.get("GPU"))
            if not any(n.get("GPU", 0) >= 1 and n["CPU"] >= threads for n in nodes):
                continue  # no GPU node can hold an actor: auto falls back to CPU (tested below)
            plan = plan_pool(nodes, threads, "auto")
            assert plan.device == "cuda" and plan.num_cpus == threads and plan.actors >= 1
            assert plan.actors * plan.num_gpus <= sum(n.get("GPU", 0) for n in nodes) + 1e-9
            assert plan.actors * plan.num_cpus <= gpu_cpus
            assert 1 / plan.num_gpus == round(1 / plan.num_gpus) <= MAX_ACTORS_PER_GPU


def test_mixed_cluster_and_device_cpu():
    mixed = [node(4, 1), node(32, ip="10.0.0.2")]
    # auto: the GPU node's actors embed (the CPU-only node's CPUs are not used) ...
    assert plan_pool(mixed, 1, "auto") == PoolPlan(4, 1, 0.25, "cuda")
    # ... --device cpu: every CPU of the cluster, no GPU
    assert plan_pool(mixed, 1, "cpu") == PoolPlan(36, 1, 0.0, "cpu")


def test_gpu_nodes_without_cpus_for_an_actor():
    starved = [node(1, 2), node(16, ip="10.0.0.2")]
    assert plan_pool(starved, 2, "auto") == PoolPlan(8, 2, 0.0, "cpu")  # auto falls back
    with pytest.raises(DeviceError, match="fewer CPUs than --threads 2") as e:
        plan_pool(starved, 2, "cuda")
    assert e.value.device == "cuda"


def test_cuda_on_a_cluster_without_gpus_names_the_setting():
    for nodes in ([node(4)], [node(4), node(2, ip="b")], [node(4, 0.5)]):  # half a GPU: none
        assert plan_pool(nodes, 1, "auto").device == "cpu"
        with pytest.raises(DeviceError, match=r"--device cuda: the Ray cluster reports no GPU"):
            plan_pool(nodes, 1, "cuda")


def test_bad_plans_are_typed_errors():
    with pytest.raises(DeviceError, match="unknown device") as e:
        plan_pool([node(4, 1)], 1, "gpu")
    assert e.value.device == "gpu"
    with pytest.raises(ClusterError, match="1 CPUs, fewer than --threads 2"):
        plan_pool([node(1, 1)], 2, "auto")


def test_resolve_device(monkeypatch):
    assert embedding.resolve_device("cpu") == "cpu"
    with pytest.raises(DeviceError):
        embedding.resolve_device("tpu")
    monkeypatch.setattr(embedding, "cuda_available", lambda: False)
    assert embedding.resolve_device("auto") == "cpu"
    with pytest.raises(DeviceError, match=r"^--device cuda: torch sees no CUDA GPU"):
        embedding.resolve_device("cuda")
    monkeypatch.setattr(embedding, "cuda_available", lambda: True)
    assert embedding.resolve_device("auto") == embedding.resolve_device("cuda") == "cuda"


def test_embedder_reports_its_device(embedder):
    assert embedder.device == "cpu"


no_gpu_here = pytest.mark.skipif(
    embedding.cuda_available(), reason="this machine has a CUDA GPU: --device cuda would work"
)


@no_gpu_here
def test_build_with_cuda_and_no_gpu_fails_before_any_work(tmp_path):
    corpus = write_jsonl(tmp_path / "c.jsonl", shortest(1))
    index = tmp_path / "index"
    with pytest.raises(DeviceError, match="--device cuda") as e:
        ingest.build(corpus, index, device="cuda", progress=False)
    assert e.value.device == "cuda"
    with pytest.raises(DeviceError, match="unknown device"):
        ingest.build(corpus, index, device="cuda:0", progress=False)
    assert not index.exists()


@no_gpu_here
def test_cli_device_cuda_without_gpu_is_exit_2(tmp_path):
    corpus = write_jsonl(tmp_path / "c.jsonl", shortest(1))
    done = run_cli("build", "--input", str(corpus), "--index", str(tmp_path / "i"), "--device",
                   "cuda", "--quiet", timeout=300)
    assert done.returncode == 2
    assert "error: --device cuda: torch sees no CUDA GPU" in done.stderr
    assert not (tmp_path / "i").exists()


@no_gpu_here
def test_auto_on_cpu_records_no_device(tmp_path):
    """``auto`` without a GPU builds on CPU and records the executor as before (no device)."""
    corpus = write_jsonl(tmp_path / "c.jsonl", shortest(1))
    report = ingest.build(corpus, tmp_path / "index", threads=THREADS, progress=False)
    assert report.added == 3 and report.published
    assert report.executor == {"kind": "local", "threads": THREADS}
