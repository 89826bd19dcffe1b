"""GFD's sharing and MIG labels, from hand-built settings and inventories.

What a user selecting on GFD's keys notices: `nvidia.com/gpu.sharing-strategy`,
`.replicas` and a `-SHARED` product on shared GPUs; `nvidia.com/mig.strategy`;
under `mixed` one set of `nvidia.com/mig-<profile>.*` labels per profile, under
`single` the MIG devices standing in for the GPUs; and which keys of a Node the
plugin owns (never the MIG manager's).
"""

from __future__ import annotations

import pytest

from gpu_device_plugin.cluster.feature_labels import feature_labels, owned_labels
from gpu_device_plugin.inventory import Device, Inventory, MigDevice, MigMode, MigProfile
from gpu_device_plugin.resources.settings import (
    MigStrategy,
    ResourceSettings,
    SharedResource,
    Sharing,
    SharingStrategy,
)

P = "nvidia.com/gpu."
A100 = "NVIDIA A100-SXM4-80GB"
GPU = "nvidia.com/gpu"
ONE_G = MigProfile(
    "1g.10gb",
    gi_slices=1,
    ci_slices=1,
    memory_mib=9856,
    multiprocessors=14,
    copy_engines=1,
    decoders=0,
    encoders=0,
    jpeg_engines=0,
    ofa_engines=0,
)
THREE_G = MigProfile(
    "3g.40gb", gi_slices=3, ci_slices=3, memory_mib=40192, multiprocessors=42, copy_engines=3
)
ONE_G_ME = MigProfile("1g.10gb+me", gi_slices=1, ci_slices=1, memory_mib=9856, decoders=1, jpeg_engines=1)


def gpu(index: int, *, mig: bool = False) -> Device:
    return Device(
        id=f"GPU-{index}",
        index=index,
        uuid=f"GPU-{index}",
        model=A100,
        memory_mib=81920,
        compute_capability=(8, 0),
        mig_capable=True,
        mig_mode=MigMode(current=mig, pending=mig),
    )


def migs(parent: int, *profiles: MigProfile) -> tuple[MigDevice, ...]:
    return tuple(
        MigDevice(
            id=f"MIG-{parent}-{i}",
            uuid=f"MIG-{parent}-{i}",
            parent_id=f"GPU-{parent}",
            index=i,
            profile=p,
            gi_id=i,
            ci_id=0,
        )
        for i, p in enumerate(profiles)
    )


def node(devices: tuple[Device, ...], mig_devices: tuple[MigDevice, ...] = ()) -> Inventory:
    return Inventory(devices=devices, backend="nvml", mig_devices=mig_devices)


def settings(*, mig: MigStrategy = MigStrategy.NONE, sharing: Sharing | None = None) -> ResourceSettings:
    return ResourceSettings(resource_name=GPU, mig_strategy=mig, sharing=sharing)


def time_slicing(*resources: SharedResource, rename_by_default: bool = False) -> Sharing:
    return Sharing(SharingStrategy.TIME_SLICING, resources, rename_by_default=rename_by_default)


def labels(s: ResourceSettings, inventory: Inventory, prefix: str = P) -> dict[str, str]:
    return feature_labels(inventory, prefix=prefix, plugin_version="1", settings=s)


def shown(all_labels: dict[str, str], *keys: str) -> dict[str, str | None]:
    return {k: all_labels.get(k) for k in keys}


EIGHT_WHOLE = node(tuple(gpu(i) for i in range(8)))
SHARING_KEYS = (P + "product", P + "replicas", P + "sharing-strategy", P + "count")


@pytest.mark.parametrize(
    ("sharing", "expected"),
    [
        pytest.param(None, (A100.replace(" ", "-"), "1", "none"), id="not-shared"),
        pytest.param(
            time_slicing(SharedResource(GPU, 4)),
            ("NVIDIA-A100-SXM4-80GB-SHARED", "4", "time-slicing"),
            id="time-slicing",
        ),
        pytest.param(
            Sharing(SharingStrategy.MPS, (SharedResource(GPU, 2),)),
            ("NVIDIA-A100-SXM4-80GB-SHARED", "2", "mps"),
            id="mps",
        ),
        # Renamed, the shared resource has a name of its own: GFD leaves the product alone.
        pytest.param(
            time_slicing(SharedResource(GPU, 4, rename="nvidia.com/gpu.shared")),
            ("NVIDIA-A100-SXM4-80GB", "4", "time-slicing"),
            id="renamed",
        ),
        pytest.param(
            time_slicing(SharedResource(GPU, 4), rename_by_default=True),
            ("NVIDIA-A100-SXM4-80GB", "4", "time-slicing"),
            id="rename-by-default",
        ),
        pytest.param(
            time_slicing(SharedResource(GPU, 1)), ("NVIDIA-A100-SXM4-80GB", "1", "none"), id="one-replica"
        ),
        pytest.param(
            time_slicing(SharedResource("nvidia.com/mig-1g.10gb", 4)),
            ("NVIDIA-A100-SXM4-80GB", "1", "none"),
            id="another-resource-shared",
        ),
    ],
)
def test_sharing_labels_of_whole_gpus(sharing: Sharing | None, expected: tuple[str, str, str]) -> None:
    got = labels(settings(sharing=sharing), EIGHT_WHOLE)
    product, replicas, strategy = expected
    # The count is of GPUs, as GFD's: the replicas say how many ways each is offered.
    assert shown(got, *SHARING_KEYS) == dict(
        zip(SHARING_KEYS, (product, replicas, strategy, "8"), strict=True)
    )
    assert "nvidia.com/mig.strategy" not in got


