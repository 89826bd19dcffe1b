"""NVIDIA's config file: NVIDIA's documented examples, each accepted with the flags it means
or refused naming the key; and every malformed file refused naming the key path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gpu_device_plugin import nvidia_config
from gpu_device_plugin.backends.fake.spec import FakeConfig, to_inventory
from gpu_device_plugin.cli.nvidia_file import describe_sharing, flag_defaults
from gpu_device_plugin.errors import ConfigError
from gpu_device_plugin.resources.plan import plan_resources
from gpu_device_plugin.resources.settings import ResourceSettings, SharedResource, Sharing, SharingStrategy

FIXTURES = Path(__file__).parent / "fixtures" / "nvidia"


@pytest.mark.parametrize(
    ("fixture", "values", "ignored"),
    [
        pytest.param(
            "flags-only.yaml",
            {
                "fail_on_init_error": True,
                "driver_root": "/",
                "pass_device_specs": False,
                "device_list_strategy": "envvar",
                "device_id_strategy": "uuid",
                "mig_strategy": "none",
            },
            [],
            id="minimal-flags",
        ),
        pytest.param(
            "mig-mixed.yaml",
            {
                "mig_strategy": "mixed",
                "fail_on_init_error": True,
                "device_list_strategy": "envvar",
                "device_id_strategy": "uuid",
            },
            [],
            id="mig-mixed",
        ),
        pytest.param(
            "flags-only.json",
            {"fail_on_init_error": False, "device_id_strategy": "index"},
            [],
            id="json",
        ),
        pytest.param(
            "resources-default.yaml",
            {"fail_on_init_error": False, "resource_name": "nvidia.com/gpu"},
            [],
            id="default-resource",
        ),
        pytest.param(
            "shared-with-gfd.yaml",
            {
                "fail_on_init_error": True,
                "mig_strategy": "none",
                "pass_device_specs": True,
                "device_list_strategy": "cdi-cri",
                "device_id_strategy": "index",
                "cdi_kind": "nvidia.com/gpu",
                "health_ignore_xids": "13,31,43",
                "health_quiet_period": 30.0,
            },
            ["flags.useNodeFeatureAPI", "flags.gfd", "flags.plugin.containerDriverRoot"],
            id="shared-with-gfd",
        ),
    ],
)
def test_accepted_examples_map_onto_our_flags(
    fixture: str, values: dict[str, Any], ignored: list[str]
) -> None:
    defaults = flag_defaults(nvidia_config.load(FIXTURES / fixture))

    assert defaults.values == values
    assert sorted(defaults.ignored) == sorted(ignored)
    # Each value remembers the key that set it, for errors and the start-up log.
    assert set(defaults.keys) == set(values)


@pytest.mark.parametrize(
    ("fixture", "key", "reason"),
    [
        pytest.param(
            "mps-with-time-slicing.yaml",
            "sharing.mps",
            "cannot be combined with sharing.timeSlicing",
            id="mps-with-time-slicing",
        ),
        pytest.param(
            "mps-with-mig.yaml",
            "sharing.mps",
            "sharing MIG devices with MPS is not supported",
            id="mps-with-mig",
        ),
        pytest.param("resources-rename.yaml", "resources.gpus", "naming GPUs by pattern", id="rename"),
    ],
)
def test_refused_examples_name_the_key(fixture: str, key: str, reason: str) -> None:
    config = nvidia_config.load(FIXTURES / fixture)  # valid NVIDIA files: the schema reads them

    with pytest.raises(ConfigError) as caught:
        flag_defaults(config)

    assert caught.value.field == key
    assert reason in caught.value.reason


def test_the_model_keeps_what_later_parts_need() -> None:
    sharing = nvidia_config.load(FIXTURES / "time-slicing.yaml").sharing.timeSlicing
    assert sharing is not None
    assert sharing.renameByDefault is True
    assert sharing.failRequestsGreaterThanOne is True
    (resource,) = sharing.resources
    assert (resource.name, resource.replicas, resource.devices, resource.rename) == (
        "nvidia.com/gpu",
        10,
        "all",
        None,
    )


@pytest.mark.parametrize(
    ("written", "meant"),
    [
        pytest.param("gpu", "nvidia.com/gpu", id="short"),
        pytest.param("nvidia.com/gpu", "nvidia.com/gpu", id="full"),
        # The kubelet's rule decides, as for --resource-name: upper case and '_' are fine there.
        pytest.param("A100_80GB", "nvidia.com/A100_80GB", id="kubelet-rule"),
    ],
)
def test_resource_names_get_nvidias_domain_and_the_kubelets_rule(written: str, meant: str) -> None:
    data = {"version": "v1", "resources": {"gpus": [{"pattern": "*", "name": written}]}}
    (gpus,) = nvidia_config.parse(data).resources.gpus
    assert gpus.name == meant


@pytest.mark.parametrize(
    ("data", "key", "reason"),
    [
        pytest.param(
            {"sharing": {"timeSlicing": {"resources": [{"name": "nvidia.com/gpu", "replicas": 0}]}}},
            "sharing.timeSlicing.resources[0].replicas",
            "must be >= 1",
            id="replicas-zero",
        ),
        pytest.param(
            {"sharing": {"mps": {"resources": [{"name": "gpu"}]}}},
            "sharing.mps.resources[0].replicas",
            "is required",
            id="replicas-missing",
        ),
        pytest.param(
            {
                "sharing": {
                    "timeSlicing": {"resources": [{"name": "gpu", "replicas": 2, "devices": ["0", "x"]}]}
                }
            },
            "sharing.timeSlicing.resources[0].devices",
            "'x' is not a GPU index",
            id="bad-device-ref",
        ),
        pytest.param(
            {"sharing": {"timeSlicing": {"resources": [{"name": "gpu", "replicas": 2, "devices": "some"}]}}},
            "sharing.timeSlicing.resources[0].devices",
            "only word allowed is 'all'",
            id="bad-devices-word",
        ),
        pytest.param(
            {"sharing": {"timeSlicing": {"resources": [{"name": "gpu", "rename": "a" * 64, "replicas": 2}]}}},
            "sharing.timeSlicing.resources[0].rename",
            "is not a valid qualified name",
            id="rename-too-long",
        ),
        pytest.param(
            {"flags": {"failOnInitErorr": True}},
            "flags.failOnInitErorr",
            "unknown key; did you mean failOnInitError?",
            id="typo",
        ),
        pytest.param(
            {"gpuDevicePlugin": {"healthQuietPerod": 3}},
            "gpuDevicePlugin.healthQuietPerod",
            "did you mean healthQuietPeriod?",
            id="typo-in-ours",
        ),
        pytest.param({"resourceName": "a.b/c"}, "resourceName", "go under gpuDevicePlugin", id="ours-at-top"),
        pytest.param(
            {"gpuDevicePlugin": {"migStrategy": "mixed"}},
            "gpuDevicePlugin.migStrategy",
            "is NVIDIA's setting: set flags.migStrategy instead",
            id="mig-strategy-in-ours",
        ),
        pytest.param(
            {"gpuDevicePlugin": {"driverRoot": "/"}},
            "gpuDevicePlugin.driverRoot",
            "is NVIDIA's setting: set flags.nvidiaDriverRoot instead",
            id="nvidia-key-in-ours",
        ),
        pytest.param(
            {"flags": {"failOnInitError": "true"}},
            "flags.failOnInitError",
            "must be true or false",
            id="bool-str",
        ),
        pytest.param(
            {"flags": {"plugin": {"deviceListStrategy": ["envvar", "nope"]}}},
            "flags.plugin.deviceListStrategy[1]",
            "got 'nope'",
            id="bad-list-strategy",
        ),
        pytest.param({"flags": {"migStrategy": "all"}}, "flags.migStrategy", "got 'all'", id="bad-mig"),
        pytest.param({"version": "v2"}, "version", "must be 'v1'", id="version"),
        pytest.param(
            {"resources": {"gpus": [{"pattern": "*", "name": "bad name"}]}},
            "resources.gpus[0].name",
            "name 'bad name' is not a valid qualified name",
            id="resource-name",
        ),
        pytest.param({"imex": {"channelIDs": [3]}}, "imex.channelIDs", "must be [] or [0]", id="imex"),
        pytest.param({"flags": "x"}, "flags", "must be a mapping", id="section-not-mapping"),
        pytest.param(["v1"], "", "must be a mapping", id="file-not-mapping"),
    ],
)
def test_malformed_files_name_the_key_path(data: Any, key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        nvidia_config.parse(data)

    assert caught.value.field == key
    assert reason in caught.value.reason


@pytest.mark.parametrize(
    ("data", "key", "reason"),
    [
        pytest.param(
            {"flags": {"plugin": {"deviceListStrategy": "volume-mounts"}}},
            "flags.plugin.deviceListStrategy",
            "volume-mounts is not supported: one of envvar or cdi-cri",
            id="volume-mounts",
        ),
        pytest.param(
            {"flags": {"plugin": {"deviceListStrategy": ["envvar", "cdi-cri"]}}},
            "flags.plugin.deviceListStrategy",
            "not several",
            id="two-strategies",
        ),
        pytest.param(
            {"resources": {"mig": [{"pattern": "*", "name": "mig"}]}}, "resources.mig", "MIG", id="mig-res"
        ),
        pytest.param({"flags": {"gdsEnabled": True}}, "flags.gdsEnabled", "GPUDirect Storage", id="gds"),
        pytest.param(
            {"flags": {"nvidiaDevRoot": "/dev-root"}}, "flags.nvidiaDevRoot", "under", id="dev-root"
        ),
        pytest.param({"imex": {"channelIDs": [0]}}, "imex.channelIDs", "IMEX", id="imex"),
        pytest.param(
            {"flags": {"plugin": {"kubeletSocket": "/var/lib/kubelet/other.sock"}}},
            "flags.plugin.kubeletSocket",
            "kubelet.sock",
            id="kubelet-socket",
        ),
        pytest.param(
            {
                "resources": {"gpus": [{"pattern": "*", "name": "gpu"}]},
                "gpuDevicePlugin": {"resourceName": "a.b/c"},
            },
            "gpuDevicePlugin.resourceName",
            "also set by resources.gpus[0].name",
            id="name-twice",
        ),
        pytest.param(
            {"flags": {"plugin": {"sharedDevicesAllocationPolicy": "spread"}}},
            "flags.plugin.sharedDevicesAllocationPolicy",
            "spread (NVIDIA v0.20.1) is not supported: distributed (which spreads) or packed",
            id="spread",
        ),
    ],
)
def test_what_we_cannot_do_yet_is_refused_naming_the_key(data: Any, key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        flag_defaults(nvidia_config.parse(data))

    assert caught.value.field == key
    assert reason in caught.value.reason


def test_settings_that_change_nothing_are_accepted() -> None:
    data = {
        "flags": {
            "nvidiaDriverRoot": "/run/nvidia/driver",
            "nvidiaDevRoot": "/run/nvidia/driver",  # the same: nothing to do differently
            "deviceDiscoveryStrategy": "auto",
            "plugin": {"kubeletSocket": "/var/lib/kubelet/device-plugins/kubelet.sock"},
        },
        "sharing": {"timeSlicing": {"renameByDefault": True}},  # no resources: nothing shared
        "imex": {"channelIDs": []},
    }
    defaults = flag_defaults(nvidia_config.parse(data))

    assert defaults.values == {
        "driver_root": "/run/nvidia/driver",
        "device_plugin_dir": "/var/lib/kubelet/device-plugins",
    }
    assert defaults.ignored == ["flags.deviceDiscoveryStrategy"]


def test_an_empty_file_is_all_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert flag_defaults(nvidia_config.load(path)).values == {}


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        pytest.param(b"flags: [\n", "is not YAML or JSON: expected", id="yaml"),
        pytest.param(b"\xff\xfe\x00", "not UTF-8", id="binary"),
        pytest.param(b"#" * (nvidia_config.MAX_FILE_BYTES + 1), "larger than 1 MiB", id="huge"),
    ],
)
def test_a_file_that_is_not_a_config_file_is_refused(content: bytes, reason: str, tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(content)

    with pytest.raises(ConfigError) as caught:
        nvidia_config.load(path)

    assert caught.value.field == ""
    assert reason in caught.value.reason


GPU = "nvidia.com/gpu"


@pytest.mark.parametrize(
    ("fixture", "sharing", "values"),
    [
        pytest.param(
            "time-slicing-plain.yaml",
            Sharing(SharingStrategy.TIME_SLICING, (SharedResource(GPU, 10),)),
            {},
            id="plain",
        ),
        pytest.param(
            "time-slicing.yaml",
            Sharing(
                SharingStrategy.TIME_SLICING,
                (SharedResource(GPU, 10),),
                rename_by_default=True,
                fail_requests_greater_than_one=True,
            ),
            {"mig_strategy": "none"},
            id="rename-by-default",
        ),
        pytest.param(
            "time-slicing-operator.yaml",
            Sharing(SharingStrategy.TIME_SLICING, (SharedResource(GPU, 4),)),
            {"mig_strategy": "none"},
            id="gpu-operator",
        ),
        pytest.param(
            "time-slicing-devices.yaml",
            Sharing(
                SharingStrategy.TIME_SLICING,
                (SharedResource(GPU, 4, rename="nvidia.com/gpu-small", devices=("0", "1")),),
                fail_requests_greater_than_one=True,
            ),
            {"shared_devices_allocation_policy": "packed"},
            id="some-devices-packed",
        ),
    ],
)
def test_time_slicing_examples_become_the_sharing_settings(
    fixture: str, sharing: Sharing, values: dict[str, Any]
) -> None:
    defaults = flag_defaults(nvidia_config.load(FIXTURES / fixture))

    assert defaults.sharing == sharing
    assert defaults.values == values


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        # NVIDIA's README: "a node with 8 GPUs ... would now advertise 80 nvidia.com/gpu".
        pytest.param("time-slicing-plain.yaml", {GPU: 80}, id="plain"),
        pytest.param("time-slicing.yaml", {"nvidia.com/gpu.shared": 80}, id="rename-by-default"),
        pytest.param("time-slicing-operator.yaml", {GPU: 32}, id="gpu-operator"),
        pytest.param("time-slicing-devices.yaml", {GPU: 6, "nvidia.com/gpu-small": 8}, id="some-devices"),
    ],
)
def test_time_slicing_examples_on_eight_gpus_serve_what_nvidia_would(
    fixture: str, expected: dict[str, int]
) -> None:
    defaults = flag_defaults(nvidia_config.load(FIXTURES / fixture))
    assert defaults.sharing is not None
    inventory = to_inventory(FakeConfig(count=8))

    managers = plan_resources(ResourceSettings(GPU, sharing=defaults.sharing), inventory)

    assert {m.resource_name: len(m.devices(inventory).devices) for m in managers} == expected


def test_time_slicing_without_resources_shares_nothing() -> None:
    data = {"sharing": {"timeSlicing": {"renameByDefault": True, "failRequestsGreaterThanOne": True}}}
    assert flag_defaults(nvidia_config.parse(data)).sharing is None


def test_the_start_line_names_which_devices_are_shared_and_how() -> None:
    sharing = Sharing(
        SharingStrategy.TIME_SLICING,
        (
            SharedResource(GPU, 4, rename="nvidia.com/gpu-small", devices=("0", "1")),
            SharedResource("nvidia.com/mig-1g.10gb", 2, devices=3),
        ),
        fail_requests_greater_than_one=True,
    )
    assert describe_sharing(sharing) == (
        "time-slicing (file: sharing.timeSlicing): nvidia.com/gpu (0, 1) x4 as nvidia.com/gpu-small; "
        "nvidia.com/mig-1g.10gb (the first 3) x2, one per container"
    )
