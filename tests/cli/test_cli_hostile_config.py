"""A hostile environment or configuration, in-process: exit code, the one line, nothing left behind.

Each refusal must name the field (the flag, its GPU_DP_* variable, or the
--config file and key) and the reason in one line on stderr, with no
traceback, and must come before any socket, folder or server exists.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_support import one_error_line, run
from click.testing import Result

from gpu_device_plugin.backends.config import DiscoveryKind
from gpu_device_plugin.cli.config import ServeConfig
from testsupport.fakeapi import write_kubeconfig

FAKE = ("--discovery", "fake", "--fake-devices", "1")


@pytest.fixture(autouse=True)
def _clean(clean_environment: None) -> None:
    """Every test here starts without the caller's GPU_DP_*/OTEL_* and logging set-up."""


@pytest.fixture
def plugin_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "dp"
    folder.mkdir()
    return folder


def refused(result: Result, code: int, *phrases: str) -> str:
    assert result.exit_code == code, result.output
    return one_error_line(result.stderr, *phrases)


# --- 3. the device-plugins folder ------------------------------------------------------


@pytest.fixture
def unwritable_dir(tmp_path: Path) -> Iterator[Path]:
    """A folder this process cannot create files in, whoever runs the tests."""
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    # Root writes through mode bits; sysfs refuses new files even to root.
    folder = Path("/sys/fs")
    probe = folder / "gdp-probe"
    try:
        probe.touch()
    except OSError:
        yield folder
        return
    probe.unlink()
    pytest.skip(reason="no folder refuses root's writes on this machine")


def test_a_missing_folder_is_refused_not_created(tmp_path: Path) -> None:
    absent = tmp_path / "device-plugins"

    line = refused(run("serve", *FAKE, "--device-plugin-dir", str(absent)), 2)

    assert line == (
        f"gpu-device-plugin: bad configuration: device-plugin-dir: {absent} does not exist: it must be "
        "the kubelet's device-plugins folder (the one holding kubelet.sock); check the path and, in a "
        "pod, the hostPath volume"
    )
    assert not absent.exists()


def test_a_missing_folder_from_the_environment_names_the_variable(tmp_path: Path) -> None:
    absent = tmp_path / "typo"
    env = {"GPU_DP_DEVICE_PLUGIN_DIR": str(absent)}

    refused(
        run("serve", *FAKE, env=env),
        2,
        f"bad configuration: device-plugin-dir (env GPU_DP_DEVICE_PLUGIN_DIR): {absent} does not exist",
    )
    assert not absent.exists()


def test_an_unwritable_folder_is_refused(unwritable_dir: Path) -> None:
    before = sorted(unwritable_dir.iterdir())

    refused(
        run("serve", *FAKE, "--device-plugin-dir", str(unwritable_dir)),
        2,
        f"bad configuration: device-plugin-dir: {unwritable_dir} is not writable (",
        "mount it read-write",
    )
    assert sorted(unwritable_dir.iterdir()) == before


def test_a_file_in_place_of_the_folder_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "device-plugins"
    file.write_text("")

    refused(
        run("serve", *FAKE, "--device-plugin-dir", str(file)),
        2,
        f"bad configuration: device-plugin-dir: Directory '{file}' is a file",
    )


def test_a_folder_too_long_for_a_socket_path_is_refused(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 100)
    deep.mkdir()

    refused(
        run("serve", *FAKE, "--device-plugin-dir", str(deep)),
        2,
        "bad configuration: device-plugin-dir: ",
        "would pass the 107-byte limit of unix sockets",
    )
    assert list(deep.iterdir()) == []


def test_a_good_folder_is_left_as_it_was(plugin_dir: Path, served: list[ServeConfig]) -> None:
    result = run("serve", *FAKE, "--device-plugin-dir", str(plugin_dir))

    assert result.exit_code == 0, result.output
    assert list(plugin_dir.iterdir()) == []  # the write check leaves nothing


# --- 4. the metrics port ----------------------------------------------------------------


@pytest.fixture
def taken_address() -> Iterator[str]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield f"127.0.0.1:{holder.getsockname()[1]}"


