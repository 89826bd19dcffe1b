"""`serve` with node labels and events: its flags, and the daemon beside a kubelet and an API server.

The kubelet side must never wait on the API server: with the API server
unreachable or silent the plugin still registers, streams health and stops
within 2 s of SIGTERM. And a plain `serve` never loads the kubernetes client.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from cluster_support import NODE, PREFIX

from gpu_device_plugin.backends.fake.spec import fake_uuid
from gpu_device_plugin.cli import main as cli_main
from gpu_device_plugin.cli import serve as serve_module
from gpu_device_plugin.cli.config import ServeConfig
from gpu_device_plugin.cli.main import main
from gpu_device_plugin.cluster.config import ClusterConfig
from gpu_device_plugin.cluster.events import UNHEALTHY
from gpu_device_plugin.errors import ConfigError
from gpu_device_plugin.resources.settings import MigStrategy
from gpu_device_plugin.server.kubelet_standin import StandinKubelet
from testsupport.fakeapi import FakeApiServer, node, unreachable_kubeconfig
from testsupport.fakegpus import write_fake_config
from testsupport.process import serve_argv

FAKE = ("--discovery", "fake", "--fake-devices", "1")


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    with FakeApiServer() as server:
        server.nodes[NODE] = node(NODE, labels={"team": "ml"})
        yield server


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[ServeConfig]:
    """Stands in for the daemon: records the ServeConfig `serve` would run with."""
    for name in list(os.environ):
        if name.startswith("GPU_DP_") or name == "NODE_NAME":
            monkeypatch.delenv(name)
    monkeypatch.setattr(cli_main, "configure_logging", lambda **_: None)
    configs: list[ServeConfig] = []

    async def record(config: ServeConfig, *_: object, **__: object) -> None:
        configs.append(config)

    monkeypatch.setattr(serve_module, "serve", record)
    return configs


# --- flags -------------------------------------------------------------------------------


def test_off_by_default(served: list[ServeConfig]) -> None:
    result = CliRunner().invoke(main, ["serve", *FAKE])
    assert result.exit_code == 0, result.output
    assert served[0].cluster == ClusterConfig()
    assert not served[0].cluster.enabled


def test_flags_and_the_downward_api_variable(served: list[ServeConfig], tmp_path: Path) -> None:
    kubeconfig = unreachable_kubeconfig(tmp_path)
    env = {
        "GPU_DP_NODE_LABELS": "true",
        "GPU_DP_NODE_EVENTS": "1",
        "GPU_DP_LABEL_PREFIX": "nvidia.com/gpu.",
        "GPU_DP_KUBECONFIG": str(kubeconfig),
        "NODE_NAME": "node-from-downward-api",
    }
    result = CliRunner().invoke(main, ["serve", *FAKE], env=env)
    assert result.exit_code == 0, result.output
    assert served[0].cluster == ClusterConfig(
        node_labels=True,
        node_events=True,
        label_prefix="nvidia.com/gpu.",
        kubeconfig=kubeconfig,
        node_name="node-from-downward-api",
    )


def test_node_name_flag_and_variable_beat_node_name(served: list[ServeConfig]) -> None:
    env = {"NODE_NAME": "downward", "GPU_DP_NODE_NAME": "ours"}
    CliRunner().invoke(main, ["serve", *FAKE, "--node-events"], env=env)
    CliRunner().invoke(main, ["serve", *FAKE, "--node-events", "--node-name", "flag"], env=env)
    assert [c.cluster.node_name for c in served] == ["ours", "flag"]


def test_config_file_switches_them_on(served: list[ServeConfig], tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("node-labels: true\nnode-name: from-file\nlabel-prefix: example.org/accel.\n")
    result = CliRunner().invoke(main, ["serve", "--config", str(config), *FAKE])
    assert result.exit_code == 0, result.output
    assert served[0].cluster.node_labels
    assert served[0].cluster.node_name == "from-file"
    assert served[0].cluster.label_prefix == "example.org/accel."


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        pytest.param(
            ["--node-labels"], "node-name: --node-labels needs this node's name", id="labels-no-node"
        ),
        pytest.param(
            ["--node-events"], "node-name: --node-events needs this node's name", id="events-no-node"
        ),
        pytest.param(["--label-prefix", "gpu."], "label-prefix: 'gpu.' must be <domain>/", id="prefix"),
        pytest.param(
            ["--node-labels", "--node-name", "n", "--kubeconfig", "/nonexistent/kc"],
            "kubeconfig: /nonexistent/kc is not a file",
            id="kubeconfig-missing",
        ),
    ],
)
def test_bad_cluster_flags_exit_2_naming_the_field(
    served: list[ServeConfig], args: list[str], complaint: str
) -> None:
    result = CliRunner().invoke(main, ["serve", *FAKE, *args])
    assert result.exit_code == 2
    assert f"bad configuration: {complaint}" in result.output
    assert served == []


def test_a_plain_serve_never_imports_the_kubernetes_client() -> None:
    code = (
        "import sys\n"
        "import gpu_device_plugin.cli.main, gpu_device_plugin.cli.serve, gpu_device_plugin.cluster.tasks\n"
        "from gpu_device_plugin.cli.config import ServeConfig\n"
        "ServeConfig()\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'kubernetes')\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr


# --- the daemon, in-process, beside the test kubelet --------------------------------------


def cluster(kubeconfig: Path) -> ClusterConfig:
    return ClusterConfig(node_labels=True, node_events=True, kubeconfig=kubeconfig, node_name=NODE)


async def test_labels_and_events_beside_the_kubelet(
    kubelet: StandinKubelet, fake_config: Path, start_plugin, api: FakeApiServer, tmp_path: Path
) -> None:
    start_plugin(fake_config, cluster=cluster(api.write_kubeconfig(tmp_path / "kc")))
    await kubelet.wait_registered()
    await api.until(lambda: api.labels(NODE).get(PREFIX + "count") == "8", what="labels")
    assert api.labels(NODE)["team"] == "ml"
    write_fake_config(fake_config, unhealthy=(3,))
    await api.until(lambda: len(api.events) == 1, what="a GPUUnhealthy Event")
    (event,) = api.event_objects()
    assert event["reason"] == UNHEALTHY
    assert fake_uuid(3) in event["message"]
    assert len(api.calls("PATCH")) == 1  # health changes no label


async def test_mixed_mig_labels_from_serve(
    kubelet: StandinKubelet, start_plugin, api: FakeApiServer, tmp_path: Path
) -> None:
    """serve hands its resource settings to the labeler: GFD's MIG keys for what it serves."""
    fake = tmp_path / "mig.yaml"
    fake.write_text(
        "model: NVIDIA H100 80GB HBM3\nmemory_mib: 81559\n"
        "devices:\n  - {mig: [1g.10gb, 1g.10gb, 3g.40gb]}\n  - {mig: [1g.10gb]}\n  - {}\n"
    )
    start_plugin(
        fake,
        cluster=cluster(api.write_kubeconfig(tmp_path / "kc")),
        resource_name="nvidia.com/gpu",
        mig_strategy=MigStrategy.MIXED,
    )
    domain = PREFIX.partition("/")[0]
    await api.until(lambda: api.labels(NODE).get(f"{domain}/mig-1g.10gb.count") == "3", what="MIG labels")
    labels = api.labels(NODE)
    assert labels[f"{domain}/mig.strategy"] == "mixed"
    assert labels[f"{domain}/mig-3g.40gb.count"] == "1"
    assert labels[f"{domain}/mig-1g.10gb.product"] == "NVIDIA-H100-80GB-HBM3-MIG-1g.10gb"
    assert labels[PREFIX + "count"] == "3"
    assert labels[PREFIX + "replicas"] == "1"  # GPU 2 is served whole


