"""The MPS daemon plan: the limits derived from the replicas, the commands and env it becomes."""

from __future__ import annotations

import json
from pathlib import PurePosixPath

import pytest

from gpu_device_plugin.errors import ConfigError
from gpu_device_plugin.mps.plan import DaemonPlan, MpsGpu
from gpu_device_plugin.mps.root import MpsRoot, container_pipe_dir

A = "GPU-aaaaaaaa-0000-0000-0000-000000000000"
B = "GPU-bbbbbbbb-0000-0000-0000-000000000000"


def plan(replicas: int = 4, *gpus: MpsGpu) -> DaemonPlan:
    return DaemonPlan(
        "nvidia.com/gpu", replicas, gpus or (MpsGpu(A, 81559, replicas), MpsGpu(B, 40960, replicas))
    )


@pytest.mark.parametrize(
    ("replicas", "percentage"),
    [
        pytest.param(1, 100, id="one"),
        pytest.param(2, 50, id="two"),
        pytest.param(3, 33, id="three-rounds-down"),
        pytest.param(48, 2, id="forty-eight"),
    ],
)
def test_the_thread_percentage_is_100_over_the_replicas(replicas: int, percentage: int) -> None:
    assert plan(replicas).active_thread_percentage == percentage
    assert plan(replicas).commands()[-1] == f"set_default_active_thread_percentage {percentage}"


def test_each_gpu_gets_its_memory_over_its_replicas_named_by_uuid() -> None:
    assert plan(4).commands() == (
        f"set_default_device_pinned_mem_limit {A} 20389M",  # 81559 // 4
        f"set_default_device_pinned_mem_limit {B} 10240M",
        "set_default_active_thread_percentage 25",
    )


def test_a_gpu_listed_whole_keeps_its_memory_and_one_of_unknown_memory_gets_no_limit() -> None:
    gpus = (MpsGpu(A, 16000, 4), MpsGpu(B, 16000, 1), MpsGpu("GPU-c", 0, 4))
    assert plan(4, *gpus).commands() == (
        f"set_default_device_pinned_mem_limit {A} 4000M",
        f"set_default_device_pinned_mem_limit {B} 16000M",
        "set_default_active_thread_percentage 25",
    )


def test_the_daemon_sees_only_its_gpus_and_its_own_folders() -> None:
    root = MpsRoot(PurePosixPath("/run/nvidia/mps"))
    assert plan().env(root) == {
        "CUDA_VISIBLE_DEVICES": f"{A},{B}",
        "CUDA_MPS_PIPE_DIRECTORY": "/run/nvidia/mps/nvidia.com/gpu/pipe",
        "CUDA_MPS_LOG_DIRECTORY": "/run/nvidia/mps/nvidia.com/gpu/log",
    }
    assert str(root.ready_file("nvidia.com/gpu")) == "/run/nvidia/mps/nvidia.com/gpu/.ready"
    assert str(root.shm_dir) == "/run/nvidia/mps/shm"
    assert str(container_pipe_dir("nvidia.com/gpu")) == "/mps/nvidia.com/gpu/pipe"


def test_a_ready_file_matches_only_the_plan_it_was_written_for() -> None:
    text = plan(4).ready_text()
    assert json.loads(text)["activeThreadPercentage"] == 25
    assert plan(4).matches(text)
    assert not plan(2).matches(text)
    assert not plan(4, MpsGpu(A, 81559, 4)).matches(text)
    assert not plan(4).matches("")
    assert not plan(4).matches("{not json")


def test_more_replicas_than_an_mps_server_takes_are_refused() -> None:
    plan(48, MpsGpu(A, 1000, 48, (9, 0))).check()
    with pytest.raises(ConfigError, match=r"49 replicas of GPU-a.* at most 48 clients"):
        plan(49, MpsGpu(A, 1000, 49, (9, 0))).check()
    with pytest.raises(ConfigError, match="at most 16 clients"):
        plan(17, MpsGpu(A, 1000, 17, (6, 0))).check()
