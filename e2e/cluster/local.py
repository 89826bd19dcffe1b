"""Starts and tears down the one-node cluster: containerd, etcd, API server, kubelet, scheduler,
controller manager.

Every component is a host process started here, listening on 127.0.0.1 or a
unix socket under a temporary root, on ports picked free at start. Pods must
use hostNetwork: the only CNI configuration is loopback, which is enough for
the runtime to call the node's network ready and creates no interface.

`LocalCluster.close()` undoes everything this module did, even after a failed
start: it ends only the processes it started (by pid, or by membership of the
cgroup tree it created), unmounts what the kubelet and containerd mounted
under the root, removes its cgroups, restores the kernel settings the kubelet
changes, and deletes the root. Component logs are kept in a separate folder
that outlives the root, and every failure names it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from . import images, pki
from .build import Toolchain
from .lifecycle import StartedInWith

#: The node's name is its address: the kubelet refuses a loopback --node-ip, but
#: takes an IP given as the hostname override as the node's InternalIP. That is
#: how the API server reaches the kubelet (logs, exec) on loopback only.
NODE_NAME = "127.0.0.1"
#: Addresses for Services. Nothing routes to them (no kube-proxy) and nothing
#: here connects to them; the range is chosen outside the private ranges anyway.
SERVICE_CIDR = "198.18.0.0/24"
#: Kernel settings that the kubelet sets on start; close() puts them back.
KUBELET_SYSCTLS = ("vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops")
CGROUP_MOUNT = Path("/sys/fs/cgroup")
#: Where the kubelet always looks for device plugins, whatever its --root-dir.
HOST_DEVICE_PLUGIN_DIR = Path("/var/lib/kubelet/device-plugins")
CONTAINER_LOG_LINKS = Path("/var/log/containers")
#: What the suite needs from a controller manager: DaemonSets and their pods'
#: garbage, ServiceAccounts with tokens and the root CA for them, namespace
#: deletion. Node lifecycle stays off on purpose: the suite stops the kubelet,
#: and that controller would taint the node unreachable and evict its pods.
CONTROLLERS = (
    "daemonset-controller",
    "garbage-collector-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "namespace-controller",
)

#: Where component logs go (default: a new folder under the system temp dir).
ENV_LOGS = "E2E_LOGS"


class ClusterError(RuntimeError):
    """The local cluster could not be started; the message names the log folder."""


def _log(message: str) -> None:
    print(f"[e2e-cluster] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalCluster(StartedInWith):
    """One node on host processes. Use as a context manager, or call start() then close()."""

    def __init__(
        self,
        tools: Toolchain,
        *,
        root: Path | None = None,
        logs: Path | None = None,
        extra_images: Sequence[Path] = (),
    ) -> None:
        self.tools = tools
        #: OCI archives imported into the node's containerd besides pause and busybox
        #: (the plugin's own image, for the DaemonSet run).
        self.extra_images = tuple(extra_images)
        self.run_id = secrets.token_hex(3)
        # Short: unix socket paths below it must stay under 108 bytes.
        self.root = root or Path(tempfile.mkdtemp(prefix=f"gdp-e2e-{self.run_id}-", dir="/tmp"))
        default_logs = (
            Path(tempfile.gettempdir()) / "gpu-dp-e2e-logs" / time.strftime(f"%Y%m%d-%H%M%S-{self.run_id}")
        )
        self.logs = logs or Path(os.environ.get(ENV_LOGS) or default_logs)
        self.node_name = NODE_NAME
        self.cgroup_root = f"/gpu-dp-e2e-{self.run_id}"
        self.containerd_socket = self.root / "containerd" / "containerd.sock"
        self.kubelet_root = self.root / "kubelet"
        self.device_plugin_dir = self.kubelet_root / "device-plugins"
        self.kubeconfig = self.root / "admin.kubeconfig"
        self.ports = {
            name: free_port()
            for name in ("etcd-client", "etcd-peer", "apiserver", "kubelet", "kubelet-healthz")
        }
        self.server = f"https://127.0.0.1:{self.ports['apiserver']}"
        self._processes: dict[str, subprocess.Popen[bytes]] = {}
        self._commands: dict[str, list[str]] = {}
        self._sysctls: dict[str, str] = {}
        self._cgroups_made: list[Path] = []
        self._pki: pki.ClusterPKI | None = None
        self._made_host_dirs: list[Path] = []

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> None:
        started = time.monotonic()
        for folder in (self.root, self.logs):
            folder.mkdir(parents=True, exist_ok=True)
        _log(f"root {self.root}, component logs in {self.logs}")
        self._pki = pki.create(self.tools.openssl, self.root / "pki", node_name=self.node_name)
        self._start_node_namespace()
        self._start_containerd()
        self._import_images()
        self._start_etcd()
        self._start_apiserver()
        self._start_controller_manager()
        self._make_cgroup_root()
        self._start_kubelet()
        self._start_scheduler()
        self.wait_node_ready(timeout=90)
        self._untaint_not_ready()
        _log(f"cluster up in {time.monotonic() - started:.1f} s (kubeconfig {self.kubeconfig})")

    def close(self) -> None:
        """Tear everything down; safe to call twice and after a partial start."""
        steps: list[tuple[str, Callable[[], None]]] = [
            ("stop scheduler", lambda: self._stop("kube-scheduler")),
            ("stop controller manager", lambda: self._stop("kube-controller-manager")),
            ("stop kubelet", lambda: self._stop("kubelet")),
            ("kill containers", self._kill_cgroup_processes),
            ("stop containerd", lambda: self._stop("containerd")),
            ("kill shims", self._kill_shims),
            # Last of the node's processes: its mounts go with the namespace.
            ("end node mount namespace", lambda: self._stop("node-namespace", timeout=5)),
            ("stop apiserver", lambda: self._stop("kube-apiserver")),
            ("stop etcd", lambda: self._stop("etcd")),
            ("unmount", self._unmount_all),
            ("remove cgroups", self._remove_cgroups),
            ("restore sysctls", self._restore_sysctls),
            ("remove container log links", self._remove_container_log_links),
            ("remove host dirs", self._remove_host_dirs),
            ("remove root", lambda: shutil.rmtree(self.root, ignore_errors=True)),
        ]
        for what, step in steps:
            try:
                step()
            except Exception as error:  # keep going: the rest must still be undone
                _log(f"teardown: {what} failed: {error!r}")
        _log(f"cluster torn down; logs kept in {self.logs}")

    # ------------------------------------------------------------ for the tests

    def stop_kubelet(self) -> None:
        self._stop("kubelet")

    def start_kubelet(self) -> None:
        self._spawn("kubelet", self._commands["kubelet"])
        self._wait("kubelet healthz", self._kubelet_healthy, timeout=60, watch=("kubelet",))

    def restart_kubelet(self) -> None:
        self.stop_kubelet()
        self.start_kubelet()

    def log_path(self, component: str) -> Path:
        return self.logs / f"{component}.log"

    def api_get(self, path: str) -> dict[str, Any]:
        """GET a path of the API server as the cluster admin (stdlib only)."""
        with urllib.request.urlopen(self.server + path, context=self._admin_tls(), timeout=10) as response:
            return json.loads(response.read())  # type: ignore[no-any-return]

    def kubelet_metrics(self) -> str:
        """The kubelet's Prometheus metrics, read on its own port as the cluster admin."""
        context = self._admin_tls()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # its serving certificate is self-signed
        url = f"https://127.0.0.1:{self.ports['kubelet']}/metrics"
        with urllib.request.urlopen(url, context=context, timeout=10) as response:
            return response.read().decode()  # type: ignore[no-any-return]

    def api_patch(self, path: str, patch: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(
            self.server + path,
            data=json.dumps(patch).encode(),
            method="PATCH",
            headers={"Content-Type": "application/merge-patch+json"},
        )
        with urllib.request.urlopen(request, context=self._admin_tls(), timeout=10) as response:
            return json.loads(response.read())  # type: ignore[no-any-return]

    def _untaint_not_ready(self) -> None:
        """Do the node lifecycle controller's one job here: drop the kubelet's not-ready taint.

        The kubelet registers the node with it; there is no controller manager
        to remove it once the node is Ready.
        """
        node = self.api_get(f"/api/v1/nodes/{self.node_name}")
        taints = node.get("spec", {}).get("taints") or []
        kept = [t for t in taints if t.get("key") != "node.kubernetes.io/not-ready"]
        if kept != taints:
            self.api_patch(f"/api/v1/nodes/{self.node_name}", {"spec": {"taints": kept or None}})

    def node_ready(self) -> bool:
        try:
            node = self.api_get(f"/api/v1/nodes/{self.node_name}")
        except (urllib.error.URLError, OSError):
            return False
        conditions = node.get("status", {}).get("conditions", [])
        return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)

    def wait_node_ready(self, *, timeout: float) -> None:
        self._wait(
            f"node {self.node_name} Ready", self.node_ready, timeout=timeout, watch=("kubelet", "containerd")
        )

    # ---------------------------------------------------------------- components

    def _start_containerd(self) -> None:
        base = self.root / "containerd"
        cni_conf = self.root / "cni" / "net.d"
        cni_conf.mkdir(parents=True)
        # Loopback only: enough for the runtime to report its network ready.
        (cni_conf / "99-loopback.conflist").write_text(
            json.dumps({"cniVersion": "0.4.0", "name": "lo", "plugins": [{"type": "loopback"}]})
        )
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        config = base / "config.toml"
        base.mkdir(parents=True, exist_ok=True)
        config.write_text(
            f"""version = 2
root = "{base / "root"}"
state = "{base / "state"}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{self.containerd_socket}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{base / "opt"}"

[{cri}]
  sandbox_image = "{images.PAUSE_IMAGE}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  disable_apparmor = true
  # This machine's root may not lower oom_score_adj (no CAP_SYS_RESOURCE):
  # keep the kubelet's -998 for sandboxes from failing every pod start.
  restrict_oom_score_adj = true

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  BinaryName = "{self.tools.runc}"
  Root = "{base / "runc"}"
  SystemdCgroup = false

[{cri}.cni]
  bin_dir = "{self.tools.cni_bin_dir}"
  conf_dir = "{cni_conf}"
"""
        )
        self._spawn(
            "containerd",
            self._in_node_namespace(
                [str(self.tools.containerd), "--config", str(config), "--log-level", "info"]
            ),
        )
        self._wait(
            "containerd", lambda: self._ctr("version").returncode == 0, timeout=30, watch=("containerd",)
        )

    def _ctr(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.tools.ctr), "--address", str(self.containerd_socket), "--namespace", "k8s.io", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def _import_images(self) -> None:
        folder = self.root / "images"
        archives = [
            images.pause_image(self.tools.pause, folder / "pause.tar"),
            images.busybox_image(self.tools.busybox, folder / "busybox.tar"),
        ]
        archives.extend(self.extra_images)
        for archive in archives:
            result = self._ctr("images", "import", "--snapshotter", "overlayfs", str(archive), timeout=120)
            if result.returncode != 0:
                raise ClusterError(f"ctr images import {archive} failed: {result.stderr.strip()}")

    def _start_etcd(self) -> None:
        client = f"http://127.0.0.1:{self.ports['etcd-client']}"
        peer = f"http://127.0.0.1:{self.ports['etcd-peer']}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
        self._spawn(
            "etcd",
            [
                str(self.tools.etcd),
                "--name=e2e",
                f"--data-dir={self.root / 'etcd'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=e2e={peer}",
                "--initial-cluster-state=new",
                "--log-level=warn",
                "--logger=zap",
            ],
            env=env,
        )
        self._wait("etcd", lambda: self._http_ok(f"{client}/health"), timeout=30, watch=("etcd",))

    def _start_apiserver(self) -> None:
        assert self._pki is not None
        p = self._pki
        self._spawn(
            "kube-apiserver",
            [
                str(self.tools.kube_apiserver),
                f"--etcd-servers=http://127.0.0.1:{self.ports['etcd-client']}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.ports['apiserver']}",
                f"--cert-dir={self.root / 'apiserver'}",
                f"--tls-cert-file={p.apiserver.cert}",
                f"--tls-private-key-file={p.apiserver.key}",
                f"--client-ca-file={p.ca.cert}",
                f"--kubelet-client-certificate={p.apiserver_kubelet_client.cert}",
                f"--kubelet-client-key={p.apiserver_kubelet_client.key}",
                "--kubelet-preferred-address-types=InternalIP",
                f"--service-account-key-file={p.service_account_pub}",
                f"--service-account-signing-key-file={p.service_account_key}",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                # The reconciler would publish 127.0.0.1 as the kubernetes
                # Service's endpoint, which validation refuses; nothing needs it.
                "--endpoint-reconciler-type=none",
                "--authorization-mode=Node,RBAC",
                "--allow-privileged=true",
                "--profiling=false",
                "--v=1",
            ],
        )
        self._wait(
            "kube-apiserver /readyz", lambda: self._api_ok("/readyz"), timeout=90, watch=("kube-apiserver",)
        )
        pki.kubeconfig(self.kubeconfig, server=self.server, ca=p.ca.cert, client=p.admin, user="admin")

    def _make_cgroup_root(self) -> None:
        """Create the kubelet's cgroup root in every v1 hierarchy (it refuses a missing one)."""
        name = self.cgroup_root.strip("/")
        for hierarchy in sorted(CGROUP_MOUNT.iterdir()):
            if not (hierarchy / "cgroup.procs").exists() or hierarchy.name == "unified":
                continue
            folder = hierarchy / name
            folder.mkdir(exist_ok=True)
            self._cgroups_made.append(folder)
            if hierarchy.name.startswith("cpuset"):
                for key in ("cpuset.cpus", "cpuset.mems"):
                    (folder / key).write_text((hierarchy / key).read_text())

    def _start_kubelet(self) -> None:
        assert self._pki is not None
        p = self._pki
        self.kubelet_root.mkdir(parents=True, exist_ok=True)
        for key in KUBELET_SYSCTLS:
            self._sysctls[key] = (Path("/proc/sys") / key).read_text().strip()
        kubeconfig = pki.kubeconfig(
            self.root / "kubelet.kubeconfig",
            server=self.server,
            ca=p.ca.cert,
            client=p.kubelet,
            user=f"system:node:{self.node_name}",
        )
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": "127.0.0.1",
            "port": self.ports["kubelet"],
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": self.ports["kubelet-healthz"],
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": False},
                "x509": {"clientCAFile": str(p.ca.cert)},
            },
            "authorization": {"mode": "AlwaysAllow"},
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": self.cgroup_root,
            "cgroupsPerQOS": True,
            "failSwapOn": False,
            "makeIPTablesUtilChains": False,
            # Capacity changes reach the API at the next status sync: keep it short
            # so allocatable follows the plugin within a second or two.
            "nodeStatusUpdateFrequency": "1s",
            # Also how soon a ConfigMap edit reaches a pod's volume (the DaemonSet
            # run edits the plugin's fake config that way): keep it short.
            "syncFrequency": "1s",
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "1%",
                "nodefs.inodesFree": "1%",
                "imagefs.available": "1%",
            },
            # Our images cannot be pulled again: never garbage-collect them.
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "podLogsDir": str(self.root / "pod-logs"),
            "volumePluginDir": str(self.root / "volume-plugins"),
            "serializeImagePulls": False,
            "resolvConf": "/etc/resolv.conf",
        }
        config_file = self.root / "kubelet-config.json"
        config_file.write_text(json.dumps(config, indent=2))
        kubelet = [
            str(self.tools.kubelet),
            f"--config={config_file}",
            f"--kubeconfig={kubeconfig}",
            f"--root-dir={self.kubelet_root}",
            f"--cert-dir={self.root / 'kubelet-pki'}",
            f"--hostname-override={self.node_name}",
            "--v=2",
        ]
        self._commands["kubelet"] = self._in_node_namespace(kubelet)
        self.start_kubelet()

    def _start_node_namespace(self) -> None:
        """A mount namespace for the node's containerd and kubelet, held open by a sleeper.

        The kubelet's device-plugin folder is a constant, not under --root-dir.
        In this namespace that constant path is our folder, for the kubelet and
        for containers alike: a DaemonSet's hostPath of it lands in our folder,
        and the volumes the kubelet mounts (ConfigMaps, tokens) are visible to
        the runtime that starts the containers. Every mount made in it goes
        away with its last process.
        """
        self.device_plugin_dir.mkdir(parents=True, exist_ok=True)
        wanted = (*reversed(HOST_DEVICE_PLUGIN_DIR.parents[:-1]), HOST_DEVICE_PLUGIN_DIR)
        self._made_host_dirs = [folder for folder in wanted if not folder.exists()]
        HOST_DEVICE_PLUGIN_DIR.mkdir(parents=True, exist_ok=True)
        bind = f"mount --bind {shlex.quote(str(self.device_plugin_dir))} {HOST_DEVICE_PLUGIN_DIR}"
        self._spawn(
            "node-namespace",
            ["unshare", "--mount", "--propagation", "slave", "sh", "-c", f"{bind} && exec sleep infinity"],
        )
        self._wait(
            "the node's mount namespace", self._node_namespace_ready, timeout=10, watch=("node-namespace",)
        )

    def _node_namespace_ready(self) -> bool:
        holder = self._processes["node-namespace"]
        try:
            mounts = Path(f"/proc/{holder.pid}/mountinfo").read_text()
        except OSError:
            return False
        return f" {HOST_DEVICE_PLUGIN_DIR} " in mounts

    def _in_node_namespace(self, argv: list[str]) -> list[str]:
        holder = self._processes["node-namespace"]
        # nsenter execs the command: its pid is the component's, signals reach it.
        return ["nsenter", f"--target={holder.pid}", "--mount", "--", *argv]

    def _start_controller_manager(self) -> None:
        """Only the controllers the suite relies on (CONTROLLERS)."""
        assert self._pki is not None
        kubeconfig = pki.kubeconfig(
            self.root / "controller-manager.kubeconfig",
            server=self.server,
            ca=self._pki.ca.cert,
            client=self._pki.controller_manager,
            user="system:kube-controller-manager",
        )
        self._spawn(
            "kube-controller-manager",
            [
                str(self.tools.kube_controller_manager),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                f"--service-account-private-key-file={self._pki.service_account_key}",
                f"--root-ca-file={self._pki.ca.cert}",
                "--use-service-account-credentials=true",
                "--controllers=" + ",".join(CONTROLLERS),
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                "--v=1",
            ],
        )

    def _start_scheduler(self) -> None:
        assert self._pki is not None
        kubeconfig = pki.kubeconfig(
            self.root / "scheduler.kubeconfig",
            server=self.server,
            ca=self._pki.ca.cert,
            client=self._pki.scheduler,
            user="system:kube-scheduler",
        )
        self._spawn(
            "kube-scheduler",
            [
                str(self.tools.kube_scheduler),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                "--v=1",
            ],
        )

    # -------------------------------------------------------------- processes

    def _spawn(self, name: str, argv: list[str], *, env: dict[str, str] | None = None) -> None:
        old = self._processes.get(name)
        if old is not None and old.poll() is None:
            raise ClusterError(f"{name} is already running (pid {old.pid})")
        self._commands.setdefault(name, argv)
        with self.log_path(name).open("ab") as log:
            log.write(f"\n===== {time.strftime('%H:%M:%S')} start: {' '.join(argv)}\n".encode())
            log.flush()
            self._processes[name] = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )

    def _stop(self, name: str, *, timeout: float = 15) -> None:
        process = self._processes.get(name)
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def _wait(self, what: str, ready: Callable[[], bool], *, timeout: float, watch: tuple[str, ...]) -> None:
        """Poll `ready` until it holds; fail at once if a watched process exits."""
        deadline = time.monotonic() + timeout
        while True:
            for name in watch:
                process = self._processes.get(name)
                if process is not None and process.poll() is not None:
                    raise ClusterError(
                        f"{name} exited with {process.returncode} while waiting for {what}; "
                        f"logs in {self.logs}\n{self._tail(name)}"
                    )
            if ready():
                return
            if time.monotonic() > deadline:
                tails = "\n".join(self._tail(name) for name in watch)
                raise ClusterError(
                    f"timed out after {timeout:.0f} s waiting for {what}; logs in {self.logs}\n{tails}"
                )
            time.sleep(0.2)

    def _tail(self, name: str, lines: int = 30) -> str:
        try:
            text = self.log_path(name).read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return f"--- {name}: no log"
        return f"--- last lines of {self.log_path(name)}:\n" + "\n".join(text)

    # ------------------------------------------------------------------- probes

    def _admin_tls(self) -> ssl.SSLContext:
        assert self._pki is not None
        context = ssl.create_default_context(cafile=str(self._pki.ca.cert))
        context.load_cert_chain(str(self._pki.admin.cert), str(self._pki.admin.key))
        return context

    def _api_ok(self, path: str) -> bool:
        try:
            with urllib.request.urlopen(self.server + path, context=self._admin_tls(), timeout=5) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    @staticmethod
    def _http_ok(url: str) -> bool:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def _kubelet_healthy(self) -> bool:
        return self._http_ok(f"http://127.0.0.1:{self.ports['kubelet-healthz']}/healthz")

    # ----------------------------------------------------------------- teardown

    def _cgroup_dirs(self) -> Iterator[Path]:
        """Every cgroup folder under our root in every hierarchy (unified too), deepest first."""
        if not self._cgroups_made:
            return
        name = self.cgroup_root.strip("/")
        for hierarchy in sorted(CGROUP_MOUNT.iterdir()):
            top = hierarchy / name
            if top.is_dir():
                yield from sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
                yield top

    def _kill_cgroup_processes(self) -> None:
        """SIGKILL every process in the pod cgroups: containers and sandboxes we started."""
        for _ in range(20):
            pids: set[int] = set()
            for folder in self._cgroup_dirs():
                with contextlib.suppress(OSError):
                    pids.update(int(pid) for pid in (folder / "cgroup.procs").read_text().split())
            pids.discard(os.getpid())
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)

    def _kill_shims(self) -> None:
        """End the runc shims that our containerd started (their command line names our socket)."""
        needle = str(self.containerd_socket).encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"containerd-shim" in cmdline and needle in cmdline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(entry.name), signal.SIGKILL)

    def _unmount_all(self) -> None:
        prefix = str(self.root)
        mounts = []
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].encode().decode("unicode_escape")
            if point == prefix or point.startswith(prefix + "/"):
                mounts.append(point)
        for point in sorted(mounts, key=len, reverse=True):
            result = subprocess.run(["umount", point], capture_output=True, check=False)
            if result.returncode != 0:
                subprocess.run(["umount", "-l", point], capture_output=True, check=False)

    def _remove_cgroups(self) -> None:
        for folder in self._cgroup_dirs():
            with contextlib.suppress(OSError):
                folder.rmdir()

    def _restore_sysctls(self) -> None:
        for key, value in self._sysctls.items():
            path = Path("/proc/sys") / key
            with contextlib.suppress(OSError):
                if path.read_text().strip() != value:
                    path.write_text(value)

    def _remove_host_dirs(self) -> None:
        """Remove the empty mount point folders we made (never one that was there before)."""
        for folder in reversed(self._made_host_dirs):
            with contextlib.suppress(OSError):
                folder.rmdir()

    def _remove_container_log_links(self) -> None:
        if not CONTAINER_LOG_LINKS.is_dir():
            return
        for link in CONTAINER_LOG_LINKS.iterdir():
            if link.is_symlink() and os.readlink(link).startswith(str(self.root)):
                link.unlink()
