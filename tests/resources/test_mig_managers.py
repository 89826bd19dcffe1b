"""The MIG strategies' plans and managers, on hand-built inventories.

What a user of each strategy would notice: which resources there are and
what each lists, what Allocate hands a container, how a parent's health shows
on its MIG devices, which layouts `single` refuses and how it says so, and
that an unchanged layout plans equal managers (issue 17 diffs plans).
"""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest

from gpu_device_plugin.allocator import AllocateOptions, DeviceIdStrategy, DeviceListStrategy, plan_preferred
from gpu_device_plugin.allocator.shared_policy import SharedPolicy
from gpu_device_plugin.errors import ConfigError, RequestError
from gpu_device_plugin.inventory import Device, Health, Inventory, MigDevice, MigMode, MigProfile
from gpu_device_plugin.inventory.topology import Link, Topology
from gpu_device_plugin.resources.mig import (
    MigPolicy,
    MigProfileManager,
    NonMigGpuManager,
    RefusedManager,
    SingleMigManager,
    mig_notes,
    mig_resource_name,
)
from gpu_device_plugin.resources.plan import plan_resources
from gpu_device_plugin.resources.settings import MigStrategy, ResourceSettings
from gpu_device_plugin.resources.start import plan_at_start
from gpu_device_plugin.resources.whole_gpu import WholeGpuManager

GPU = "nvidia.com/gpu"
ON = MigMode(current=True, pending=True)
OFF = MigMode(current=False, pending=False)


def profile(name: str) -> MigProfile:
    g = int(name[0])
    return MigProfile(name=name, gi_slices=g, ci_slices=g, memory_mib=10240 * g)


def gpu(index: int, mode: MigMode | None = ON, *, numa: int = 0) -> Device:
    return Device(
        id=f"GPU-{index}",
        index=index,
        uuid=f"GPU-{index}",
        model="NVIDIA A100-SXM4-80GB",
        minor=index,
        numa_node=numa,
        device_nodes=(f"/dev/nvidia{index}",),
        mig_capable=mode is not None,
        mig_mode=mode,
    )


def mig(parent: int, index: int, name: str) -> MigDevice:
    gi = index + 1
    return MigDevice(
        id=f"MIG-{parent}-{index}",
        uuid=f"MIG-{parent}-{index}",
        parent_id=f"GPU-{parent}",
        index=index,
        profile=profile(name),
        gi_id=gi,
        ci_id=0,
        device_nodes=(f"/dev/nvidia-caps/nvidia-cap{10 * parent + gi}",),
    )


def node(layout: dict[int, list[str] | None], **kw: object) -> Inventory:
    """GPUs by index: a list of profiles (MIG on, those MIG devices) or None (MIG off)."""
    devices = tuple(gpu(i, ON if profiles is not None else OFF) for i, profiles in layout.items())
    migs = tuple(mig(i, k, p) for i, profiles in layout.items() for k, p in enumerate(profiles or []))
    return Inventory(
        devices=devices,
        backend="test",
        mig_devices=migs,
        control_nodes=("/dev/nvidiactl",),
        dev_root="/run/nvidia/driver/dev",
        **kw,  # type: ignore[arg-type]
    )


MIXED_NODE = {0: ["1g", "1g", "3g"], 1: ["3g", "3g"], 2: None}


def plan(strategy: MigStrategy, inventory: Inventory, **kw: object) -> dict[str, object]:
    settings = ResourceSettings(GPU, mig_strategy=strategy, **kw)  # type: ignore[arg-type]
    return {m.resource_name: m for m in plan_resources(settings, inventory)}


def listed(manager: object, inventory: Inventory) -> list[str]:
    return [d.id for d in manager.devices(inventory).devices]  # type: ignore[attr-defined]


# ---- mixed -----------------------------------------------------------------------


def test_mixed_is_one_resource_per_profile_and_the_non_mig_gpus() -> None:
    inventory = node(MIXED_NODE)

    managers = plan(MigStrategy.MIXED, inventory)

    assert {n: listed(m, inventory) for n, m in managers.items()} == {
        GPU: ["GPU-2"],
        "nvidia.com/mig-1g": ["MIG-0-0", "MIG-0-1"],
        "nvidia.com/mig-3g": ["MIG-0-2", "MIG-1-0", "MIG-1-1"],
    }


def test_mixed_without_non_mig_gpus_has_no_whole_gpu_resource() -> None:
    assert set(plan(MigStrategy.MIXED, node({0: ["1g"], 1: ["3g"]}))) == {
        "nvidia.com/mig-1g",
        "nvidia.com/mig-3g",
    }


