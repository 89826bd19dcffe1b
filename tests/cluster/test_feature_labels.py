"""Feature labels computed from an inventory: keys, sanitised values, the merge patch."""

from __future__ import annotations

import re

import pytest

from gpu_device_plugin.backends.fake.spec import parse_fake_config, to_inventory
from gpu_device_plugin.cluster.feature_labels import (
    check_label_prefix,
    feature_labels,
    interconnect,
    label_patch,
    label_value,
    owned_labels,
)
from gpu_device_plugin.inventory import Device, Inventory, Link, PciePath, Topology
from gpu_device_plugin.resources.settings import ResourceSettings

#: Whole GPUs, nothing shared: the labels of a plain `serve`.
WHOLE = ResourceSettings()

P = "example.com/gpu."
VALID_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")


def fake(text: str) -> Inventory:
    return to_inventory(parse_fake_config(text, source="test"))


def test_eight_h100s_on_nvswitch_get_every_label() -> None:
    inventory = fake("count: 8\nmig_capable: true\ntopology: {preset: dgx-h100}\n")
    assert feature_labels(inventory, prefix=P, plugin_version="0.1.0", settings=WHOLE) == {
        P + "product": "NVIDIA-H100-80GB-HBM3",
        P + "count": "8",
        P + "memory": "81559",
        P + "compute.major": "9",
        P + "compute.minor": "0",
        P + "driver.version": "fake-550.0",
        P + "cuda.version": "12.4",
        P + "mig.capable": "true",
        P + "interconnect": "nvswitch",
        P + "plugin.version": "0.1.0",
        # GFD's: not shared (one replica each).
        P + "replicas": "1",
        P + "sharing-strategy": "none",
    }


def test_the_gfd_prefix_gives_the_keys_gfd_users_select_on() -> None:
    labels = feature_labels(fake("count: 2\n"), prefix="nvidia.com/gpu.", plugin_version="1", settings=WHOLE)
    assert {"nvidia.com/gpu.product", "nvidia.com/gpu.count", "nvidia.com/gpu.memory"} <= labels.keys()
    assert labels["nvidia.com/gpu.compute.major"] == "9"


def test_no_devices_still_says_count_zero_and_nothing_it_does_not_know() -> None:
    labels = feature_labels(
        Inventory(devices=(), backend="nvml"), prefix=P, plugin_version="0.1.0", settings=WHOLE
    )
    assert labels == {P + "count": "0", P + "plugin.version": "0.1.0"}


def test_unknown_facts_are_left_out_not_invented() -> None:
    device = Device(id="GPU-1", index=0, uuid="GPU-1")  # model unknown, no memory, no capability
    labels = feature_labels(
        Inventory(devices=(device,), backend="nvml"), prefix=P, plugin_version="0.1.0", settings=WHOLE
    )
    # How the GPU is offered is known (the settings say it); what it is, is not.
    assert labels == {
        P + "count": "1",
        P + "plugin.version": "0.1.0",
        P + "replicas": "1",
        P + "sharing-strategy": "none",
    }


def test_health_is_not_a_label_so_a_fault_costs_no_patch() -> None:
    inventory = fake("count: 4\n")
    broken = inventory.with_health(
        {inventory.devices[0].id: (inventory.devices[0].health.UNHEALTHY, "XID 79")}
    )
    assert feature_labels(broken, prefix=P, plugin_version="1", settings=WHOLE) == feature_labels(
        inventory, prefix=P, plugin_version="1", settings=WHOLE
    )


def test_mixed_models_are_described_by_the_most_common_one() -> None:
    inventory = fake(
        "devices:\n"
        "  - {model: NVIDIA A100-SXM4-40GB, memory_mib: 40536, compute_capability: '8.0'}\n"
        "  - {model: NVIDIA H100 80GB HBM3}\n"
        "  - {model: NVIDIA H100 80GB HBM3}\n"
    )
    labels = feature_labels(inventory, prefix=P, plugin_version="1", settings=WHOLE)
    assert labels[P + "product"] == "NVIDIA-H100-80GB-HBM3"
    assert labels[P + "memory"] == "81559"
    assert labels[P + "count"] == "3"


@pytest.mark.parametrize(
    ("mig", "expected"),
    [
        pytest.param("mig_capable: true\n", "true", id="capable"),
        pytest.param("mig_capable: false\n", "false", id="not-capable"),
        pytest.param("", None, id="unknown-no-label"),
    ],
)
def test_mig_capable(mig: str, expected: str | None) -> None:
    labels = feature_labels(fake("count: 2\n" + mig), prefix=P, plugin_version="1", settings=WHOLE)
    assert labels.get(P + "mig.capable") == expected


def test_one_mig_capable_gpu_makes_the_node_mig_capable() -> None:
    inventory = fake("devices: [{mig_capable: false}, {mig_capable: true}, {}]\n")
    assert (
        feature_labels(inventory, prefix=P, plugin_version="1", settings=WHOLE)[P + "mig.capable"] == "true"
    )