def test_a_taken_metrics_port_is_bad_configuration_before_anything_starts(
    taken_address: str, plugin_dir: Path
) -> None:
    threads = set(threading.enumerate())

    line = refused(
        run("serve", *FAKE, "--device-plugin-dir", str(plugin_dir), "--metrics-address", taken_address),
        2,
    )

    assert line == (
        f"gpu-device-plugin: bad configuration: metrics-address: cannot listen on {taken_address}: "
        "Address already in use"
    )
    assert list(plugin_dir.iterdir()) == []  # no socket: no server, no registration
    assert set(threading.enumerate()) <= threads  # no HTTP server thread left running


def test_a_taken_metrics_port_from_the_environment_names_the_variable(
    taken_address: str, plugin_dir: Path
) -> None:
    env = {"GPU_DP_METRICS_ADDRESS": taken_address}

    refused(
        run("serve", *FAKE, "--device-plugin-dir", str(plugin_dir), env=env),
        2,
        "bad configuration: metrics-address (env GPU_DP_METRICS_ADDRESS): cannot listen on",
    )


# --- 5. kubeconfig ----------------------------------------------------------------------

CONTEXT = "current-context: x\ncontexts: [{name: x, context: {cluster: c, user: u}}]\n"
BROKEN_KUBECONFIGS = [
    pytest.param("clusters: [a\n", "is not valid YAML: ", id="not-yaml"),
    pytest.param("", "is empty", id="empty"),
    pytest.param("- a\n- b\n", "must be a mapping", id="a-list"),
    pytest.param("apiVersion: v1\nkind: Config\n", "has no current-context", id="no-current-context"),
    pytest.param(
        "current-context: x\ncontexts: []\n", "no entry named 'x' in contexts", id="context-missing"
    ),
    pytest.param(CONTEXT, "clusters must be a list", id="no-clusters"),
    pytest.param(
        CONTEXT + "clusters: [{name: c, cluster: {}}]\n", "cluster 'c' has no server", id="no-server"
    ),
    pytest.param(
        CONTEXT
        + "clusters: [{name: c, cluster: {server: 'https://h:1', certificate-authority: /absent/ca}}]\n",
        "cluster 'c' certificate-authority /absent/ca does not exist",
        id="missing-ca-file",
    ),
]


