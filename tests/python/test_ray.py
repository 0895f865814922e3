"""genv.ray.remote on a single-node Ray cluster with one (simulated) GPU."""

import dataclasses
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="Ray is installed by scripts/test")

import genv  # noqa: E402
import genv.ray  # noqa: E402
from conftest import envs  # noqa: E402

pytestmark = pytest.mark.slow


def test_remote_needs_num_gpus():
    with pytest.raises(ValueError, match="num_gpus"):
        genv.ray.remote(num_cpus=1)


def test_two_half_gpu_tasks_share_a_device(tmp_path, monkeypatch):
    monkeypatch.setenv("GENV_MOCK_DEVICE_COUNT", "1")
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    ray.init(
        num_cpus=2,
        num_gpus=1,
        include_dashboard=False,
        object_store_memory=80 * 1024 * 1024,
        log_to_driver=False,
    )
    try:

        # Defined here: Ray ships it to the workers by value.
        def meet(barrier: str, step: str) -> bool:
            """Waits until both tasks reach this step; whether they did."""

            Path(barrier, f"{step}-{os.getpid()}").touch()
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                if len([n for n in os.listdir(barrier) if n.startswith(step)]) == 2:
                    return True
                time.sleep(0.02)
            return False

        @genv.ray.remote(num_gpus=0.5)
        def task(barrier: str) -> dict:
            # Both tasks hold device 0's lock at once (each half fits),
            # and each waits there for the other, before and after looking.
            with genv.sdk.lock(wait=False):
                together = meet(barrier, "arrived")
                devices = subprocess.run(
                    [genv._command.binary(), "devices", "ps", "--format", "json"],
                    capture_output=True, text=True, check=True,
                ).stdout
                meet(barrier, "looked")
            return {
                "pid": os.getpid(),
                "eid": genv.sdk.eid(),
                "config": dataclasses.asdict(genv.sdk.configuration()),
                "attached": genv.sdk.attached(),
                "cuda": os.environ["CUDA_VISIBLE_DEVICES"],
                "devices": json.loads(devices)["devices"],
                "together": together,
            }

        results = ray.get([task.remote(str(barrier)), task.remote(str(barrier))], timeout=300)
    finally:
        ray.shutdown()

    total = json.loads(
        subprocess.run([genv._command.binary(), "sdk", "devices"], capture_output=True, text=True, check=True).stdout
    )["devices"][0]["total_bytes"]
    half = str(total // 2)
    assert len({r["eid"] for r in results}) == 2
    for result in results:
        assert result["config"] == {"name": f"ray/{result['pid']}", "gpu_memory": half, "gpus": 1}
        assert result["attached"] == [0]
        assert result["cuda"] == "0"
        assert result["together"]
        (device,) = result["devices"]
        attached = sorted((a["eid"], a["gpu_memory"]) for a in device["attachments"])
        assert attached == sorted((r["eid"], half) for r in results)
    # Each task left its environment on return.
    assert envs() == []
