"""BuildKit: built once from the Go module proxy, run privately, driven with buildctl.

Why BuildKit and not the machine's docker.io 20.10: its builders predate
SOURCE_DATE_EPOCH and stamp the build time into layers and config, so two
builds never match. BuildKit >= 0.13 rewrites layer times to SOURCE_DATE_EPOCH
(`rewrite-timestamp=true`) and reads bases from local OCI layouts, so no
registry is involved.

The binaries are built from buildkit-build/go.mod (the version is pinned
there, go.sum pins every module) and cached under
<cache>/buildkit-<version>/bin. Each buildkitd this module starts has its own
config, state folder and socket, uses Debian's runc, and gives build steps the
host network (this machine has no bridge networks). It is always stopped, and
its leftover mounts undone, when the `with` block ends.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from gdp_e2e.cluster import cachefill

from . import debian, paths, tools

BUILDKIT_PACKAGE = "github.com/moby/buildkit"
COMMANDS = ("buildkitd", "buildctl")
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
#: FROM names the driver gives the bases; named contexts map them to the OCI layouts.
BUILD_BASE_REF = "gpu-device-plugin-build-base"
RUNTIME_BASE_REF = "gpu-device-plugin-runtime-base"


def binaries(*, cache: Path) -> tuple[Path, Path]:
    """(buildkitd, buildctl) at the pinned version, built first if not cached.

    Built under the folder's lock into a private folder renamed into place
    (cluster.cachefill): two image builds never build BuildKit into one folder.
    """
    version = paths.buildkit_version()
    bindir = cache / f"buildkit-{version}" / "bin"

    def complete(folder: Path) -> bool:
        return all((folder / name).is_file() for name in COMMANDS)

    def build_into(staging: Path) -> None:
        go = tools.program("go")
        ldflags = f"-s -w -X {BUILDKIT_PACKAGE}/version.Version={version}"
        env = dict(os.environ, CGO_ENABLED="0", GOFLAGS="-mod=readonly -buildvcs=false")
        env["PATH"] = f"{go.parent}:{env.get('PATH', '')}"
        log_file = bindir.parent / "build.log"
        tools.log(f"building BuildKit {version} from the Go module proxy (once); log: {log_file}")
        started = time.monotonic()
        tools.run(
            [
                go,
                "build",
                "-trimpath",
                # Upstream's static build tags: no cgo user/DNS lookups, so the binaries run anywhere.
                "-tags",
                "osusergo netgo static_build",
                "-ldflags",
                ldflags,
                "-o",
                f"{staging}/",
                *(f"{BUILDKIT_PACKAGE}/cmd/{name}" for name in COMMANDS),
            ],
            what=f"building BuildKit {version}",
            cwd=paths.BUILDKIT_BUILD_DIR,
            env=env,
            log_file=log_file,
        )
        tools.log(f"built BuildKit {version} in {time.monotonic() - started:.0f} s")

    cachefill.fill_once(
        bindir, build_into, complete=complete, what=f"BuildKit {version}", log=tools.log, remove=tools.remove
    )
    return bindir / "buildkitd", bindir / "buildctl"


class Buildkitd:
    """A private buildkitd: `with Buildkitd(...) as daemon: daemon.build(...)`."""

    def __init__(self, *, buildkitd: Path, buildctl: Path, state: Path, runc: Path) -> None:
        self.buildkitd = buildkitd
        self.buildctl = buildctl
        self.state = state
        self.runc = runc
        # Socket paths are limited to 107 bytes, so the socket lives in a short run folder.
        self.run_dir = Path(f"/run/gpu-dp-image-{os.getpid()}-{id(self) % 10_000}")
        self.address = f"unix://{self.run_dir}/buildkitd.sock"
        self.log_file = state / "buildkitd.log"
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Buildkitd:
        tools.require_root("buildkitd")
        self.state.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        config = self.state / "buildkitd.toml"
        config.write_text(
            "# Written by hack/image/buildkit.py: one private daemon, Debian's runc, host network.\n"
            "[worker.oci]\n"
            "  enabled = true\n"
            f'  binary = "{self.runc}"\n'
            '  networkMode = "host"\n'
            "  gc = true\n"
            "[worker.containerd]\n"
            "  enabled = false\n"
        )
        with self.log_file.open("ab") as out:
            self._process = subprocess.Popen(
                [
                    str(self.buildkitd),
                    "--config",
                    str(config),
                    "--root",
                    str(self.state / "root"),
                    "--addr",
                    self.address,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._wait_ready()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        assert self._process is not None
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise tools.StepError(
                    f"buildkitd exited with {self._process.returncode} at start; log {self.log_file}:\n"
                    + self.log_file.read_text(errors="replace")[-3000:]
                )
            probe = subprocess.run(
                [str(self.buildctl), "--addr", self.address, "debug", "workers"],
                capture_output=True,
                timeout=10,
                check=False,
            )
            if probe.returncode == 0 and probe.stdout.strip():
                return
            time.sleep(0.2)
        raise tools.StepError(f"buildkitd did not answer within {START_TIMEOUT_S:.0f} s; log {self.log_file}")

    def close(self) -> None:
        """Stop the daemon (SIGTERM, then SIGKILL) and undo any mount it left."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=STOP_TIMEOUT_S)
        tools.unmount_below(self.state)
        tools.remove(self.run_dir)

    def build(
        self,
        *,
        context: Path,
        bases: debian.Bases,
        output: Path,
        build_args: Mapping[str, str],
        secrets: Mapping[str, Path],
        log_file: Path,
    ) -> None:
        """Build the Dockerfile in `context` into the OCI archive `output`, named paths.IMAGE_NAME."""
        exporter = ",".join(
            [
                "type=oci",
                f"dest={output}",
                f"name={paths.IMAGE_NAME}",
                "oci-mediatypes=true",
                # Layer times above SOURCE_DATE_EPOCH become SOURCE_DATE_EPOCH (the base's are older).
                "rewrite-timestamp=true",
                "compression=gzip",
                "force-compression=true",
            ]
        )
        self.build_dockerfile(
            context=context,
            layouts={"build-base": bases.build, "runtime-base": bases.runtime},
            opts={
                "build-arg:BUILD_BASE": BUILD_BASE_REF,
                f"context:{BUILD_BASE_REF}": f"oci-layout://build-base:{debian.TAG}@{bases.digest(bases.build)}",
                "build-arg:BASE": RUNTIME_BASE_REF,
                f"context:{RUNTIME_BASE_REF}": f"oci-layout://runtime-base:{debian.TAG}@{bases.digest(bases.runtime)}",
                **{f"build-arg:{key}": value for key, value in sorted(build_args.items())},
            },
            exporter=exporter,
            secrets=secrets,
            source_date_epoch=build_args.get("SOURCE_DATE_EPOCH"),
            what="buildctl build",
            log_file=log_file,
        )

    def build_dockerfile(
        self,
        *,
        context: Path,
        layouts: Mapping[str, Path],
        opts: Mapping[str, str],
        exporter: str,
        log_file: Path,
        what: str,
        secrets: Mapping[str, Path] | None = None,
        source_date_epoch: str | None = None,
    ) -> None:
        """`buildctl build` of the Dockerfile in `context`: each named OCI layout a build
        context, each opt a frontend option (build-arg:..., context:...), out through `exporter`."""
        command: list[str | Path] = [
            self.buildctl,
            "--addr",
            self.address,
            "build",
            "--progress=plain",
            "--frontend=dockerfile.v0",
            "--local",
            f"context={context}",
            "--local",
            f"dockerfile={context}",
        ]
        for name, layout in layouts.items():
            command += ["--oci-layout", f"{name}={layout}"]
        for key, value in opts.items():
            command += ["--opt", f"{key}={value}"]
        command += ["--output", exporter]
        for key, source in sorted((secrets or {}).items()):
            command += ["--secret", f"id={key},src={source}"]
        env = dict(os.environ)
        if source_date_epoch is not None:
            env["SOURCE_DATE_EPOCH"] = source_date_epoch
        tools.run(command, what=what, log_file=log_file, env=env)
