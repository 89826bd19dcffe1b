"""A fake driver root: the library, its state, device nodes, and the faults API.

`FakeDriver(root, profile)` lays out, under `root`, what a GPU node's driver
gives a container runtime:

    usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1      the C fake (a copy, so the folder mounts anywhere)
    usr/lib/x86_64-linux-gnu/fake-nvml.state        what it answers (found beside the library)
    usr/lib/x86_64-linux-gnu/fake-nvml.json         this controller's record (profile + faults)
    dev/nvidia<minor>, dev/nvidiactl, dev/nvidia-uvm, dev/nvidia-uvm-tools, dev/nvidia-modeset
    dev/nvidia-caps/nvidia-cap<N>                   MIG capabilities (empty stand-ins, not device nodes)
    proc/driver/nvidia/capabilities/...             `DeviceFileMinor: N` access files, as the driver has
    proc/driver/nvidia-caps/mig-minors

and every method that injects or heals a fault rewrites the state file by
atomic rename; the library in any process notices within about a millisecond.
`FakeDriver.attach(root)` controls a root another process installed (the CLI).
Writers of one root serialise on an flock, so a test and a shell can both inject.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gdp_hack.nvmlfake.build import LIBRARY, build
from gdp_hack.nvmlfake.profile import MigInstance, Profile, ProfileError, load, parse
from gdp_hack.nvmlfake.state import (
    EVENT_DOUBLE_BIT_ECC,
    EVENT_XID_CRITICAL,
    KEEP_EVENTS,
    NVML_ERROR_DRIVER_NOT_LOADED,
    Event,
    Faults,
    Hang,
    render,
    write_atomic,
)

LIB_DIR = Path("usr/lib/x86_64-linux-gnu")
STATE_NAME = "fake-nvml.state"
RECORD_NAME = "fake-nvml.json"
CONTROL_NODES = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset")
# /proc/driver/nvidia-caps/mig-minors numbering: config 1, monitor 2, then per GPU
# minor 15 GPU instances x (the GI's own access + 8 compute instances).
_CAPS_PER_GPU = 15 * 9


def gi_cap_minor(gpu_minor: int, gi: int) -> int:
    """The nvidia-cap minor of `gpu<minor>/gi<gi>/access`."""
    return 3 + gpu_minor * _CAPS_PER_GPU + gi * 9


def ci_cap_minor(gpu_minor: int, gi: int, ci: int) -> int:
    """The nvidia-cap minor of `gpu<minor>/gi<gi>/ci<ci>/access`."""
    return gi_cap_minor(gpu_minor, gi) + 1 + ci


def _access_file(minor: int, mode: int = 0o444) -> str:
    return f"DeviceFileMinor: {minor}\nDeviceFileMode: {mode}\nDeviceFileModify: 1\n"


@dataclass
class _Edit:
    """The record being changed under the root's lock."""

    profile: Profile
    faults: Faults