MIXED_NODE = node(
    (gpu(0, mig=True), gpu(1, mig=True), gpu(2)),
    migs(0, ONE_G, ONE_G, ONE_G, THREE_G) + migs(1, ONE_G, ONE_G, ONE_G, THREE_G),
)


def test_mixed_labels_every_profile_with_gfds_keys() -> None:
    got = labels(settings(mig=MigStrategy.MIXED), MIXED_NODE)
    assert got["nvidia.com/mig.strategy"] == "mixed"
    assert {k.removeprefix("nvidia.com/mig-1g.10gb."): v for k, v in got.items() if "mig-1g" in k} == {
        "product": "NVIDIA-A100-SXM4-80GB-MIG-1g.10gb",
        "count": "6",
        "replicas": "1",
        "sharing-strategy": "none",
        "memory": "9856",
        "multiprocessors": "14",
        "slices.gi": "1",
        "slices.ci": "1",
        "engines.copy": "1",
        "engines.decoder": "0",
        "engines.encoder": "0",
        "engines.jpeg": "0",
        "engines.ofa": "0",
    }
    # A fact NVML did not give is left out, not written as 0.
    three = {k.removeprefix("nvidia.com/mig-3g.40gb."): v for k, v in got.items() if "mig-3g" in k}
    assert three["count"] == "2"
    assert three["memory"] == "40192"
    assert "engines.decoder" not in three
    # The whole GPUs: all three counted (GFD's count), one of them still served whole.
    assert shown(got, P + "count", P + "replicas", P + "memory") == {
        P + "count": "3",
        P + "replicas": "1",
        P + "memory": "81920",
    }


def test_mixed_with_every_gpu_partitioned_serves_no_whole_gpu() -> None:
    inventory = node((gpu(0, mig=True), gpu(1, mig=True)), migs(0, ONE_G) + migs(1, ONE_G))
    sharing = time_slicing(SharedResource(GPU, 4))
    got = labels(settings(mig=MigStrategy.MIXED, sharing=sharing), inventory)
    assert shown(got, P + "replicas", P + "sharing-strategy", P + "product") == {
        P + "replicas": "0",
        P + "sharing-strategy": "none",
        P + "product": "NVIDIA-A100-SXM4-80GB",
    }


def test_a_shared_mig_profile_says_so_under_its_own_key() -> None:
    sharing = time_slicing(SharedResource("nvidia.com/mig-1g.10gb", 2))
    got = labels(settings(mig=MigStrategy.MIXED, sharing=sharing), MIXED_NODE)
    assert shown(
        got, *(f"nvidia.com/mig-1g.10gb.{k}" for k in ("product", "replicas", "sharing-strategy"))
    ) == {
        "nvidia.com/mig-1g.10gb.product": "NVIDIA-A100-SXM4-80GB-MIG-1g.10gb-SHARED",
        "nvidia.com/mig-1g.10gb.replicas": "2",
        "nvidia.com/mig-1g.10gb.sharing-strategy": "time-slicing",
    }
    assert got["nvidia.com/mig-3g.40gb.replicas"] == "1"
    assert got[P + "replicas"] == "1"


def test_a_profile_with_media_extensions_is_keyed_as_gfd_writes_it() -> None:
    inventory = node((gpu(0, mig=True),), migs(0, ONE_G_ME, ONE_G))
    got = labels(settings(mig=MigStrategy.MIXED), inventory)
    # '+' cannot be in a label key; GFD writes it '.'.
    assert got["nvidia.com/mig-1g.10gb.me.count"] == "1"
    assert got["nvidia.com/mig-1g.10gb.me.product"] == "NVIDIA-A100-SXM4-80GB-MIG-1g.10gb.me"
    assert got["nvidia.com/mig-1g.10gb.count"] == "1"


def test_single_puts_the_mig_devices_in_the_gpu_labels() -> None:
    inventory = node((gpu(0, mig=True), gpu(1, mig=True)), migs(0, *[ONE_G] * 7) + migs(1, *[ONE_G] * 7))
    got = labels(settings(mig=MigStrategy.SINGLE), inventory)
    assert got["nvidia.com/mig.strategy"] == "single"
    assert {k.removeprefix(P): v for k, v in got.items() if k.startswith(P)}.items() >= {
        "product": "NVIDIA-A100-SXM4-80GB-MIG-1g.10gb",
        "count": "14",
        "replicas": "1",
        "sharing-strategy": "none",
        "memory": "9856",
        "multiprocessors": "14",
        "slices.gi": "1",
        "slices.ci": "1",
        "engines.copy": "1",
        # What the GPU is stays the GPU's.
        "compute.major": "8",
    }.items()
    assert not [k for k in got if k.startswith("nvidia.com/mig-")]


