"""The cluster itself works, before any plugin is involved: the node is Ready and a plain pod runs."""

from __future__ import annotations

from kubernetes import client

from conftest import ClusterUnderTest, Pods


def test_node_is_ready(cluster: ClusterUnderTest) -> None:
    node: client.V1Node = cluster.core.read_node(cluster.node_name)
    ready = {c.type: c.status for c in node.status.conditions}.get("Ready")
    assert ready == "True", f"node conditions: {node.status.conditions}"


def test_plain_pod_runs_and_its_log_is_readable(pods: Pods) -> None:
    name = pods.create("plain", gpus=0)
    pods.running(name)
    # No device requested: the plugin's variable must be absent.
    assert pods.devices(name) == []