def test_mixed_on_no_gpus_still_serves_the_whole_gpu_name() -> None:
    # A plan is never empty: a node whose NVML failed (--no-fail-on-init-error) still registers.
    managers = plan(MigStrategy.MIXED, node({}))
    assert list(managers) == [GPU]
    assert isinstance(managers[GPU], NonMigGpuManager)


def test_a_mig_device_has_its_parents_placement_health_and_nodes() -> None:
    inventory = node(MIXED_NODE).with_health({"GPU-0": (Health.UNHEALTHY, "XID 79")})
    view = MigProfileManager("nvidia.com/mig-3g", "3g").devices(inventory)

    first = view.devices[0]
    assert (first.id, first.uuid, first.index, first.numa_node) == ("MIG-0-2", "MIG-0-2", 0, 0)
    assert (first.health, first.health_reason) == (Health.UNHEALTHY, "XID 79")
    assert first.device_nodes == ("/dev/nvidia0", "/dev/nvidia-caps/nvidia-cap3")
    assert [d.health for d in view.devices[1:]] == [Health.HEALTHY, Health.HEALTHY]
    assert [p.id for p in view.parents] == ["GPU-0", "GPU-1"]


def test_a_parents_health_change_leaves_other_profiles_views_equal() -> None:
    inventory = node({0: ["1g"], 1: ["3g"]})
    small = MigProfileManager("nvidia.com/mig-1g", "1g")
    big = MigProfileManager("nvidia.com/mig-3g", "3g")
    after = inventory.with_health({"GPU-1": (Health.UNHEALTHY, "XID 79")})

    assert small.devices(after) == small.devices(inventory)  # its streams stay asleep
    assert big.devices(after) != big.devices(inventory)


def test_allocate_names_mig_uuids_and_hands_parent_caps_and_control_nodes() -> None:
    inventory = node(MIXED_NODE)
    manager = MigProfileManager("nvidia.com/mig-3g", "3g", AllocateOptions(pass_device_specs=True))
    view = manager.devices(inventory)

    answer = manager.allocate(view, ["MIG-0-2", "MIG-1-0", "MIG-1-1"])

    assert answer.envs == {"NVIDIA_VISIBLE_DEVICES": "MIG-0-2,MIG-1-0,MIG-1-1"}
    assert [(n.path, n.host) for n in answer.device_nodes] == [
        ("/dev/nvidia0", "/run/nvidia/driver/dev/nvidia0"),
        ("/dev/nvidia-caps/nvidia-cap3", "/run/nvidia/driver/dev/nvidia-caps/nvidia-cap3"),
        ("/dev/nvidia1", "/run/nvidia/driver/dev/nvidia1"),  # once, for two of its MIG devices
        ("/dev/nvidia-caps/nvidia-cap11", "/run/nvidia/driver/dev/nvidia-caps/nvidia-cap11"),
        ("/dev/nvidia-caps/nvidia-cap12", "/run/nvidia/driver/dev/nvidia-caps/nvidia-cap12"),
        ("/dev/nvidiactl", "/run/nvidia/driver/dev/nvidiactl"),
    ]


@pytest.mark.parametrize(
    ("options", "envs", "cdi"),
    [
        pytest.param(
            AllocateOptions(id_strategy=DeviceIdStrategy.INDEX),
            {"NVIDIA_VISIBLE_DEVICES": "0:2,1:1"},
            (),
            id="index",
        ),
        pytest.param(
            AllocateOptions(list_strategy=DeviceListStrategy.CDI_CRI),
            {},
            ("nvidia.com/gpu=MIG-0-2", "nvidia.com/gpu=MIG-1-1"),
            id="cdi",
        ),
    ],
)
def test_allocate_under_the_other_strategies(
    options: AllocateOptions, envs: dict[str, str], cdi: tuple[str, ...]
) -> None:
    manager = MigProfileManager("nvidia.com/mig-3g", "3g", options)
    view = manager.devices(node(MIXED_NODE))

    answer = manager.allocate(view, ["MIG-0-2", "MIG-1-1"])

    assert (answer.envs, answer.cdi_devices) == (envs, cdi)


def test_allocate_refuses_another_profiles_device() -> None:
    manager = MigProfileManager("nvidia.com/mig-3g", "3g")
    with pytest.raises(RequestError, match=r"unknown device ids.*MIG-0-0"):
        manager.allocate(manager.devices(node(MIXED_NODE)), ["MIG-0-0"])