def test_single_shared_mig_devices_are_shared_gpus() -> None:
    inventory = node((gpu(0, mig=True),), migs(0, *[ONE_G] * 7))
    got = labels(settings(mig=MigStrategy.SINGLE, sharing=time_slicing(SharedResource(GPU, 3))), inventory)
    assert shown(got, P + "product", P + "replicas", P + "count") == {
        P + "product": "NVIDIA-A100-SXM4-80GB-MIG-1g.10gb-SHARED",
        P + "replicas": "3",
        P + "count": "7",
    }


@pytest.mark.parametrize(
    "inventory",
    [
        pytest.param(
            node((gpu(0, mig=True), gpu(1, mig=True)), migs(0, ONE_G) + migs(1, THREE_G)), id="two-profiles"
        ),
        pytest.param(node((gpu(0, mig=True), gpu(1)), migs(0, ONE_G)), id="one-gpu-whole"),
        pytest.param(node((gpu(0, mig=True), gpu(1, mig=True)), migs(0, ONE_G)), id="one-gpu-empty"),
    ],
)
def test_single_on_a_layout_it_cannot_serve_is_labelled_invalid(inventory: Inventory) -> None:
    got = labels(settings(mig=MigStrategy.SINGLE), inventory)
    assert shown(got, P + "product", P + "count", P + "replicas", P + "memory") == {
        P + "product": "NVIDIA-A100-SXM4-80GB-MIG-INVALID",
        P + "count": "0",
        P + "replicas": "0",
        P + "memory": "0",
    }


def test_single_without_mig_enabled_gpus_labels_whole_gpus() -> None:
    got = labels(settings(mig=MigStrategy.SINGLE), EIGHT_WHOLE)
    assert got["nvidia.com/mig.strategy"] == "single"
    assert shown(got, P + "product", P + "count") == {
        P + "product": "NVIDIA-A100-SXM4-80GB",
        P + "count": "8",
    }


def test_strategy_none_says_nothing_of_mig() -> None:
    got = labels(settings(), MIXED_NODE)
    assert not [k for k in got if k.startswith("nvidia.com/mig")]
    assert got[P + "count"] == "3"


def test_another_prefix_moves_every_key_into_its_domain() -> None:
    got = labels(settings(mig=MigStrategy.MIXED), MIXED_NODE, prefix="example.com/gpu.")
    assert got["example.com/mig.strategy"] == "mixed"
    assert got["example.com/mig-1g.10gb.count"] == "6"
    assert all(k.startswith("example.com/") for k in got)


def test_labels_are_a_function_of_settings_and_inventory() -> None:
    # Issue 17 recomputes on every config change: equal inputs, equal labels; a change, new ones.
    first = labels(settings(mig=MigStrategy.MIXED), MIXED_NODE)
    assert labels(settings(mig=MigStrategy.MIXED), MIXED_NODE) == first
    assert labels(settings(), MIXED_NODE) != first


def test_the_plugin_owns_its_keys_and_not_the_mig_managers() -> None:
    on_node = {
        "nvidia.com/gpu.product": "x",
        "nvidia.com/mig.strategy": "mixed",
        "nvidia.com/mig-1g.10gb.count": "6",
        "nvidia.com/mig-2g.20gb.engines.ofa": "0",
        # The MIG manager's and GFD's other keys, and anything else: someone else's.
        "nvidia.com/mig.config": "all-1g.10gb",
        "nvidia.com/mig.config.state": "success",
        "nvidia.com/mig.capable": "true",
        "nvidia.com/mig-1g.10gb.note": "mine",
        "kubernetes.io/hostname": "n",
    }
    assert set(owned_labels(on_node, P)) == {
        "nvidia.com/gpu.product",
        "nvidia.com/mig.strategy",
        "nvidia.com/mig-1g.10gb.count",
        "nvidia.com/mig-2g.20gb.engines.ofa",
    }


def test_a_profile_mixed_serves_no_resource_for_gets_no_labels() -> None:
    # A compute instance smaller than its GPU instance: NVIDIA serves no resource, nor do we.
    smaller_ci = MigProfile("1c.3g.40gb", gi_slices=3, ci_slices=1, memory_mib=40192)
    inventory = node((gpu(0, mig=True),), migs(0, smaller_ci, ONE_G))
    got = labels(settings(mig=MigStrategy.MIXED), inventory)
    assert not [k for k in got if "1c.3g" in k]
    assert got["nvidia.com/mig-1g.10gb.count"] == "1"
