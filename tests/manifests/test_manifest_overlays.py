"""What each overlay promises its user: where the image and the devices come from, what is wired."""

from __future__ import annotations

import os
import re
from pathlib import Path

import click
import pytest

from gpu_device_plugin import nvidia_config
from gpu_device_plugin.backends.fake.spec import parse_fake_config, to_inventory
from gpu_device_plugin.cli.main import main as cli
from gpu_device_plugin.cli.nvidia_file import flag_defaults
from gpu_device_plugin.inventory.model import Health
from gpu_device_plugin.resources.plan import plan_resources
from gpu_device_plugin.resources.settings import ResourceSettings
from testsupport.manifests import KUBELET_PLUGIN_DIR, OVERLAYS, Manifest, env_of, only, render_overlay

DIGEST = re.compile(r"^[a-z0-9.-]+(:\d+)?(/[a-z0-9._-]+)+@sha256:[0-9a-f]{64}$")
IMAGE = "ghcr.io/example/gpu-device-plugin"
LOCAL_IMAGE = "localhost/gpu-device-plugin:dev"


def _container(objects: list[Manifest]) -> Manifest:
    (container,) = only(objects, "DaemonSet")["spec"]["template"]["spec"]["containers"]
    return container


def _pod_spec(objects: list[Manifest]) -> Manifest:
    spec: Manifest = only(objects, "DaemonSet")["spec"]["template"]["spec"]
    return spec


def _value(container: Manifest, name: str) -> str | None:
    entry = env_of(container).get(name)
    return None if entry is None else entry.get("value")


# ------------------------------------------------------------------- images


def test_prod_runs_the_image_pinned_by_digest() -> None:
    image = _container(render_overlay("prod"))["image"]
    assert DIGEST.match(image), image
    assert image.startswith(f"{IMAGE}@sha256:")


@pytest.mark.parametrize(("overlay", "pull"), [("dev", "IfNotPresent"), ("kind", "Never")])
def test_dev_and_kind_run_the_locally_built_image(overlay: str, pull: str) -> None:
    container = _container(render_overlay(overlay))
    assert container["image"] == LOCAL_IMAGE
    assert container["imagePullPolicy"] == pull


# ---------------------------------------------------- flags the CLI must know