def test_preferred_spreads_over_parents_by_default_and_packs_when_asked() -> None:
    # Two parents with 3 instances each; GPUs 0 and 1 NVLinked, GPU 2 (NUMA 1) not.
    inventory = node({0: ["1g"] * 3, 1: ["1g"] * 3, 2: ["1g"] * 3})
    devices = tuple(replace(d, numa_node=0 if d.index < 2 else 1) for d in inventory.devices)
    topology = Topology.of({("GPU-0", "GPU-1"): Link(nvlinks=12)})
    inventory = replace(inventory, devices=devices, topology=topology)
    spread = MigProfileManager("nvidia.com/mig-1g", "1g")
    packed = MigProfileManager("nvidia.com/mig-1g", "1g", preferred_policy=MigPolicy(SharedPolicy.PACKED))
    view = spread.devices(inventory)
    every = [d.id for d in view.devices]

    assert plan_preferred(view, every, [], 2, spread.preferred_policy).ids == ["MIG-0-0", "MIG-1-0"]
    assert plan_preferred(view, every, [], 2, packed.preferred_policy).ids == ["MIG-0-0", "MIG-0-1"]
    # GPU 0 partly held: distributed goes to the unshared, best-linked pair of parents.
    rest = [i for i in every if i != "MIG-0-0"]
    assert plan_preferred(view, rest, [], 2, spread.preferred_policy).ids == ["MIG-1-0", "MIG-2-0"]


def test_mixed_resource_names_take_the_whole_gpu_names_domain() -> None:
    assert mig_resource_name("example.com/gpu", "1g.10gb+me") == "example.com/mig-1g.10gb.me"
    assert mig_resource_name("nvidia.com/gpu", "1g.10gb-me") == "nvidia.com/mig-1g.10gb-me"
    with pytest.raises(ConfigError, match="resource-name"):
        mig_resource_name("example.com/gpu", "2c.3g.40gb" + "x" * 60)


# ---- single ----------------------------------------------------------------------


def test_single_serves_every_mig_device_under_the_whole_gpu_name() -> None:
    inventory = node({0: ["1g"] * 7, 1: ["1g"] * 7})

    (manager,) = plan(MigStrategy.SINGLE, inventory).values()

    assert isinstance(manager, SingleMigManager)
    assert manager.resource_name == GPU
    assert listed(manager, inventory) == [f"MIG-{g}-{k}" for g in (0, 1) for k in range(7)]


def test_single_with_no_mig_gpu_serves_whole_gpus_as_nvidia_does() -> None:
    (manager,) = plan(MigStrategy.SINGLE, node({0: None, 1: None})).values()
    assert isinstance(manager, WholeGpuManager)


