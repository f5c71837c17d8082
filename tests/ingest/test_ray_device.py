"""``--device`` on a real local Ray instance of this (GPU-less) machine: ``cuda`` is a clear error
before any work, both on a cluster without GPU resources and on one that declares a GPU its
workers' torch cannot use (``ray.init(num_gpus=1)``: Ray grants the share, torch sees no CUDA);
``auto`` then plans the CPU pool, as without GPUs.  (The pool's plan for real GPU clusters is
unit-tested in test_device.py; the Ray build itself in test_ray_build.py.)
"""

from __future__ import annotations

import pytest
from ingest_helpers import shortest, write_jsonl

import ingest
from ingest.embedding import cuda_available
from ingest.errors import DeviceError

ray = pytest.importorskip("ray", reason="the 'distributed' extra (ray[data]) is not installed")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(cuda_available(), reason="this machine has a CUDA GPU"),
]


@pytest.fixture()
def corpus(tmp_path):
    return write_jsonl(tmp_path / "c.jsonl", shortest(1))


def _init(**resources) -> None:
    ray.init(**resources, object_store_memory=80 * 1024 * 1024, include_dashboard=False,
             logging_level="WARNING", log_to_driver=False)


def test_cuda_on_a_local_instance_without_gpus(corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    assert not ray.is_initialized()
    with pytest.raises(DeviceError, match="--device cuda: the Ray cluster reports no GPU") as e:
        ingest.build(corpus, tmp_path / "index", ray="", device="cuda", progress=False)
    assert e.value.device == "cuda"
    assert not (tmp_path / "index").exists()
    assert not ray.is_initialized()  # the instance the build started is stopped


def test_a_declared_gpu_torch_cannot_use(corpus, tmp_path, monkeypatch):
    from ingest.distributed import PoolPlan, RayBuilderFactory

    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    _init(num_cpus=2, num_gpus=1)
    try:
        assert ray.cluster_resources().get("GPU") == 1
        with pytest.raises(DeviceError, match="torch on its GPU workers sees no CUDA GPU"):
            ingest.build(corpus, tmp_path / "index", ray="", device="cuda", progress=False)
        assert not (tmp_path / "index").exists()
        with RayBuilderFactory("", ingest.DEFAULT_MODEL, 1, device="auto") as factory:
            assert factory.plan == PoolPlan(2, 1, 0.0, "cpu")
            assert "device" not in factory.describe()
    finally:
        ray.shutdown()
