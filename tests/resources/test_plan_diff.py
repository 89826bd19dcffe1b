"""The diff a new plan makes against what is served: keep, swap, re-register, remove, add."""

from __future__ import annotations

import pytest

from gpu_device_plugin.allocator import AllocateOptions, DeviceIdStrategy, in_order_policy
from gpu_device_plugin.resources.diff import PlanDiff, diff_plans
from gpu_device_plugin.resources.manager import ResourceManager
from gpu_device_plugin.resources.whole_gpu import WholeGpuManager
from gpu_device_plugin.server.service import plugin_options

A = WholeGpuManager("example.com/a")
B = WholeGpuManager("example.com/b")
A_BY_INDEX = WholeGpuManager("example.com/a", AllocateOptions(id_strategy=DeviceIdStrategy.INDEX))
A_NO_PREFERRED = WholeGpuManager("example.com/a", preferred_policy=None)
A_IN_ORDER = WholeGpuManager("example.com/a", preferred_policy=in_order_policy)


def names(managers: tuple[ResourceManager, ...]) -> list[str]:
    return [m.resource_name for m in managers]


@pytest.mark.parametrize(
    ("served", "plan", "expected"),
    [
        pytest.param([A], [WholeGpuManager("example.com/a")], {"keep": ["example.com/a"]}, id="equal-kept"),
        pytest.param([A], [A_BY_INDEX], {"swap": ["example.com/a"]}, id="other-answers-swapped"),
        # Another preferred policy is still a policy: the options are the same.
        pytest.param([A], [A_IN_ORDER], {"swap": ["example.com/a"]}, id="other-policy-swapped"),
        pytest.param([A], [A_NO_PREFERRED], {"reregister": ["example.com/a"]}, id="options-reregister"),
        pytest.param([A], [B], {"remove": ["example.com/a"], "add": ["example.com/b"]}, id="renamed"),
        pytest.param([A, B], [A], {"keep": ["example.com/a"], "remove": ["example.com/b"]}, id="one-removed"),
    ],
)
def test_diff(
    served: list[ResourceManager], plan: list[ResourceManager], expected: dict[str, list[str]]
) -> None:
    diff = diff_plans({m.resource_name: m for m in served}, plan, plugin_options)
    got = {
        "keep": names(diff.keep),
        "swap": names(diff.swap),
        "reregister": names(diff.reregister),
        "remove": list(diff.remove),
        "add": names(diff.add),
    }
    assert {k: v for k, v in got.items() if v} == expected
    assert diff.changed == (set(expected) != {"keep"})


def test_the_summary_names_every_change() -> None:
    diff = PlanDiff(keep=(A,), add=(B,), remove=("example.com/c",))
    assert diff.summary() == "added example.com/b; removed example.com/c; unchanged example.com/a"