class FakeDriver:
    """One fake driver root and the faults of its GPUs (indexes as in the profile)."""

    def __init__(self, root: Path, profile: Profile | Path | str, *, library: Path | None = None) -> None:
        self.root = Path(root)
        self.lib_dir.mkdir(parents=True, exist_ok=True)
        built = library or build()  # a folder from build(), or the library file itself
        source = built / LIBRARY if built.is_dir() else built
        shutil.copyfile(source, self.library)
        chosen = profile if isinstance(profile, Profile) else load(profile)
        with self._locked():
            self._save(chosen, Faults())
        self._write_nodes(chosen)

    @classmethod
    def attach(cls, root: Path) -> FakeDriver:
        """The controller of a root installed earlier (by this or another process)."""
        driver = cls.__new__(cls)
        driver.root = Path(root)
        if not driver.record_path.exists():
            raise ProfileError(f"{driver.root}: no fake driver installed here (no {LIB_DIR / RECORD_NAME})")
        return driver

    # ---- where things are --------------------------------------------------------------------

    @property
    def lib_dir(self) -> Path:
        return self.root / LIB_DIR

    @property
    def library(self) -> Path:
        return self.lib_dir / LIBRARY

    @property
    def state_path(self) -> Path:
        return self.lib_dir / STATE_NAME

    @property
    def record_path(self) -> Path:
        return self.lib_dir / RECORD_NAME

    @property
    def dev(self) -> Path:
        return self.root / "dev"

    def env(self) -> dict[str, str]:
        """What a process needs to load this fake (pynvml dlopens libnvidia-ml.so.1)."""
        return {"LD_LIBRARY_PATH": str(self.lib_dir), "FAKE_NVML_STATE": str(self.state_path)}

    @property
    def profile(self) -> Profile:
        return self._load()[0]

    @property
    def faults(self) -> Faults:
        return self._load()[1]

    # ---- faults ------------------------------------------------------------------------------

    def inject_event(self, gpu: int, event_type: int, data: int = 0, *, mig: int | None = None) -> int:
        """Delivers one event (once to each event set registered for it); returns its sequence number."""
        with self._edit() as edit:
            profile, faults = edit.profile, edit.faults
            self._check_gpu(profile, gpu)
            if mig is not None and not 0 <= mig < len(profile.devices[gpu].mig.instances):
                raise ProfileError(f"GPU {gpu} has no MIG device {mig}")
            faults.seq += 1
            faults.events.append(Event(seq=faults.seq, gpu=gpu, mig=mig, type=event_type, data=data))
            del faults.events[:-KEEP_EVENTS]
            return faults.seq

    def inject_xid(self, gpu: int, xid: int, *, mig: int | None = None) -> int:
        return self.inject_event(gpu, EVENT_XID_CRITICAL, xid, mig=mig)

    def inject_ecc(self, gpu: int, *, mig: int | None = None) -> int:
        """A double-bit ECC error event."""
        return self.inject_event(gpu, EVENT_DOUBLE_BIT_ECC, 0, mig=mig)

    def lose(self, gpu: int) -> None:
        """The GPU fell off the bus: every call on it answers NVML_ERROR_GPU_IS_LOST."""
        with self._edit() as edit:
            profile, faults = edit.profile, edit.faults
            self._check_gpu(profile, gpu)
            faults.lost.add(gpu)

    def hang(self, gpu: int | None, seconds: float, functions: Sequence[str] = ("*",)) -> None:
        """Calls of `functions` (C names, "_vN" optional; "*" all) on `gpu` block `seconds` each,
        until healed. gpu None: on every GPU and in the calls that name no GPU (init, count, event wait)."""
        with self._edit() as edit:
            profile, faults = edit.profile, edit.faults
            if gpu is not None:
                self._check_gpu(profile, gpu)
            bad = [f for f in functions if f != "*" and not f.startswith("nvml")]
            if bad or not functions:
                raise ProfileError(f"hang: functions are NVML C names or '*', not {list(bad) or 'nothing'}")
            faults.hangs.append(Hang(gpu=gpu, millis=round(seconds * 1000), functions=tuple(functions)))

    def events_not_supported(self, gpu: int) -> None:
        """nvmlDeviceGetSupportedEventTypes and nvmlDeviceRegisterEvents answer NOT_SUPPORTED."""
        with self._edit() as edit:
            profile, faults = edit.profile, edit.faults
            self._check_gpu(profile, gpu)
            faults.events_unsupported.add(gpu)

    def fail_init(self, code: int = NVML_ERROR_DRIVER_NOT_LOADED) -> None:
        """nvmlInit answers `code` (default DRIVER_NOT_LOADED); 0 makes it succeed again."""
        with self._edit() as edit:
            faults = edit.faults
            faults.init_error = code

    def set_mig_layout(
        self,
        gpu: int,
        instances: Sequence[MigInstance | Mapping[str, Any]],
        *,
        current: bool = True,
        pending: bool | None = None,
    ) -> None:
        """Replaces one GPU's MIG mode and instances (as after nvidia-smi mig -dci/-dgi/-cgi/-cci)."""
        with self._edit() as edit:
            self._check_gpu(edit.profile, gpu)
            raw = edit.profile.model_dump(mode="json")
            raw["devices"][gpu]["mig"] = {
                **raw["devices"][gpu]["mig"],
                "current": current,
                "pending": pending,
                "instances": [i.model_dump() if isinstance(i, MigInstance) else dict(i) for i in instances],
            }
            edit.profile = parse(raw, source=f"set_mig_layout(gpu={gpu})")
            self._write_nodes(edit.profile)

    def heal(self, gpu: int | None = None) -> None:
        """Clears the faults of one GPU (lost, hangs, events unsupported) or all of them (and init)."""
        with self._edit() as edit:
            profile, faults = edit.profile, edit.faults
            if gpu is None:
                faults.lost.clear()
                faults.events_unsupported.clear()
                faults.hangs.clear()
                faults.init_error = 0
            else:
                self._check_gpu(profile, gpu)
                faults.lost.discard(gpu)
                faults.events_unsupported.discard(gpu)
                faults.hangs = [h for h in faults.hangs if h.gpu != gpu]

    # ---- storage -----------------------------------------------------------------------------

    @staticmethod
    def _check_gpu(profile: Profile, gpu: int) -> None:
        if not 0 <= gpu < len(profile.devices):
            raise ProfileError(
                f"no GPU {gpu}: the profile has {len(profile.devices)} (0-{len(profile.devices) - 1})"
            )

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.lib_dir / "fake-nvml.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    @contextlib.contextmanager
    def _edit(self) -> Iterator[_Edit]:
        with self._locked():
            edit = _Edit(*self._load())
            yield edit
            self._save(edit.profile, edit.faults)

    def _load(self) -> tuple[Profile, Faults]:
        record = json.loads(self.record_path.read_text())
        return parse(record["profile"], source=str(self.record_path)), Faults.model_validate(record["faults"])

    def _save(self, profile: Profile, faults: Faults) -> None:
        record = {"profile": profile.model_dump(mode="json"), "faults": faults.model_dump(mode="json")}
        write_atomic(self.record_path, json.dumps(record, indent=1, sort_keys=True))
        # The state last: once the library sees it, the record already agrees.
        write_atomic(self.state_path, render(profile, faults))

    def _write_nodes(self, profile: Profile) -> None:
        """Empty stand-ins for the device nodes and the MIG capability files."""
        self.dev.mkdir(parents=True, exist_ok=True)
        for name in (*(f"nvidia{d.minor}" for d in profile.devices), *CONTROL_NODES):
            (self.dev / name).touch()
        caps_dev = self.dev / "nvidia-caps"
        proc_caps = self.root / "proc/driver/nvidia/capabilities"
        shutil.rmtree(caps_dev, ignore_errors=True)
        for old in proc_caps.glob("gpu*"):
            shutil.rmtree(old)
        caps_dev.mkdir(parents=True)
        (proc_caps / "mig").mkdir(parents=True, exist_ok=True)
        (proc_caps / "mig/config").write_text(_access_file(1, 0o400))
        (proc_caps / "mig/monitor").write_text(_access_file(2))
        for n in (1, 2):
            (caps_dev / f"nvidia-cap{n}").touch()
        for device in profile.devices:
            for inst in device.mig.instances:
                gi_minor = gi_cap_minor(device.minor, inst.gi)
                ci_minor = ci_cap_minor(device.minor, inst.gi, inst.ci)
                gi_dir = proc_caps / f"gpu{device.minor}/mig/gi{inst.gi}"
                (gi_dir / f"ci{inst.ci}").mkdir(parents=True, exist_ok=True)
                (gi_dir / "access").write_text(_access_file(gi_minor))
                (gi_dir / f"ci{inst.ci}/access").write_text(_access_file(ci_minor))
                for minor in (gi_minor, ci_minor):
                    (caps_dev / f"nvidia-cap{minor}").touch()
        # The driver lists every possible capability, created or not.
        minors = ["config 1", "monitor 2"]
        for device in sorted(profile.devices, key=lambda d: d.minor):
            for gi in range(15):
                minors.append(f"gpu{device.minor}/gi{gi}/access {gi_cap_minor(device.minor, gi)}")
                minors += [
                    f"gpu{device.minor}/gi{gi}/ci{ci}/access {ci_cap_minor(device.minor, gi, ci)}"
                    for ci in range(8)
                ]
        mig_minors = self.root / "proc/driver/nvidia-caps/mig-minors"
        mig_minors.parent.mkdir(parents=True, exist_ok=True)
        mig_minors.write_text("\n".join(minors) + "\n")
