"""Runs the built image with runc and checks what a user would see.

The image's layers are unpacked into a root filesystem and each check runs as
a runc container the way the DaemonSet runs it: root, a read-only root
filesystem, no capabilities at all, the image's own environment. Checks:

- `gpu-device-plugin --version` names the version the image is labelled with;
- `gpu-device-plugin discover --json` on two fake GPUs reports the same
  devices as this checkout's plugin does (same code, deterministic UUIDs);
- the kubernetes client the daemon imports still imports after trimming;
- nothing to build or install software with is left (compilers, pip);
- `ctr images import` (a private containerd, as the e2e cluster uses) registers
  it under the name the DaemonSet runs.

Each check raises SmokeError naming what differed. Nothing is left running.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from . import ociread, paths, tools

RUN_TIMEOUT_S = 120
FORBIDDEN = ("usr/bin/gcc", "usr/bin/cc", "usr/bin/apt-get", "usr/bin/dpkg", "opt/venv/bin/pip")
KUBERNETES_IMPORT = (
    "import kubernetes, kubernetes.client, kubernetes.config; "
    "from kubernetes.client import ApiClient, CoreV1Api, V1Node; print('kubernetes', kubernetes.__version__)"
)


class SmokeError(RuntimeError):
    """The image does not behave as a user expects; the message says how."""


@dataclass(frozen=True)
class Result:
    exit_code: int
    stdout: str
    stderr: str


class Container:
    """An unpacked image that runs one command per `run` call under runc."""

    def __init__(self, image: ociread.Image, workdir: Path, runc: Path) -> None:
        self.image = image
        self.runc = runc
        self.bundle = workdir / "bundle"
        self.rootfs = self.bundle / "rootfs"
        self.state = workdir / "runc-state"
        self.count = 0
        ociread.unpack(image, self.rootfs)

    def run(self, args: list[str]) -> Result:
        self.count += 1
        container_id = f"gpu-dp-image-smoke-{self.count}"
        spec = self._spec(args)
        (self.bundle / "config.json").write_text(json.dumps(spec, indent=1))
        try:
            done = subprocess.run(
                [
                    str(self.runc),
                    "--root",
                    str(self.state),
                    "run",
                    "--bundle",
                    str(self.bundle),
                    container_id,
                ],
                capture_output=True,
                text=True,
                timeout=RUN_TIMEOUT_S,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        finally:
            subprocess.run(
                [str(self.runc), "--root", str(self.state), "delete", "--force", container_id],
                capture_output=True,
                check=False,
            )
        return Result(done.returncode, done.stdout, done.stderr)

    def _spec(self, args: list[str]) -> dict[str, object]:
        """runc's default spec, changed to run like the DaemonSet: read-only, no capabilities."""
        self.bundle.mkdir(parents=True, exist_ok=True)
        (self.bundle / "config.json").unlink(missing_ok=True)
        tools.run([self.runc, "spec", "--bundle", self.bundle], what="runc spec")
        spec: dict[str, object] = json.loads((self.bundle / "config.json").read_text())
        image_config = self.image.config.get("config", {})
        process = spec["process"]
        assert isinstance(process, dict)
        process["terminal"] = False
        process["args"] = args
        process["env"] = list(image_config.get("Env") or [])
        process["cwd"] = image_config.get("WorkingDir") or "/"
        process["user"] = {"uid": 0, "gid": 0}
        process["capabilities"] = {
            key: [] for key in ("bounding", "effective", "inheritable", "permitted", "ambient")
        }
        process["noNewPrivileges"] = True
        spec["root"] = {"path": "rootfs", "readonly": True}
        spec["hostname"] = "gpu-dp-image-smoke"
        return spec


def _expect(result: Result, what: str) -> str:
    if result.exit_code != 0:
        raise SmokeError(f"{what} exited {result.exit_code}:\n{result.stderr[-2000:]}{result.stdout[-1000:]}")
    return result.stdout