@pytest.mark.parametrize(("text", "reason"), BROKEN_KUBECONFIGS)
def test_serve_refuses_a_broken_kubeconfig_at_start(
    text: str, reason: str, tmp_path: Path, plugin_dir: Path
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(text)

    result = run(
        "serve",
        *FAKE,
        "--device-plugin-dir",
        str(plugin_dir),
        "--node-labels",
        "--node-name",
        "n1",
        "--kubeconfig",
        str(kubeconfig),
    )

    refused(result, 2, "bad configuration: kubeconfig: ", str(kubeconfig), reason)
    assert list(plugin_dir.iterdir()) == []


REPORT_REASONS = {
    "not-yaml": "not valid YAML: ",
    "empty": "is empty",
    "a-list": "not a kubeconfig",
    "no-current-context": "Expected key current-context",
    "context-missing": "Expected object with name x",
    "no-clusters": "Expected object with name c",
    "no-server": "its cluster has no server",
    "missing-ca-file": "File does not exist: /absent/ca",
}


@pytest.mark.parametrize(("text", "_reason"), BROKEN_KUBECONFIGS)
def test_report_refuses_a_broken_kubeconfig(
    text: str, _reason: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(text)
    case = request.node.callspec.id

    refused(
        run("report", "--kubeconfig", str(kubeconfig)),
        2,
        f"bad configuration: kubeconfig: cannot load a kubeconfig from {kubeconfig}: ",
        REPORT_REASONS[case],
    )


def test_a_good_kubeconfig_passes_the_check(tmp_path: Path, served: list[ServeConfig]) -> None:
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", "http://127.0.0.1:1")

    result = run("serve", *FAKE, "--node-labels", "--node-name", "n1", "--kubeconfig", str(kubeconfig))

    assert result.exit_code == 0, result.output
    assert served[0].cluster.kubeconfig == kubeconfig


# --- 6. numbers: finite and in range ----------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value", "phrase"),
    [
        ("GPU_DP_HEALTH_PROBE_INTERVAL", "nan", "'nan' is not a finite number"),
        ("GPU_DP_HEALTH_PROBE_INTERVAL", "inf", "inf is not in the range 0<x<=3600"),
        ("GPU_DP_HEALTH_PROBE_INTERVAL", "0", "0.0 is not in the range 0<x<=3600"),
        ("GPU_DP_HEALTH_PROBE_INTERVAL", "-1", "-1.0 is not in the range"),
        ("GPU_DP_HEALTH_QUIET_PERIOD", "inf", "inf is not in the range 0<=x<=86400"),
        ("GPU_DP_HEALTH_QUIET_PERIOD", "nan", "'nan' is not a finite number"),
        ("GPU_DP_HEALTH_QUIET_PERIOD", "-1", "-1.0 is not in the range"),
        ("GPU_DP_FAKE_DEVICES", "1025", "1025 is not in the range 0<=x<=1024"),
        ("GPU_DP_FAKE_DEVICES", "nan", "'nan' is not a valid integer"),
    ],
)
def test_every_number_is_finite_and_in_range(
    variable: str, value: str, phrase: str, served: list[ServeConfig]
) -> None:
    field = variable.removeprefix("GPU_DP_").lower().replace("_", "-")
    env = {"GPU_DP_DISCOVERY": "fake", "GPU_DP_FAKE_DEVICES": "1", variable: value}

    refused(run("serve", env=env), 2, f"bad configuration: {field} (env {variable}): {phrase}")
    assert served == []


@pytest.mark.parametrize(
    ("flag", "value", "phrase"),
    [
        ("--health-probe-interval", "nan", "'nan' is not a finite number"),
        ("--health-quiet-period", "1e400", "inf is not in the range"),
        ("--fake-devices", "-1", "-1 is not in the range"),
    ],
)
def test_the_same_bounds_hold_for_flags(
    flag: str, value: str, phrase: str, served: list[ServeConfig]
) -> None:
    refused(
        run(
            "serve",
            "--discovery",
            "fake",
            *(() if flag == "--fake-devices" else ("--fake-devices", "1")),
            flag,
            value,
        ),
        2,
        f"bad configuration: {flag[2:]}: {phrase}",
    )
    assert served == []


@pytest.mark.parametrize(
    ("args", "phrase"),
    [
        (("--timeout", "nan"), "timeout: 'nan' is not a finite number"),
        (("--timeout", "0"), "timeout: 0.0 is not in the range 0<x<=600"),
        (("--preferred", "0"), "preferred: 0 is not in the range 1<=x<=1024"),
    ],
)
def test_probe_numbers_are_finite_and_in_range(args: tuple[str, ...], phrase: str, plugin_dir: Path) -> None:
    refused(run("probe", "--device-plugin-dir", str(plugin_dir), *args), 2, f"bad configuration: {phrase}")


# --- 7. a bad value in the --config file names the file and the key -------------------


@pytest.mark.parametrize(
    ("text", "where", "phrase"),
    [
        pytest.param(
            "fake_devices: many\n", "fake_devices", "'many' is not a valid integer", id="click-type"
        ),
        pytest.param(
            "fake-devices: 1\nhealth-probe-interval: .nan\n",
            "health-probe-interval",
            "nan is not a finite number",
            id="yaml-nan",
        ),
        pytest.param(
            "fake-devices: 1\nresource-name: bad\n",
            "resource-name",
            "'bad' must be <domain>/<name>",
            id="validated-later",
        ),
        pytest.param(
            "discovery: nvml\nfake-devices: 1\n",
            "discovery",
            "nvml contradicts --fake-devices",
            id="contradiction",
        ),
    ],
)
def test_a_bad_config_file_value_names_the_file_and_key(
    text: str, where: str, phrase: str, tmp_path: Path, served: list[ServeConfig]
) -> None:
    path = tmp_path / "plugin.yaml"
    path.write_text(text)

    line = refused(run("serve", "--config", str(path)), 2, f"bad configuration: {path}: {where}: {phrase}")

    assert "GPU_DP_" not in line
    assert served == []


# --- 8. fake options imply the fake backend; with --discovery nvml they are refused -------


@pytest.mark.parametrize(
    ("args", "env"),
    [
        pytest.param(("--fake-devices", "2"), {}, id="flag"),
        pytest.param((), {"GPU_DP_FAKE_DEVICES": "2"}, id="env"),
    ],
)
def test_a_fake_option_alone_implies_the_fake_backend(
    args: tuple[str, ...], env: dict[str, str], served: list[ServeConfig]
) -> None:
    result = run("serve", *args, env=env)

    assert result.exit_code == 0, result.output
    assert served[0].discovery.kind is DiscoveryKind.FAKE
    assert served[0].discovery.fake_devices == 2


def test_a_fake_file_alone_implies_the_fake_backend(tmp_path: Path) -> None:
    path = tmp_path / "gpus.yaml"
    path.write_text("count: 3\n")

    result = run("discover", "--fake-config", str(path))

    assert result.exit_code == 0, result.output
    assert "3 device(s), backend fake" in result.stdout


@pytest.mark.parametrize(
    ("args", "env", "where"),
    [
        pytest.param(("--discovery", "nvml", "--fake-devices", "2"), {}, "discovery", id="flags"),
        pytest.param(
            ("--fake-config", "gpus.yaml"),
            {"GPU_DP_DISCOVERY": "nvml"},
            "discovery (env GPU_DP_DISCOVERY)",
            id="env",
        ),
    ],
)
@pytest.mark.parametrize("command", ["serve", "discover"])
def test_nvml_chosen_with_a_fake_option_is_a_contradiction(
    command: str, args: tuple[str, ...], env: dict[str, str], where: str, served: list[ServeConfig]
) -> None:
    given = "--fake-devices" if "--fake-devices" in args else "--fake-config"

    refused(
        run(command, *args, env=env),
        2,
        f"bad configuration: {where}: nvml contradicts {given}, which only the fake backend reads",
    )
    assert served == []


# --- 9. no NVIDIA driver: in test_cli_hostile_process.py, a process of its own (pynvml keeps
# the first libnvidia-ml it loaded for the life of the process: here, the C fake an earlier
# test may have loaded would answer).


# --- 10. probe where nothing serves -----------------------------------------------------


@pytest.fixture
def dead_socket(plugin_dir: Path) -> Path:
    """A socket file with nothing listening: what a killed plugin leaves."""
    path = plugin_dir / "example.com-gpu-18c2f0a0b1c-1.sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
    return path


def test_probe_on_a_missing_socket(tmp_path: Path) -> None:
    path = tmp_path / "plugin.sock"

    refused(run("probe", "--socket", str(path)), 1, f"nothing is serving at {path}: no such file")


def test_probe_on_a_socket_nothing_listens_on(dead_socket: Path) -> None:
    refused(
        run("probe", "--socket", str(dead_socket)),
        1,
        f"nothing is serving at {dead_socket}: the socket exists but nothing accepts connections",
    )


def test_probe_on_a_file_that_is_not_a_socket(tmp_path: Path) -> None:
    path = tmp_path / "plugin.sock"
    path.write_text("")

    refused(run("probe", "--socket", str(path)), 1, f"nothing is serving at {path}: it is not a socket")


def test_probe_in_a_folder_without_our_socket_says_what_it_searched(plugin_dir: Path) -> None:
    (plugin_dir / "kubelet.sock").write_text("")

    refused(
        run("probe", "--device-plugin-dir", str(plugin_dir), "--resource-name", "nvidia.com/gpu"),
        1,
        f"nothing is serving at {plugin_dir}: no answering socket for nvidia.com/gpu "
        "(looked for nvidia.com-gpu-*.sock: none there",
    )


def test_probe_in_a_folder_with_only_dead_sockets(dead_socket: Path) -> None:
    refused(
        run("probe", "--device-plugin-dir", str(dead_socket.parent)),
        1,
        "no answering socket for example.com/gpu (1 match example.com-gpu-*.sock, none accepting connections",
    )


def test_probe_in_a_missing_folder(tmp_path: Path) -> None:
    refused(
        run("probe", "--device-plugin-dir", str(tmp_path / "absent")),
        1,
        "no answering socket for example.com/gpu: the folder does not exist (check --device-plugin-dir)",
    )
    assert not (tmp_path / "absent").exists()


# --- usage errors are one line too ------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ("serve", "--frobnicate"),
            "gpu-device-plugin: usage: No such option '--frobnicate' (see 'gpu-device-plugin serve --help')",
        ),
        (
            ("frobnicate",),
            "gpu-device-plugin: usage: No such command 'frobnicate' (see 'gpu-device-plugin --help')",
        ),
    ],
)
def test_usage_errors_are_one_line(args: tuple[str, ...], line: str) -> None:
    assert refused(run(*args), 2) == line


def test_no_command_still_prints_the_whole_help() -> None:
    result = run()

    assert result.exit_code == 2
    assert result.stderr.startswith("Usage: gpu-device-plugin [OPTIONS] COMMAND")
    assert "serve" in result.stderr