@pytest.mark.parametrize(
    ("layout", "phrase"),
    [
        pytest.param(
            {0: ["1g"], 1: None},
            "single needs MIG on every GPU: GPU 1 (GPU-1) has MIG mode disabled while GPU 0 (GPU-0)",
            id="mig-off-gpu",
        ),
        pytest.param(
            {0: ["1g"], 1: []},
            "single: GPU 1 (GPU-1) has MIG mode on but no MIG devices",
            id="no-instances",
        ),
        pytest.param(
            {0: ["1g", "1g"], 1: ["1g", "3g"]},
            "single needs one MIG profile on every GPU: GPU 1 (GPU-1) has 3g where GPU 0 (GPU-0) has 1g",
            id="mixed-profiles",
        ),
    ],
)
def test_single_refuses_a_layout_naming_the_gpu_that_differs(
    layout: dict[int, list[str] | None], phrase: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        plan(MigStrategy.SINGLE, node(layout))
    assert caught.value.field == "mig-strategy"
    assert phrase in caught.value.reason


def test_the_refused_resource_has_no_devices_and_allocates_nothing() -> None:
    manager = RefusedManager(GPU, "single: ...")
    view = manager.devices(node(MIXED_NODE))
    assert view.devices == ()
    with pytest.raises(RequestError, match="unknown"):
        manager.allocate(view, ["MIG-0-0"])


# ---- none, and what the plans have in common --------------------------------------


def test_none_serves_whole_gpus_and_notes_each_mig_gpu() -> None:
    pending = replace(
        node({0: None}).devices[0], id="GPU-3", uuid="GPU-3", index=3, mig_mode=MigMode(False, True)
    )
    inventory = node(MIXED_NODE)
    inventory = replace(inventory, devices=(*inventory.devices, pending))

    (manager,) = plan(MigStrategy.NONE, inventory).values()

    assert listed(manager, inventory) == ["GPU-0", "GPU-1", "GPU-2", "GPU-3"]
    notes = mig_notes(inventory, whole=True, resource_name=GPU)
    assert [n.split(" has ")[0] for n in notes] == ["GPU 0 (GPU-0)", "GPU 1 (GPU-1)", "GPU 3 (GPU-3)"]
    assert "MIG mode enable pending: it is served as a whole GPU under nvidia.com/gpu" in notes[2]


def test_mixed_notes_a_mig_gpu_without_mig_devices() -> None:
    notes = mig_notes(node({0: ["1g"], 1: []}), whole=False, resource_name=GPU)
    assert notes == ("GPU 1 (GPU-1) has MIG mode on but no MIG devices: nothing of it is served",)


@pytest.mark.parametrize("strategy", list(MigStrategy))
def test_an_unchanged_layout_plans_equal_managers(strategy: MigStrategy) -> None:
    layout = {0: ["1g"] * 7, 1: ["1g"] * 7} if strategy is MigStrategy.SINGLE else MIXED_NODE
    first = plan_resources(ResourceSettings(GPU, mig_strategy=strategy), node(layout))
    healthier = node(layout).with_health({"GPU-0": (Health.UNHEALTHY, "XID 79")})

    assert plan_resources(ResourceSettings(GPU, mig_strategy=strategy), healthier) == first


def test_a_new_profile_plans_a_new_resource() -> None:
    before = plan(MigStrategy.MIXED, node({0: ["1g"], 1: None}))
    after = plan(MigStrategy.MIXED, node({0: ["1g", "2g"], 1: None}))
    assert set(after) - set(before) == {"nvidia.com/mig-2g"}
    assert after["nvidia.com/mig-1g"] == before["nvidia.com/mig-1g"]


def test_mixed_serves_no_profile_with_a_smaller_compute_instance_and_says_so() -> None:
    inventory = node({0: ["3g", "1g"]})
    small_ci = replace(inventory.mig_devices[0], profile=replace(profile("3g"), name="1c.3g", ci_slices=1))
    inventory = replace(inventory, mig_devices=(small_ci, inventory.mig_devices[1]))

    assert set(plan(MigStrategy.MIXED, inventory)) == {"nvidia.com/mig-1g"}
    (note,) = mig_notes(inventory, whole=False, resource_name=GPU)
    assert "MIG-0-0 of GPU 0 (GPU-0) has profile 1c.3g" in note


# ---- at start: the warnings, and --fail-on-init-error -------------------------------


def test_at_start_a_refused_layout_is_a_config_error_with_fail_on_init_error() -> None:
    settings = ResourceSettings(GPU, mig_strategy=MigStrategy.SINGLE)
    with pytest.raises(ConfigError, match="single needs MIG on every GPU"):
        plan_at_start(settings, node(MIXED_NODE), fail_on_init_error=True)


def test_at_start_without_it_one_error_line_and_no_devices(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gpu_device_plugin.resources.start")
    settings = ResourceSettings(GPU, mig_strategy=MigStrategy.SINGLE)

    (manager,) = plan_at_start(settings, node(MIXED_NODE), fail_on_init_error=False)

    assert isinstance(manager, RefusedManager)
    assert manager.resource_name == GPU
    assert manager.devices(node(MIXED_NODE)).devices == ()
    assert [(r.levelno, r.getMessage().split(":")[0]) for r in caplog.records] == [
        (logging.ERROR, "mig-strategy")
    ]
    assert "serving no devices under nvidia.com/gpu (--no-fail-on-init-error)" in caplog.messages[0]


def test_at_start_none_warns_once_per_mig_gpu_and_mixed_not_at_all(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gpu_device_plugin.resources.start")
    for strategy in (MigStrategy.NONE, MigStrategy.MIXED):
        plan_at_start(ResourceSettings(GPU, mig_strategy=strategy), node(MIXED_NODE), fail_on_init_error=True)

    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert [w.split(" has ")[0] for w in warned] == ["GPU 0 (GPU-0)", "GPU 1 (GPU-1)"]


def test_at_start_single_without_mig_gpus_says_it_serves_whole_gpus(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gpu_device_plugin.resources.start")

    (manager,) = plan_at_start(
        ResourceSettings(GPU, mig_strategy=MigStrategy.SINGLE), node({0: None}), fail_on_init_error=True
    )

    assert isinstance(manager, WholeGpuManager)
    assert "no GPU has MIG mode on, so whole GPUs are served under nvidia.com/gpu" in caplog.messages[0]