def check(image: ociread.Image, *, runc: Path) -> list[str]:
    """Run every check against `image`; return one line per passed check."""
    passed = []
    with tempfile.TemporaryDirectory(prefix="gpu-dp-image-smoke-") as scratch:
        container = Container(image, Path(scratch), runc)
        entrypoint = list(image.config.get("config", {}).get("Entrypoint") or [])
        if not entrypoint:
            raise SmokeError("the image has no ENTRYPOINT")

        version = image.labels.get("org.opencontainers.image.version", "")
        output = _expect(container.run([*entrypoint, "--version"]), "gpu-device-plugin --version")
        if "gpu-device-plugin" not in output or (version and version not in output):
            raise SmokeError(
                f"--version printed {output.strip()!r}, expected the label's version {version!r}"
            )
        passed.append(f"--version: {output.strip()}")

        discover = ["discover", "--json", "--discovery", "fake", "--fake-devices", "2"]
        output = _expect(container.run([*entrypoint, *discover]), "gpu-device-plugin discover --json")
        report = json.loads(output)
        devices = report.get("devices", [])
        if report.get("backend") != "fake" or len(devices) != 2:
            raise SmokeError(f"discover on 2 fake GPUs reported {len(devices)} devices: {output[:500]}")
        if any(device.get("health") != "Healthy" for device in devices):
            raise SmokeError(f"discover reported an unhealthy fake GPU: {output[:800]}")
        expected = _checkout_discover(discover)
        if expected is not None and expected != report:
            raise SmokeError(
                "the image's discover output differs from this checkout's:\n"
                f"image:    {json.dumps(report, sort_keys=True)[:600]}\n"
                f"checkout: {json.dumps(expected, sort_keys=True)[:600]}"
            )
        passed.append(
            "discover --json (2 fake GPUs): "
            + ", ".join(device["uuid"] for device in devices)
            + (" (same as this checkout)" if expected is not None else "")
        )

        output = _expect(
            container.run(["/opt/venv/bin/python", "-c", KUBERNETES_IMPORT]),
            "importing the kubernetes client",
        )
        passed.append(f"import kubernetes.client / kubernetes.config: {output.strip()}")

        present = [path for path in FORBIDDEN if (container.rootfs / path).exists()]
        if present:
            raise SmokeError(f"the final image carries build tools: {', '.join(present)}")
        passed.append(f"no build tools ({', '.join(FORBIDDEN)} absent)")
    return passed


def _checkout_discover(args: list[str]) -> dict[str, object] | None:
    """This checkout's own answer, when its .venv is set up (the tasks make sure it is)."""
    command = paths.REPO / ".venv" / "bin" / "gpu-device-plugin"
    if not command.is_file():
        return None
    done = subprocess.run([str(command), *args], capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise SmokeError(f"this checkout's discover failed: {done.stderr[-1000:]}")
    loaded: dict[str, object] = json.loads(done.stdout)
    return loaded


def containerd_import(image: ociread.Image, *, containerd: Path, ctr: Path) -> str:
    """Import the archive into a private containerd and check the name it registers."""
    with tempfile.TemporaryDirectory(prefix="gpu-dp-image-ctrd-") as scratch:
        folder = Path(scratch)
        socket = folder / "containerd.sock"
        config = folder / "config.toml"
        config.write_text(
            "version = 2\n"
            f'root = "{folder / "root"}"\n'
            f'state = "{folder / "state"}"\n'
            f'[grpc]\n  address = "{socket}"\n'
            '[plugins."io.containerd.grpc.v1.cri"]\n  disable = true\n'
        )
        with (folder / "containerd.log").open("wb") as log_file:
            daemon = subprocess.Popen(
                [str(containerd), "--config", str(config)],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        ctr_base = [str(ctr), "--address", str(socket), "--namespace", "k8s.io"]
        try:
            deadline = time.monotonic() + 30
            while subprocess.run([*ctr_base, "version"], capture_output=True, check=False).returncode != 0:
                if daemon.poll() is not None or time.monotonic() > deadline:
                    raise SmokeError(
                        "the private containerd did not start: " + (folder / "containerd.log").read_text()
                    )
                time.sleep(0.2)
            tools.run(
                [*ctr_base, "images", "import", "--snapshotter", "overlayfs", str(image.archive)],
                what="ctr images import",
                timeout=RUN_TIMEOUT_S,
            )
            listed = tools.run([*ctr_base, "images", "ls", "--quiet"], what="ctr images ls").split()
        finally:
            os.killpg(daemon.pid, signal.SIGTERM)
            daemon.wait(timeout=30)
            tools.unmount_below(folder)
        if paths.IMAGE_NAME not in listed:
            raise SmokeError(f"ctr images import registered {listed}, not {paths.IMAGE_NAME}")
    return f"ctr images import registers {paths.IMAGE_NAME}"