async def test_an_unreachable_api_server_never_holds_up_the_kubelet_side(
    kubelet: StandinKubelet, fake_config: Path, start_plugin, tmp_path: Path
) -> None:
    start_plugin(fake_config, cluster=cluster(unreachable_kubeconfig(tmp_path)))
    registration = await kubelet.wait_registered()
    assert len(registration.latest.devices) == 8
    write_fake_config(fake_config, unhealthy=(0,))
    await kubelet.wait_for(lambda: registration.latest.devices[0].health == "Unhealthy")


@pytest.mark.parametrize(("labels", "events"), [(True, False), (False, True), (True, True)])
async def test_a_kubeconfig_that_cannot_be_loaded_stops_serve_as_bad_configuration(
    kubelet: StandinKubelet, fake_config: Path, start_plugin, tmp_path: Path, labels: bool, events: bool
) -> None:
    # Readable YAML naming a server, so the check at start passes; the client's loader
    # then fails on the certificate data (not base64), when it first connects.
    broken = tmp_path / "broken.kubeconfig"
    broken.write_text(
        "apiVersion: v1\ncurrent-context: x\ncontexts: [{name: x, context: {cluster: c, user: u}}]\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:1', certificate-authority-data: a}}]\n"
        "users: [{name: u, user: {}}]\n"
    )
    config = ClusterConfig(node_labels=labels, node_events=events, kubeconfig=broken, node_name=NODE)
    plugin = start_plugin(fake_config, cluster=config)
    with pytest.raises(ConfigError, match=r"kubeconfig: cannot load .*broken\.kubeconfig: Invalid base64"):
        await asyncio.wait_for(plugin.task, 10)


# --- the real process -------------------------------------------------------------------


async def test_sigterm_stops_within_two_seconds_while_the_api_server_hangs(
    kubelet: StandinKubelet, fake_config: Path, tmp_path: Path
) -> None:
    # Accepts connections and never answers: every call waits for its read timeout.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        kubeconfig = unreachable_kubeconfig(tmp_path, port=int(silent.getsockname()[1]))
        process = await asyncio.create_subprocess_exec(
            *serve_argv(fake_config, kubelet.plugin_dir, "--node-labels", "--node-events"),
            "--kubeconfig",
            str(kubeconfig),
            "--node-name",
            NODE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "OTEL_SDK_DISABLED": "true"},
        )
        await kubelet.wait_registered(timeout=15)
        # A health change still reaches the kubelet while both cluster tasks are stuck in calls.
        write_fake_config(fake_config, unhealthy=(1,))
        registration = kubelet.registrations[0]
        await kubelet.wait_for(lambda: registration.latest.devices[1].health == "Unhealthy")
        # Wait until a request is really in flight, then stop the plugin.
        silent.settimeout(15)
        connection, _ = await asyncio.to_thread(silent.accept)
        with connection:
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            _, stderr = await asyncio.wait_for(process.communicate(), 20)
            elapsed = time.monotonic() - started
    assert process.returncode == 0, stderr.decode()
    assert elapsed < 2.0, f"took {elapsed:.2f} s to stop"
