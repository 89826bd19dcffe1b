"""MIG devices discovered by the nvml backend on the C NVML fake, through the real pynvml.

The fake's `mig-a100` profile (GPU 0: seven 1g.10gb; GPU 1: 3g.40gb + 2g.20gb +
1g.10gb; GPU 2: MIG off), and layouts changed with `FakeDriver.set_mig_layout`
as nvidia-smi would: UUIDs, GPU / compute instance ids, NVIDIA's profile names
(with the `+me` suffix and the memory rounding), the engines, and the caps
device nodes from the driver's capability files under the driver root.
"""

from __future__ import annotations

import logging
from types import ModuleType

import pytest

from gdp_hack.nvmlfake import FakeDriver
from gpu_device_plugin.backends.nvml.discover import NvmlBackend
from gpu_device_plugin.backends.nvml.driver_root import DriverRoot
from gpu_device_plugin.backends.nvml.library import NvmlSession
from gpu_device_plugin.inventory import Inventory, MigProfile

pytestmark = pytest.mark.parametrize("fake_driver", ["mig-a100"], indirect=True)


def discover(driver: FakeDriver, pynvml: ModuleType) -> Inventory:
    return NvmlBackend(NvmlSession(pynvml), driver_root=DriverRoot(driver.root)).discover()


def by_parent(inventory: Inventory) -> dict[int, list[tuple[str, int, int]]]:
    index = {d.id: d.index for d in inventory.devices}
    out: dict[int, list[tuple[str, int, int]]] = {}
    for mig in inventory.mig_devices:
        out.setdefault(index[mig.parent_id], []).append((mig.profile.name, mig.gi_id, mig.ci_id))
    return out


def test_the_profiles_mig_devices_with_their_instances(
    fake_driver: FakeDriver, fake_pynvml: ModuleType
) -> None:
    inventory = discover(fake_driver, fake_pynvml)

    assert by_parent(inventory) == {
        0: [("1g.10gb", gi, 0) for gi in range(7, 14)],
        1: [("3g.40gb", 1, 0), ("2g.20gb", 5, 0), ("1g.10gb", 13, 0)],
    }
    profile = fake_driver.profile
    want = [i.uuid for d in profile.devices if d.mig for i in d.mig.instances]
    assert [m.uuid for m in inventory.mig_devices] == want
    assert all(m.id == m.uuid and m.uuid.startswith("MIG-") for m in inventory.mig_devices)
    assert [m.index for m in inventory.mig_devices] == [*range(7), *range(3)]
    parents = [d.id for d in inventory.devices]
    assert {m.parent_id for m in inventory.mig_devices} == set(parents[:2])


def test_profile_facts_come_from_the_gpu_instance_profile(
    fake_driver: FakeDriver, fake_pynvml: ModuleType
) -> None:
    inventory = discover(fake_driver, fake_pynvml)
    three = next(m for m in inventory.mig_devices if m.profile.name == "3g.40gb")

    assert three.profile == MigProfile(
        name="3g.40gb",
        gi_slices=3,
        ci_slices=3,
        memory_mib=40192,
        multiprocessors=42,
        copy_engines=3,
        decoders=2,
        encoders=0,
        jpeg_engines=0,
        ofa_engines=0,
    )


def test_caps_nodes_follow_the_drivers_capability_files(
    fake_driver: FakeDriver, fake_pynvml: ModuleType
) -> None:
    inventory = discover(fake_driver, fake_pynvml)

    # gpu<minor>/gi<g>/access = 3 + 135 minor + 9 g; its ci<c> = that + 1 + c (the fake's numbering).
    for mig in inventory.mig_devices:
        minor = inventory.by_id[mig.parent_id].minor
        assert minor is not None
        gi = 3 + 135 * minor + 9 * mig.gi_id
        assert mig.device_nodes == (
            f"/dev/nvidia-caps/nvidia-cap{gi}",
            f"/dev/nvidia-caps/nvidia-cap{gi + 1}",
        )
    assert inventory.dev_root == str(fake_driver.root / "dev")


def test_media_extension_and_double_memory_profiles_are_named_as_nvidia_names_them(
    fake_driver: FakeDriver, fake_pynvml: ModuleType
) -> None:
    fake_driver.set_mig_layout(2, [{"profile": "1g.10gb+me", "gi": 7}, {"profile": "1g.20gb", "gi": 3}])

    inventory = discover(fake_driver, fake_pynvml)

    assert by_parent(inventory)[2] == [("1g.10gb+me", 7, 0), ("1g.20gb", 3, 0)]
    media = next(m for m in inventory.mig_devices if m.profile.name == "1g.10gb+me")
    assert (media.profile.decoders, media.profile.jpeg_engines, media.profile.ofa_engines) == (1, 1, 1)


def test_a_layout_change_is_a_new_set_of_mig_devices(
    fake_driver: FakeDriver, fake_pynvml: ModuleType
) -> None:
    before = discover(fake_driver, fake_pynvml)
    fake_driver.set_mig_layout(0, [{"profile": "7g.80gb", "gi": 0}])

    after = discover(fake_driver, fake_pynvml)

    assert by_parent(after)[0] == [("7g.80gb", 0, 0)]
    assert by_parent(after)[1] == by_parent(before)[1]
    gpu0 = before.devices[0].id
    old = {m.uuid for m in before.mig_devices if m.parent_id == gpu0}
    new = {m.uuid for m in after.mig_devices if m.parent_id == gpu0}
    assert len(new) == 1
    assert not new & old


def test_mig_off_has_no_mig_devices(fake_driver: FakeDriver, fake_pynvml: ModuleType) -> None:
    fake_driver.set_mig_layout(0, [], current=False)

    inventory = discover(fake_driver, fake_pynvml)

    assert 0 not in by_parent(inventory)
    assert inventory.devices[0].mig_mode is not None
    assert inventory.devices[0].mig_mode.current is False


def test_a_missing_caps_node_is_left_out_and_named_in_the_one_warning(
    fake_driver: FakeDriver, fake_pynvml: ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    (fake_driver.root / "dev/nvidia-caps/nvidia-cap148").unlink()  # GPU 1's 3g.40gb's CI

    inventory = discover(fake_driver, fake_pynvml)

    three = next(m for m in inventory.mig_devices if m.profile.name == "3g.40gb")
    assert three.device_nodes == ("/dev/nvidia-caps/nvidia-cap147",)
    warnings = [m for m in caplog.messages if m.startswith("device nodes not found")]
    assert len(warnings) == 1
    assert str(fake_driver.root / "dev/nvidia-caps/nvidia-cap148") in warnings[0]


def test_a_lost_mig_gpu_is_unhealthy_and_its_mig_devices_unlisted(
    fake_driver: FakeDriver, fake_pynvml: ModuleType
) -> None:
    before = discover(fake_driver, fake_pynvml)
    fake_driver.lose(1)

    inventory = discover(fake_driver, fake_pynvml)

    gpu1 = before.devices[1].id
    if gpu1 in inventory.by_id:  # listed Unhealthy when its UUID can still be read
        assert not inventory.by_id[gpu1].healthy
    assert 1 not in by_parent(inventory)
    assert by_parent(inventory)[0] == by_parent(before)[0]