def _manifest_env(container: Manifest, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The container's literal GPU_DP_* settings, put into this process's environment."""
    for name in [n for n in os.environ if n.startswith("GPU_DP_")]:
        monkeypatch.delenv(name)
    ours = {
        name: entry["value"]
        for name, entry in env_of(container).items()
        if name.startswith("GPU_DP_") and "value" in entry
    }
    for name, value in ours.items():
        monkeypatch.setenv(name, value)
    return ours


def _mounted_file(objects: list[Manifest], path: str, folder: Path) -> Path:
    """The ConfigMap file the container sees at `path`, written under `folder` for the CLI to read."""
    container = _container(objects)
    mount = next(m for m in container["volumeMounts"] if path.startswith(m["mountPath"].rstrip("/") + "/"))
    (volume,) = [v for v in _pod_spec(objects)["volumes"] if v["name"] == mount["name"]]
    (configmap,) = [
        o
        for o in objects
        if o["kind"] == "ConfigMap" and o["metadata"]["name"] == volume["configMap"]["name"]
    ]
    local = folder / path.rsplit("/", 1)[1]
    local.write_text(configmap["data"][local.name])
    return local


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_setting_is_one_the_cli_reads_and_accepts(
    overlay: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    objects = render_overlay(overlay)
    container = _container(objects)
    # A misspelt GPU_DP_* variable would be ignored without a word by the daemon.
    serve = cli.commands["serve"]
    known = set()
    for param in serve.params:
        envvar = getattr(param, "envvar", None)
        known.update([envvar] if isinstance(envvar, str) else envvar or [])
    ours = _manifest_env(container, monkeypatch)
    assert set(ours) - known == set()
    if "GPU_DP_CONFIG_FILE" in ours:
        # NVIDIA's file from its ConfigMap: read and accepted (its callback) as the daemon would.
        local = _mounted_file(objects, ours["GPU_DP_CONFIG_FILE"], tmp_path)
        monkeypatch.setenv("GPU_DP_CONFIG_FILE", str(local))
        ours["GPU_DP_CONFIG_FILE"] = str(local)
    # The command line and every value parse as the CLI's own (a bad one exits 2 at start).
    assert container["command"] == ["gpu-device-plugin"]
    subcommand, *args = container["args"]
    assert subcommand == "serve"
    with serve.make_context(subcommand, args) as context:
        for name, value in ours.items():
            param = next(p for p in serve.params if getattr(p, "envvar", None) == name)
            if not param.expose_value:  # --config-file: its callback has read it
                continue
            assert context.get_parameter_source(param.name) is click.core.ParameterSource.ENVIRONMENT
            assert str(context.params[param.name]).lower() == value.lower(), name


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("probe", ["startupProbe", "readinessProbe", "livenessProbe"])
def test_probes_check_serving_not_device_health(
    overlay: str, probe: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An unhealthy GPU must not restart the plugin nor hold up a rolling update;
    # test_manifest_probe_command.py runs this command against a real plugin.
    container = _container(render_overlay(overlay))
    command = container[probe]["exec"]["command"]
    assert command[:2] == ["gpu-device-plugin", "probe"]
    _manifest_env(container, monkeypatch)
    probe_command = cli.commands["probe"]
    with probe_command.make_context("probe", command[2:]) as context:
        assert context.params["serving_only"] is True
        # The same environment as `serve`: it looks where the daemon serves.
        assert str(context.params["device_plugin_dir"]) == KUBELET_PLUGIN_DIR
        assert context.params["resource_name"] == _value(container, "GPU_DP_RESOURCE_NAME")


# ------------------------------------------------------------- device source


def test_dev_serves_fake_gpus_with_debug_logs_and_loopback_metrics() -> None:
    container = _container(render_overlay("dev"))
    assert _value(container, "GPU_DP_DISCOVERY") == "fake"
    assert int(_value(container, "GPU_DP_FAKE_DEVICES") or 0) > 0
    assert _value(container, "GPU_DP_LOG_LEVEL") == "DEBUG"
    assert (_value(container, "GPU_DP_METRICS_ADDRESS") or "").startswith("127.0.0.1:")


def test_kind_fake_config_is_eight_dgx_h100_gpus_our_schema_accepts() -> None:
    objects = render_overlay("kind")
    configmap = only(objects, "ConfigMap")
    assert configmap["metadata"]["name"] == "gpu-device-plugin-fake"
    config = parse_fake_config(configmap["data"]["fake.yaml"], source="overlays/kind fake.yaml")
    inventory = to_inventory(config)
    assert len(inventory.devices) == 8
    assert all(device.health is Health.HEALTHY for device in inventory.devices)
    assert config.topology is not None
    assert config.topology.preset == "dgx-h100"
    assert inventory.topology is not None


def test_kind_mounts_the_configmap_as_a_folder_the_daemon_reads() -> None:
    # A subPath mount never sees the kubelet's `..data` swap: edits would not propagate.
    objects = render_overlay("kind")
    spec = _pod_spec(objects)
    container = _container(objects)
    (volume,) = [v for v in spec["volumes"] if "configMap" in v]
    assert volume["configMap"]["name"] == only(objects, "ConfigMap")["metadata"]["name"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    assert "subPath" not in mount
    assert _value(container, "GPU_DP_DISCOVERY") == "fake"
    assert _value(container, "GPU_DP_FAKE_CONFIG") == f"{mount['mountPath']}/fake.yaml"


def test_kind_time_slicing_shares_the_eight_fake_gpus_four_ways(tmp_path: Path) -> None:
    objects = render_overlay("kind-time-slicing")
    container = _container(objects)
    assert _value(container, "GPU_DP_RESOURCE_NAME") == "nvidia.com/gpu"
    nvidia_file = _mounted_file(objects, _value(container, "GPU_DP_CONFIG_FILE") or "", tmp_path)
    sharing = flag_defaults(nvidia_config.load(nvidia_file)).sharing
    assert sharing is not None
    assert sharing.fail_requests_greater_than_one
    fake = next(o for o in objects if o["kind"] == "ConfigMap" and "fake.yaml" in o["data"])
    inventory = to_inventory(parse_fake_config(fake["data"]["fake.yaml"], source="fake.yaml"))

    (manager,) = plan_resources(ResourceSettings("nvidia.com/gpu", sharing=sharing), inventory)

    assert manager.resource_name == "nvidia.com/gpu"
    assert len(manager.devices(inventory).devices) == 32


def test_prod_uses_nvml_on_gpu_nodes_through_the_nvidia_runtime() -> None:
    objects = render_overlay("prod")
    spec = _pod_spec(objects)
    container = _container(objects)
    assert _value(container, "GPU_DP_DISCOVERY") == "nvml"
    assert spec["runtimeClassName"] == "nvidia"
    assert _value(container, "NVIDIA_VISIBLE_DEVICES") == "all"
    terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    keys = {e["key"] for term in terms["nodeSelectorTerms"] for e in term["matchExpressions"]}
    assert "nvidia.com/gpu.present" in keys
    assert _value(container, "GPU_DP_NODE_LABELS") == "true"
    assert _value(container, "GPU_DP_NODE_EVENTS") == "true"


@pytest.mark.parametrize("overlay", ["dev", "kind"])
def test_fake_overlays_need_no_nvidia_runtime(overlay: str) -> None:
    objects = render_overlay(overlay)
    assert "runtimeClassName" not in _pod_spec(objects)
    assert "NVIDIA_VISIBLE_DEVICES" not in env_of(_container(objects))


# ------------------------------------------------------------ observability


def test_the_telemetry_components_are_optional() -> None:
    # Only prod serves metrics (test_prod_components.py); dev and kind say nothing of a collector.
    for overlay in ("dev", "kind"):
        container = _container(render_overlay(overlay))
        assert not any(name.startswith("OTEL_") for name in env_of(container)), overlay
        assert "ports" not in container, overlay
