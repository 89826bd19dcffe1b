"""`gpu-device-plugin` as a real process: exit codes, the one-line error, SIGTERM."""

from __future__ import annotations

import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cli_support import environment_without_our_variables, needs_no_gpu

from gpu_device_plugin.api.v1beta1 import api_pb2 as pb
from gpu_device_plugin.api.v1beta1 import api_pb2_grpc as pb_grpc

START_TIMEOUT = 20.0  # seconds for a cold interpreter to import everything and serve
STOP_TIMEOUT = 2.0  # the promise: exit within 2 s of SIGTERM


def clean_env() -> dict[str, str]:
    return {**environment_without_our_variables(), "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def command() -> str:
    """The installed `gpu-device-plugin` entry point of this interpreter's venv."""
    found = shutil.which("gpu-device-plugin", path=str(Path(sys.executable).parent))
    assert found, "gpu-device-plugin is not installed in this venv (run scripts/bootstrap)"
    return found


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # Unix socket paths are limited to 107 bytes; pytest's tmp_path can be longer.
    with tempfile.TemporaryDirectory(prefix="gdp-cli-") as folder:
        yield Path(folder)


def run(command: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [command, *args], capture_output=True, text=True, env=clean_env(), timeout=60, check=False
    )


@pytest.mark.parametrize(
    ("args", "named"),
    [
        pytest.param(("--resource-name", "bad"), "resource-name: ", id="bad-resource-name"),
        pytest.param(("--discovery", "fake"), "fake-config: ", id="fake-with-neither-source"),
        pytest.param(
            ("--discovery", "fake", "--fake-devices", "2", "--fake-config", "x.yaml"),
            "fake-config: ",
            id="fake-with-both-sources",
        ),
    ],
)
def test_bad_configuration_exits_2(command: str, args: tuple[str, ...], named: str) -> None:
    result = run(command, "serve", *args)

    assert result.returncode == 2
    assert result.stderr.splitlines() == [result.stderr.strip()]  # one line
    assert result.stderr.startswith(f"gpu-device-plugin: bad configuration: {named}")


def test_broken_fake_file_exits_2_naming_the_field(command: str, tmp_path: Path, short_dir: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("devices:\n  - {uuid: GPU-a}\n  - {uuid: GPU-b, numa: -2}\n")
    (short_dir / "dp").mkdir()

    result = run(
        command,
        "serve",
        "--discovery",
        "fake",
        "--fake-config",
        str(broken),
        "--device-plugin-dir",
        str(short_dir / "dp"),
    )

    assert result.returncode == 2
    assert f"bad configuration: {broken}: devices.1.numa: " in result.stderr
    assert list((short_dir / "dp").iterdir()) == []


@needs_no_gpu
def test_nvml_without_a_gpu_exits_1_with_one_clear_line(command: str, short_dir: Path) -> None:
    result = run(command, "serve", "--discovery", "nvml", "--device-plugin-dir", str(short_dir))

    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("gpu-device-plugin: NVML could not be initialised: ")
    assert list(short_dir.iterdir()) == []  # nothing served


def test_the_library_under_the_driver_root_is_the_one_pynvml_loads(command: str, tmp_path: Path) -> None:
    # Any ELF library stands in: pynvml loads it, then finds no NVML symbol in it. That
    # "Function Not Found" (not "Shared Library Not Found") proves the file under the
    # root is what the real bindings opened.
    libm = next(
        (
            p.resolve()
            for p in (
                Path(d) / "libm.so.6"
                for d in (
                    "/lib/x86_64-linux-gnu",
                    "/lib64",
                    "/usr/lib/x86_64-linux-gnu",
                    "/lib/aarch64-linux-gnu",
                    "/usr/lib64",
                )
            )
            if p.exists()
        ),
        None,
    )
    if libm is None:
        pytest.skip(reason="no libm.so.6 in the usual folders")
    folder = tmp_path / "usr/lib64"
    folder.mkdir(parents=True)
    # A copy: an absolute link would point into the root, where libm is not.
    shutil.copy(libm, folder / "libnvidia-ml.so.1")

    result = run(command, "discover", "--driver-root", str(tmp_path))

    assert result.returncode == 1
    assert result.stderr.strip() == "gpu-device-plugin: NVML could not be initialised: Function Not Found"


class LineReader:
    """Collects a process's stderr lines on a thread, so the test can wait for one."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, args=(process,), daemon=True)
        self._thread.start()

    def _pump(self, process: subprocess.Popen[str]) -> None:
        assert process.stderr is not None
        for line in process.stderr:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        while True:
            line = self._queue.get(timeout=timeout)
            if line is None:
                raise AssertionError(f"process ended before logging {pattern!r}: {self.lines}")
            self.lines.append(line)
            if found := re.search(pattern, line):
                return found

    def rest(self, timeout: float) -> list[str]:
        self._thread.join(timeout)
        while not self._queue.empty():
            line = self._queue.get_nowait()
            if line is not None:
                self.lines.append(line)
        return self.lines


@pytest.fixture
def serving_without_gpu(
    command: str, short_dir: Path
) -> Iterator[tuple[subprocess.Popen[str], LineReader, Path]]:
    plugin_dir = short_dir / "dp"
    plugin_dir.mkdir()  # the kubelet's folder always exists
    process = subprocess.Popen(
        [
            command,
            "serve",
            "--discovery",
            "nvml",
            "--no-fail-on-init-error",
            "--device-plugin-dir",
            str(plugin_dir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )
    try:
        yield process, LineReader(process), plugin_dir
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)


@needs_no_gpu
def test_nvml_without_fail_on_init_error_serves_zero_devices(
    serving_without_gpu: tuple[subprocess.Popen[str], LineReader, Path],
) -> None:
    process, reader, plugin_dir = serving_without_gpu

    serving = reader.wait_for(r"serving at (\S+\.sock)", START_TIMEOUT)
    socket = Path(serving.group(1))
    assert socket.parent == plugin_dir
    errors = [line for line in reader.lines if " ERROR " in line]
    assert len(errors) == 1
    assert "NVML could not be initialised" in errors[0]
    assert "serving zero devices" in errors[0]

    # The kubelet's view: an empty device list, not a crash loop.
    with grpc.insecure_channel(f"unix://{socket}") as channel:
        stream = pb_grpc.DevicePluginStub(channel).ListAndWatch(pb.Empty(), timeout=5)
        first = next(stream)
        stream.cancel()
    assert list(first.devices) == []

    signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)
    assert process.wait(STOP_TIMEOUT + 3) == 0
    assert time.monotonic() - signalled < STOP_TIMEOUT
    reader.rest(timeout=5)
    assert not socket.exists()
    assert list(plugin_dir.glob("*.sock")) == []
    assert not any("Traceback" in line for line in reader.lines), reader.lines
