"""The fake backend's MIG (`mig: [profiles]` per device) and NVIDIA's profile naming rule."""

from __future__ import annotations

import pytest

from gpu_device_plugin.backends.fake.mig import PRODUCTS
from gpu_device_plugin.backends.fake.spec import parse_fake_config, to_inventory
from gpu_device_plugin.errors import ConfigError
from gpu_device_plugin.inventory.mig_names import memory_gb, profile_name, profile_suffix

A100_40 = "{model: NVIDIA A100-PCIE-40GB, memory_mib: 40960"


def inventory(text: str):  # type: ignore[no-untyped-def]
    return to_inventory(parse_fake_config(text, source="fake.yaml"))


def test_a_devices_mig_list_becomes_its_mig_devices() -> None:
    inv = inventory("devices:\n  - mig: [1g.10gb, 1g.10gb, 3g.40gb]\n  - {}\n")

    parent, whole = inv.devices
    assert parent.mig_mode is not None
    assert parent.mig_mode.current
    assert whole.mig_mode is None
    assert [(m.profile.name, m.gi_id, m.ci_id, m.index) for m in inv.mig_devices] == [
        ("1g.10gb", 1, 0, 0),
        ("1g.10gb", 2, 0, 1),
        ("3g.40gb", 3, 0, 2),
    ]
    assert {m.parent_id for m in inv.mig_devices} == {parent.id}
    assert inv.mig_devices[2].profile.memory_mib == 40448  # the H100 80GB's 3g.40gb
    # No device nodes of its own (the fake default): none invented for its MIG devices.
    assert all(m.device_nodes == () for m in inv.mig_devices)


def test_mig_uuids_are_stable_and_change_with_the_profile() -> None:
    first = inventory("devices:\n  - mig: [1g.10gb, 3g.40gb]\n")
    again = inventory("devices:\n  - mig: [1g.10gb, 3g.40gb]\n")
    changed = inventory("devices:\n  - mig: [1g.10gb, 4g.40gb]\n")

    assert [m.uuid for m in first.mig_devices] == [m.uuid for m in again.mig_devices]
    assert all(m.uuid.startswith("MIG-") and len(m.uuid) == 40 for m in first.mig_devices)
    assert first.mig_devices[0].uuid == changed.mig_devices[0].uuid
    assert first.mig_devices[1].uuid != changed.mig_devices[1].uuid


def test_a_device_with_nodes_gets_its_mig_devices_caps_nodes() -> None:
    # The driver's numbering: gpu<minor>/gi<g> = 3 + 135 minor + 9 g; its ci0 one above.
    inv = inventory("devices:\n  - {minor: 1, device_nodes: [/dev/nvidia1], mig: [1g.10gb]}\n")
    assert inv.mig_devices[0].device_nodes == (
        "/dev/nvidia-caps/nvidia-cap147",
        "/dev/nvidia-caps/nvidia-cap148",
    )


def test_the_product_is_told_from_model_and_memory() -> None:
    inv = inventory(f"devices:\n  - {A100_40}, mig: [1g.5gb+me, 3g.20gb]}}\n")
    assert [m.profile.name for m in inv.mig_devices] == ["1g.5gb+me", "3g.20gb"]


@pytest.mark.parametrize(
    ("device", "phrase"),
    [
        pytest.param(
            "{mig: [2g.10gb]}", "'2g.10gb' is not a MIG profile of the H100 80GB", id="other-product"
        ),
        pytest.param("{mig: [4g.40gb, 4g.40gb]}", "take 8 slices; the H100 80GB has 7", id="too-many"),
        pytest.param("{model: Tesla V100, mig: [1g.5gb]}", "not for model 'Tesla V100'", id="no-mig-product"),
    ],
)
def test_a_layout_the_product_cannot_hold_is_refused_naming_the_device(device: str, phrase: str) -> None:
    with pytest.raises(ConfigError) as caught:
        inventory(f"devices:\n  - {{}}\n  - {device}\n")
    assert caught.value.field == "fake.yaml: devices.1.mig"
    assert phrase in caught.value.reason


@pytest.mark.parametrize("product", list(PRODUCTS))
def test_every_table_name_is_what_nvidias_rule_makes_of_its_memory(product: str) -> None:
    table, total_mib = PRODUCTS[product]
    for name, entry in table.items():
        made = profile_name(
            gi_slices=entry.slices,
            ci_slices=entry.slices,
            memory=memory_gb(entry.memory_mib, total_mib * 1024 * 1024),
            suffix=profile_suffix(entry.index),
        )
        assert made == name, (product, name)


@pytest.mark.parametrize(
    ("instance_mib", "total_mib", "gb"),
    [
        pytest.param(4864, 40960, 5, id="a100-40-1g"),
        pytest.param(9856, 81920, 10, id="a100-80-1g: 9.6 GiB is 10gb"),
        pytest.param(40192, 81920, 40, id="a100-80-3g"),
        pytest.param(80896, 81920, 80, id="a100-80-7g"),
        pytest.param(11776, 97871, 12, id="h100-94-1g"),
        pytest.param(16896, 144384, 18, id="h200-141-1g: an eighth of 141 GiB is 18gb"),
    ],
)
def test_memory_is_rounded_to_eighths_of_the_gpu_as_nvidia_does(
    instance_mib: int, total_mib: int, gb: int
) -> None:
    assert memory_gb(instance_mib, total_mib * 1024 * 1024) == gb


def test_names_with_a_smaller_compute_instance_and_suffixes() -> None:
    assert profile_name(gi_slices=3, ci_slices=1, memory=40) == "1c.3g.40gb"
    assert profile_name(gi_slices=1, ci_slices=1, memory=10, suffix=profile_suffix(0x7)) == "1g.10gb+me"
    assert profile_suffix(0xF) == "+me.all"
    assert profile_suffix(0xA) == "+gfx"
    assert profile_suffix(0xD) == "-me"
    assert profile_suffix(0x0) == ""
