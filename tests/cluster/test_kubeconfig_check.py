"""The kubeconfig read at start, without the client: refuse what the client could not use, pass the rest."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpu_device_plugin.cluster.config import ClusterConfig
from gpu_device_plugin.cluster.kubeconfig import check_kubeconfig
from gpu_device_plugin.errors import ConfigError
from testsupport.fakeapi import write_kubeconfig

CONTEXTS = "contexts: [{name: a, context: {cluster: one, user: u}}, {name: b, context: {cluster: two}}]\n"
CLUSTERS = "clusters: [{name: one, cluster: {server: 'https://10.0.0.1'}}, {name: two, cluster: {}}]\n"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        pytest.param(
            "a: [\n",
            "is not valid YAML: expected the node content, but found '<stream end>' (line 2, column 1)",
            id="not-yaml",
        ),
        pytest.param("\n", "is empty", id="empty"),
        pytest.param("just text\n", "must be a mapping", id="a-string"),
        pytest.param("clusters: []\n", "has no current-context", id="no-current-context"),
        pytest.param("current-context: a\n", "contexts must be a list", id="no-contexts"),
        pytest.param(
            "current-context: c\n" + CONTEXTS, "no entry named 'c' in contexts", id="unknown-context"
        ),
        pytest.param(
            "current-context: a\ncontexts: [{name: a}]\n",
            "contexts entry 'a' has no context",
            id="empty-context",
        ),
        pytest.param(
            "current-context: a\ncontexts: [{name: a, context: {}}]\n",
            "context 'a' names no cluster",
            id="no-cluster-named",
        ),
        pytest.param(
            "current-context: a\n" + CONTEXTS + "clusters: []\n",
            "no entry named 'one' in clusters",
            id="unknown-cluster",
        ),
        pytest.param(
            "current-context: b\n" + CONTEXTS + CLUSTERS, "cluster 'two' has no server", id="no-server"
        ),
    ],
)
def test_a_broken_kubeconfig_is_refused_naming_the_file(text: str, reason: str, tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(text)

    with pytest.raises(ConfigError) as caught:
        check_kubeconfig(path)

    assert caught.value.field == "kubeconfig"
    assert str(path) in caught.value.reason
    assert reason in caught.value.reason
    assert "\n" not in caught.value.reason


@pytest.mark.parametrize(
    ("entry", "key"),
    [
        (
            "clusters: [{name: one, cluster: {server: 'https://10.0.0.1', certificate-authority: ca.crt}}]",
            "certificate-authority",
        ),
        ("users: [{name: u, user: {client-certificate: /absent/u.crt}}]", "client-certificate"),
        ("users: [{name: u, user: {client-key: u.key}}]", "client-key"),
        ("users: [{name: u, user: {tokenFile: token}}]", "tokenFile"),
    ],
)
def test_a_file_it_points_at_must_exist(entry: str, key: str, tmp_path: Path) -> None:
    clusters = (
        ""
        if entry.startswith("clusters")
        else "clusters: [{name: one, cluster: {server: 'https://10.0.0.1'}}]\n"
    )
    path = tmp_path / "kubeconfig"
    path.write_text("current-context: a\n" + CONTEXTS + clusters + entry + "\n")

    with pytest.raises(ConfigError, match=rf"{key} \S+ does not exist"):
        check_kubeconfig(path)


def test_files_it_points_at_are_found_next_to_it(tmp_path: Path) -> None:
    (tmp_path / "ca.crt").write_text("")
    (tmp_path / "u.key").write_text("")
    path = tmp_path / "kubeconfig"
    path.write_text(
        "current-context: a\n"
        + CONTEXTS
        + "clusters: [{name: one, cluster: {server: 'https://10.0.0.1', certificate-authority: ca.crt}}]\n"
        + f"users: [{{name: u, user: {{client-key: {tmp_path / 'u.key'}}}}}]\n"
    )

    check_kubeconfig(path)


def test_a_binary_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_bytes(b"\xff\xfe\x00")

    with pytest.raises(ConfigError, match="is not text"):
        check_kubeconfig(path)


def test_a_usable_kubeconfig_passes(tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text("current-context: a\n" + CONTEXTS + CLUSTERS)

    check_kubeconfig(path)
    check_kubeconfig(write_kubeconfig(tmp_path / "written", "http://127.0.0.1:1"))


def test_an_explicit_context_is_the_one_checked(tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text("current-context: a\n" + CONTEXTS + CLUSTERS)

    with pytest.raises(ConfigError, match="cluster 'two' has no server"):
        check_kubeconfig(path, context="b")


def test_the_cluster_config_checks_its_kubeconfig_at_construction(tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text("a: [\n")

    with pytest.raises(ConfigError, match="is not valid YAML"):
        ClusterConfig(node_labels=True, node_name="n1", kubeconfig=path)
