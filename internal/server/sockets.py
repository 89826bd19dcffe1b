"""Socket file names in the device-plugins folder.

Every server start gets a fresh name: the kubelet has a race (kubernetes
#121994) in which a late disconnect of an old endpoint tears down a new one
registered under the same name.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import tempfile
import time
from pathlib import Path

from gpu_device_plugin.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_PLUGIN_DIR = Path("/var/lib/kubelet/device-plugins")
KUBELET_SOCKET = "kubelet.sock"
# sockaddr_un.sun_path holds 108 bytes including the terminating NUL.
MAX_SOCKET_PATH = 107


def socket_prefix(resource_name: str) -> str:
    """`example.com/gpu` -> `example.com-gpu`: what all our socket names start with."""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", resource_name)


def fresh_socket_name(resource_name: str, generation: int) -> str:
    stamp = format(time.time_ns() // 1_000_000, "x")
    return f"{socket_prefix(resource_name)}-{stamp}-{generation}.sock"


def check_plugin_dir(plugin_dir: Path, resource_name: str) -> None:
    """Refuse a device-plugins folder we could not serve in, before anything starts.

    The kubelet creates its folder and never deletes it (a restart removes only the
    files in it), so a missing folder is a wrong path or a missing hostPath mount,
    never something to create and wait in. Writability is tried, not inferred from
    the mode bits: root passes access(2) on a read-only mount it still cannot write.
    """
    field = "device-plugin-dir"
    if not plugin_dir.exists():
        raise ConfigError(
            field,
            f"{plugin_dir} does not exist: it must be the kubelet's device-plugins folder "
            f"(the one holding {KUBELET_SOCKET}); check the path and, in a pod, the hostPath volume",
        )
    if not plugin_dir.is_dir():
        raise ConfigError(field, f"{plugin_dir} is not a folder")
    longest = plugin_dir / fresh_socket_name(resource_name, 999_999)
    if len(os.fsencode(longest)) > MAX_SOCKET_PATH:
        raise ConfigError(
            field,
            f"{plugin_dir} is too long: a socket path there ({len(os.fsencode(longest))} bytes) would "
            f"pass the {MAX_SOCKET_PATH}-byte limit of unix sockets; shorten it or --resource-name",
        )
    try:
        # Removed at once; the kubelet never reads this folder's other files.
        handle, probe = tempfile.mkstemp(dir=plugin_dir, prefix=".gpu-device-plugin-check-")
    except OSError as err:
        raise ConfigError(
            field,
            f"{plugin_dir} is not writable ({err.strerror or err}): the plugin creates its socket "
            "there; mount it read-write and run as a user that may write to it",
        ) from err
    os.close(handle)
    # A kubelet restarting at this moment removes every file in the folder: this one too.
    with contextlib.suppress(FileNotFoundError):
        os.unlink(probe)


def answers(path: Path) -> bool:
    """True when something accepts connections on the unix socket at `path`."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        try:
            probe.connect(str(path))
        except OSError:
            return False
        return True


def our_sockets(plugin_dir: Path, resource_name: str) -> list[Path]:
    """Our sockets in the folder, newest first."""
    pattern = re.compile(rf"^{re.escape(socket_prefix(resource_name))}-[0-9a-f]+-\d+\.sock$")
    found = [p for p in plugin_dir.iterdir() if pattern.match(p.name)] if plugin_dir.is_dir() else []
    return sorted(found, key=lambda p: int(p.name.rsplit("-", 2)[1], 16), reverse=True)


def remove_stale_sockets(plugin_dir: Path, resource_name: str) -> list[Path]:
    """Remove sockets a killed earlier run of ours left behind (nothing answers on them)."""
    removed = []
    for path in our_sockets(plugin_dir, resource_name):
        if not answers(path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            removed.append(path)
    if removed:
        log.info(
            "removed %d stale socket(s) of an earlier run: %s",
            len(removed),
            ", ".join(p.name for p in removed),
        )
    return removed