@pytest.mark.parametrize(
    ("topology", "expected"),
    [
        pytest.param(None, None, id="unknown"),
        pytest.param(Topology(), None, id="no-pairs"),
        pytest.param(Topology.of({("a", "b"): Link(nvlinks=None, pcie=None)}), None, id="nothing-readable"),
        pytest.param(Topology.of({("a", "b"): Link(nvlinks=0, pcie=PciePath.SYSTEM)}), "pcie", id="pcie"),
        pytest.param(
            Topology.of({("a", "b"): Link(nvlinks=None, pcie=PciePath.HOST_BRIDGE)}), "pcie", id="pcie-only"
        ),
        pytest.param(
            Topology.of({("a", "b"): Link(nvlinks=2, pcie=PciePath.SYSTEM), ("a", "c"): Link(nvlinks=0)}),
            "nvlink",
            id="nvlink-on-some-pairs",
        ),
        pytest.param(Topology.of({("a", "b"): Link(nvlinks=18, nvswitch=True)}), "nvswitch", id="nvswitch"),
    ],
)
def test_interconnect_class(topology: Topology | None, expected: str | None) -> None:
    assert interconnect(topology) == expected


@pytest.mark.parametrize(
    ("preset", "expected"),
    [("dgx-1v", "nvlink"), ("dgx-a100", "nvswitch"), ("pcie-2numa", "pcie")],
)
def test_interconnect_of_the_fake_presets(preset: str, expected: str) -> None:
    inventory = fake(f"count: 8\ntopology: {{preset: {preset}}}\n")
    assert (
        feature_labels(inventory, prefix=P, plugin_version="1", settings=WHOLE)[P + "interconnect"]
        == expected
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("NVIDIA H100 80GB HBM3", "NVIDIA-H100-80GB-HBM3", id="spaces"),
        pytest.param("Tesla V100-SXM2-16GB", "Tesla-V100-SXM2-16GB", id="already-fine"),
        pytest.param("  550.54.15 ", "550.54.15", id="trimmed"),
        pytest.param("NVIDIA GeForce RTX 4090 (rev a1)", "NVIDIA-GeForce-RTX-4090-rev-a1", id="parentheses"),
        pytest.param("-_.odd.-", "odd", id="ends-must-be-alphanumeric"),
        pytest.param("GPU/ü/é", "GPU", id="non-ascii"),
        pytest.param("x" * 80, "x" * 63, id="cut-to-63"),
        pytest.param("a" * 62 + "-b", "a" * 62, id="cut-then-trimmed"),
        pytest.param("  ", None, id="nothing-left"),
        pytest.param("((()))", None, id="only-punctuation"),
    ],
)
def test_label_value_sanitising(raw: str, expected: str | None) -> None:
    value = label_value(raw)
    assert value == expected
    if value is not None:
        assert len(value) <= 63
        assert VALID_VALUE.match(value)


def test_every_computed_value_is_a_valid_label_value() -> None:
    inventory = fake(
        "count: 2\n"
        "model: '  NVIDIA Ultra GPU (engineering sample) 2026 edition with a very long marketing name!'\n"
        "driver_version: 'r999_00 / beta'\ncuda_version: '13.0 (preview)'\n"
    )
    labels = feature_labels(inventory, prefix=P, plugin_version="0.1.0+local.dirty", settings=WHOLE)
    for key, value in labels.items():
        assert len(value) <= 63, key
        assert VALID_VALUE.match(value), (key, value)
    assert labels[P + "driver.version"] == "r999_00-beta"


@pytest.mark.parametrize(
    "prefix", ["example.com/gpu.", "nvidia.com/gpu.", "example.com/", "gpu.example.org/feature-"]
)
def test_good_prefixes(prefix: str) -> None:
    assert check_label_prefix(prefix) == prefix


@pytest.mark.parametrize(
    ("prefix", "complaint"),
    [
        pytest.param("gpu.", "must be <domain>/", id="no-domain"),
        pytest.param("Example.com/gpu.", "DNS subdomain", id="uppercase-domain"),
        pytest.param("example.com/-gpu.", "cannot begin label names", id="name-starts-with-dash"),
        pytest.param("example.com/a/b.", "cannot begin label names", id="two-slashes"),
        pytest.param("example.com/" + "g" * 50 + ".", "at most 47 characters", id="too-long"),
    ],
)
def test_bad_prefixes_say_why(prefix: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=re.escape(complaint)):
        check_label_prefix(prefix)


def test_patch_sets_changed_removes_stale_and_leaves_the_rest_out() -> None:
    current = {P + "count": "8", P + "product": "A100", P + "stale": "x"}
    desired = {P + "count": "8", P + "product": "H100", P + "memory": "81559"}
    assert label_patch(current, desired) == {P + "product": "H100", P + "memory": "81559", P + "stale": None}
    assert label_patch(desired, desired) == {}


def test_only_labels_under_the_prefix_are_ours() -> None:
    labels = {
        P + "count": "8",
        "example.com/gpu": "x",
        "kubernetes.io/hostname": "n1",
        "example.com/gpux": "y",
    }
    assert owned_labels(labels, P) == {P + "count": "8"}
    assert owned_labels(None, P) == {}
