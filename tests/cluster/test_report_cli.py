"""`gpu-device-plugin report` against a fake API server: table, --json, exit codes, one list per kind."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result
from test_report_model import container, gpu_node, plugin_pod, pod

from gpu_device_plugin.cli.main import main
from gpu_device_plugin.cluster.report import LIVE_PODS
from testsupport.fakeapi import FakeApiServer, unreachable_kubeconfig

PREFIX = "example.com/gpu."


@pytest.fixture
def api() -> FakeApiServer:
    with FakeApiServer() as server:
        yield server


def populate(api: FakeApiServer, nodes: list[dict[str, Any]], pods: list[dict[str, Any]]) -> None:
    for node in nodes:
        api.nodes[node["metadata"]["name"]] = node
    api.pods.extend(pods)


def report(api: FakeApiServer, folder: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    kubeconfig = api.write_kubeconfig(folder / "kubeconfig")
    return CliRunner().invoke(main, ["report", "--kubeconfig", str(kubeconfig), *args], env=env)


def small_cluster(api: FakeApiServer, *, allocatable: int = 8, ready: bool = True) -> None:
    populate(
        api,
        [
            gpu_node(
                "gpu-a",
                8,
                allocatable,
                **{PREFIX + "product": "NVIDIA-H100-80GB-HBM3", PREFIX + "count": "8"},
            ),
            gpu_node("gpu-b", 4, 4),
            gpu_node("cpu-only", None, None),
        ],
        [
            plugin_pod("gdp-aaaaa", "gpu-a", ready=ready, restarts=1),
            plugin_pod("gdp-bbbbb", "gpu-b", ready=True),
            pod("train-0", "gpu-a", container(2)),
            pod("notebook", "gpu-a", container(1), namespace="team-b"),
            pod("done", "gpu-a", container(4), status={"phase": "Succeeded"}),
            pod("web", "cpu-only", container()),
        ],
    )


def test_table_for_people(api: FakeApiServer, tmp_path: Path) -> None:
    small_cluster(api)
    result = report(api, tmp_path)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == [
        "NODE",
        "RESOURCE",
        "CAPACITY",
        "ALLOCATABLE",
        "UNHEALTHY",
        "IN",
        "USE",
        "PLUGIN",
        "POD",
        "READY",
        "RESTARTS",
    ]
    assert lines[1].split() == [
        "gpu-a",
        "example.com/gpu",
        "8",
        "8",
        "0",
        "3",
        "gpu-device-plugin/gdp-aaaaa",
        "yes",
        "1",
    ]
    assert lines[2].split() == [
        "gpu-b",
        "example.com/gpu",
        "4",
        "4",
        "0",
        "0",
        "gpu-device-plugin/gdp-bbbbb",
        "yes",
        "0",
    ]
    assert "gpu-a pods: team-a/train-0 (2), team-b/notebook (1)" in lines
    assert "gpu-a labels (example.com/gpu.*): count=8 product=NVIDIA-H100-80GB-HBM3" in lines
    assert "cpu-only" not in result.output
    assert lines[-1] == "2 node(s): example.com/gpu capacity 12, allocatable 12, in use 3"


def test_json_for_machines(api: FakeApiServer, tmp_path: Path) -> None:
    small_cluster(api, allocatable=6)
    result = report(api, tmp_path, "--json")
    assert result.exit_code == 1, result.output
    data = json.loads(result.output)
    assert data["resource"] == "example.com/gpu"
    assert data["ok"] is False
    assert data["problems"] == ["gpu-a: 2 of 8 example.com/gpu unhealthy (capacity 8, allocatable 6)"]
    gpu_a = data["nodes"][0]
    assert {k: gpu_a[k] for k in ("name", "capacity", "allocatable", "unhealthy", "in_use")} == {
        "name": "gpu-a",
        "capacity": 8,
        "allocatable": 6,
        "unhealthy": 2,
        "in_use": 3,
    }
    assert gpu_a["pods"] == [
        {"namespace": "team-a", "name": "train-0", "count": 2, "resource": "example.com/gpu"},
        {"namespace": "team-b", "name": "notebook", "count": 1, "resource": "example.com/gpu"},
    ]
    assert gpu_a["resources"] == [
        {"name": "example.com/gpu", "capacity": 8, "allocatable": 6, "unhealthy": 2, "in_use": 3}
    ]
    assert gpu_a["plugin_pods"][0]["restarts"] == 1
    assert gpu_a["labels"] == {PREFIX + "count": "8", PREFIX + "product": "NVIDIA-H100-80GB-HBM3"}


def shared_and_mig_cluster(api: FakeApiServer) -> None:
    """One node time-sliced (4 replicas of 8 GPUs, renamed .shared), one MIG mixed (one instance down)."""
    gfd = "nvidia.com/gpu."
    sliced = gpu_node(
        "sliced",
        None,
        None,
        **{gfd + "replicas": "4", gfd + "sharing-strategy": "time-slicing", gfd + "count": "8"},
    )
    sliced["status"]["capacity"]["nvidia.com/gpu.shared"] = "32"
    sliced["status"]["allocatable"]["nvidia.com/gpu.shared"] = "32"
    mig = gpu_node(
        "mig",
        None,
        None,
        **{
            "nvidia.com/mig.strategy": "mixed",
            "nvidia.com/mig-1g.10gb.count": "7",
            "nvidia.com/mig.config": "all-1g.10gb",  # the MIG manager's, not ours
        },
    )
    for kind, count in (("capacity", "7"), ("allocatable", "6")):
        mig["status"][kind]["nvidia.com/mig-1g.10gb"] = count
        mig["status"][kind]["nvidia.com/mig-3g.40gb"] = "2"
    mig["status"]["capacity"]["other.io/fpga"] = "1"  # another domain: not the plugin's
    populate(
        api,
        [sliced, mig],
        [
            plugin_pod("gdp-s", "sliced", ready=True),
            plugin_pod("gdp-m", "mig", ready=True),
            pod(
                "replica-0", "sliced", {"name": "c", "resources": {"limits": {"nvidia.com/gpu.shared": "1"}}}
            ),
            pod(
                "small",
                "mig",
                {"name": "c", "resources": {"limits": {"nvidia.com/mig-1g.10gb": "2"}}},
                {"name": "d", "resources": {"limits": {"nvidia.com/mig-3g.40gb": "1"}}},
            ),
        ],
    )


def test_shared_and_mig_resources_per_node(api: FakeApiServer, tmp_path: Path) -> None:
    shared_and_mig_cluster(api)
    args = ("--resource-name", "nvidia.com/gpu", "--label-prefix", "nvidia.com/gpu.")
    result = report(api, tmp_path, *args)
    assert result.exit_code == 1, result.output  # an unhealthy MIG instance
    rows = [line.split() for line in result.output.splitlines()[1:4]]
    assert rows == [
        ["mig", "nvidia.com/mig-1g.10gb", "7", "6", "1", "2", "gpu-device-plugin/gdp-m", "yes", "0"],
        ["mig", "nvidia.com/mig-3g.40gb", "2", "2", "0", "1"],
        ["sliced", "nvidia.com/gpu.shared", "32", "32", "0", "1", "gpu-device-plugin/gdp-s", "yes", "0"],
    ]
    lines = result.output.splitlines()
    assert (
        "mig pods: team-a/small (2 nvidia.com/mig-1g.10gb), team-a/small (1 nvidia.com/mig-3g.40gb)" in lines
    )
    assert (
        "mig labels (nvidia.com/gpu.*): nvidia.com/mig-1g.10gb.count=7 nvidia.com/mig.strategy=mixed"
    ) in lines
    assert "sliced labels (nvidia.com/gpu.*): count=8 replicas=4 sharing-strategy=time-slicing" in lines
    assert lines[-2] == (
        "2 node(s): nvidia.com/gpu capacity 0, allocatable 0, in use 0; "
        "nvidia.com/gpu.shared capacity 32, allocatable 32, in use 1; "
        "nvidia.com/mig-1g.10gb capacity 7, allocatable 6, in use 2; "
        "nvidia.com/mig-3g.40gb capacity 2, allocatable 2, in use 1"
    )
    assert lines[-1] == "problem: mig: 1 of 7 nvidia.com/mig-1g.10gb unhealthy (capacity 7, allocatable 6)"
    data = json.loads(report(api, tmp_path, *args, "--json").output)
    mig = next(n for n in data["nodes"] if n["name"] == "mig")
    assert mig["capacity"] is None  # no whole GPUs there
    assert [(r["name"], r["capacity"], r["allocatable"], r["in_use"]) for r in mig["resources"]] == [
        ("nvidia.com/mig-1g.10gb", 7, 6, 2),
        ("nvidia.com/mig-3g.40gb", 2, 2, 1),
    ]
    assert "nvidia.com/mig.config" not in mig["labels"]


def test_a_plugin_pod_not_ready_fails(api: FakeApiServer, tmp_path: Path) -> None:
    small_cluster(api, ready=False)
    result = report(api, tmp_path)
    assert result.exit_code == 1
    assert "NO (Running)" in result.output
    assert "problem: gpu-a: plugin pod gpu-device-plugin/gdp-aaaaa is not ready" in result.output


def test_another_resource_prefix_and_selector(api: FakeApiServer, tmp_path: Path) -> None:
    node = gpu_node("n1", None, None, **{"nvidia.com/gpu.product": "A100"})
    node["status"]["capacity"]["nvidia.com/gpu"] = "2"
    node["status"]["allocatable"]["nvidia.com/gpu"] = "2"
    mine = pod("nvdp-1", "n1", namespace="kube-system", labels={"app": "nvdp"})
    mine["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    populate(api, [node], [mine, plugin_pod("ours", "n1", ready=False)])
    result = report(
        api,
        tmp_path,
        "--json",
        "--resource-name",
        "nvidia.com/gpu",
        "--label-prefix",
        "nvidia.com/gpu.",
        "--selector",
        "app in (nvdp)",
    )
    assert result.exit_code == 0, result.output
    (n1,) = json.loads(result.output)["nodes"]
    assert [p["name"] for p in n1["plugin_pods"]] == ["nvdp-1"]
    assert n1["labels"] == {"nvidia.com/gpu.product": "A100"}
    assert n1["capacity"] == 2


def test_one_list_per_kind_for_300_nodes_and_3000_pods(api: FakeApiServer, tmp_path: Path) -> None:
    nodes = [gpu_node(f"gpu-{i:03d}", 8, 8 if i % 50 else 7, **{PREFIX + "count": "8"}) for i in range(300)]
    pods = [plugin_pod(f"gdp-{i:03d}", f"gpu-{i:03d}", ready=True) for i in range(300)]
    pods += [pod(f"job-{j}", f"gpu-{j % 300:03d}", container(1 + j % 2)) for j in range(2700)]
    populate(api, nodes, pods)
    started = time.perf_counter()
    result = report(api, tmp_path, "--json")
    elapsed = time.perf_counter() - started
    assert result.exit_code == 1  # six nodes have an unhealthy GPU
    data = json.loads(result.output)
    assert len(data["nodes"]) == 300
    assert sum(n["in_use"] for n in data["nodes"]) == sum(1 + j % 2 for j in range(2700))
    assert sum(n["unhealthy"] for n in data["nodes"]) == 6
    # Exactly one (paginated) list of Nodes and one of Pods: no call per node, nothing else.
    paths = [(r.method, r.path) for r in api.requests]
    assert paths == [("GET", "/api/v1/nodes")] + [("GET", "/api/v1/pods")] * math.ceil(3000 / 500)
    assert all(r.query["limit"] == "500" for r in api.requests)
    assert all(r.query["fieldSelector"] == LIVE_PODS for r in api.calls("GET", "/api/v1/pods"))
    print(f"report on 300 nodes / 3000 pods: {elapsed:.2f} s")  # the number is bench/cluster.py's to keep


def test_page_size_is_the_limit(api: FakeApiServer, tmp_path: Path) -> None:
    populate(api, [gpu_node(f"n{i}", 1, 1) for i in range(7)], [])
    result = report(api, tmp_path, "--page-size", "3")
    assert result.exit_code == 0
    assert len(api.calls("GET", "/api/v1/nodes")) == 3
    assert [r.query.get("continue") for r in api.calls("GET", "/api/v1/nodes")] == [None, "3", "6"]


def test_refused_by_rbac_is_a_clear_failure(api: FakeApiServer, tmp_path: Path) -> None:
    small_cluster(api)
    api.fail("GET", "/api/v1/pods", 403)
    result = report(api, tmp_path)
    assert result.exit_code == 1
    assert "cannot read the cluster at http://127.0.0.1:" in result.output
    assert "forbidden (403)" in result.output


def test_unreachable_cluster_is_a_clear_failure(tmp_path: Path) -> None:
    kubeconfig = unreachable_kubeconfig(tmp_path)
    port = yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]["server"].rsplit(":", 1)[1]
    result = CliRunner().invoke(main, ["report", "--kubeconfig", str(kubeconfig)])
    assert result.exit_code == 1
    assert f"cannot read the cluster at http://127.0.0.1:{port}: unreachable" in result.output


def test_context_and_kubeconfig_from_the_environment(api: FakeApiServer, tmp_path: Path) -> None:
    small_cluster(api)
    config = yaml.safe_load(api.write_kubeconfig(tmp_path / "kubeconfig").read_text())
    config["contexts"].append({"name": "broken", "context": {"cluster": "fake", "user": "nobody"}})
    config["current-context"] = "broken"
    path = tmp_path / "multi"
    path.write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(main, ["report", "--context", "fake"], env={"KUBECONFIG": str(path)})
    assert result.exit_code == 0, result.output
    assert "gpu-a" in result.output


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        pytest.param(["--selector", "a in b"], "selector: cannot parse 'a in b'", id="bad-selector"),
        pytest.param(["--label-prefix", "gpu."], "label-prefix:", id="bad-prefix"),
        pytest.param(["--resource-name", "gpu"], "resource-name:", id="bad-resource"),
        pytest.param(
            ["--context", "nope"], "kubeconfig: cannot load a kubeconfig from", id="unknown-context"
        ),
        pytest.param(
            ["--page-size", "0"], "bad configuration: page-size: 0 is not in the range", id="bad-page-size"
        ),
    ],
)
def test_usage_errors_exit_2(api: FakeApiServer, tmp_path: Path, args: list[str], complaint: str) -> None:
    result = report(api, tmp_path, *args)
    assert result.exit_code == 2, result.output
    assert complaint in result.output
    assert api.requests == []


def test_a_missing_or_broken_kubeconfig_exits_2(tmp_path: Path) -> None:
    missing = CliRunner().invoke(main, ["report", "--kubeconfig", str(tmp_path / "nope")])
    assert missing.exit_code == 2
    assert "does not exist" in missing.output
    broken = tmp_path / "broken"
    broken.write_text("apiVersion: v1\nkind: Config\n")
    result = CliRunner().invoke(main, ["report", "--kubeconfig", str(broken)])
    assert result.exit_code == 2
    assert f"bad configuration: kubeconfig: cannot load a kubeconfig from {broken}" in result.output
