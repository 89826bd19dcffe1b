"""Which versions the kind e2e builds: read from the go.mod files under e2e/kind/, written once there."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gdp_e2e.cluster.paths import E2E_DIR, required_version

KIND_DIR = E2E_DIR / "kind"
K8S_BUILD_DIR = KIND_DIR / "k8s-build"
TOOLS_BUILD_DIR = KIND_DIR / "tools-build"


@dataclass(frozen=True)
class Tool:
    """A command (or a few) built from one pinned module under e2e/kind/tools-build/<name>."""

    name: str
    module: str
    packages: tuple[str, ...]
    #: `-X` stamps so that `<tool> --version` says which it is; {v} is the version.
    stamps: tuple[str, ...] = ()

    @property
    def module_dir(self) -> Path:
        return TOOLS_BUILD_DIR / self.name

    @property
    def version(self) -> str:
        return required_version(self.module_dir / "go.mod", self.module)


CONTAINERD_COMMANDS = ("containerd", "ctr", "containerd-shim-runc-v2")
KIND = Tool("kind", "sigs.k8s.io/kind", ("sigs.k8s.io/kind",))
CRICTL = Tool(
    "crictl",
    "sigs.k8s.io/cri-tools",
    ("sigs.k8s.io/cri-tools/cmd/crictl",),
    ("sigs.k8s.io/cri-tools/pkg/version.Version={v}",),
)
ETCD = Tool("etcd", "go.etcd.io/etcd/server/v3", ("go.etcd.io/etcd/server/v3",))
CONTAINERD = Tool(
    "containerd",
    "github.com/containerd/containerd/v2",
    tuple(f"github.com/containerd/containerd/v2/cmd/{name}" for name in CONTAINERD_COMMANDS),
    ("github.com/containerd/containerd/v2/version.Version={v}",),
)
COREDNS = Tool("coredns", "github.com/coredns/coredns", ("github.com/coredns/coredns",))
TOOLS = (KIND, CRICTL, ETCD, CONTAINERD, COREDNS)

#: On the node: kubeadm, the kubelet and kubectl; the rest run as images.
KUBERNETES_COMMANDS = (
    "kubeadm",
    "kubelet",
    "kubectl",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
)


def kubernetes() -> str:
    """The k8s.io/kubernetes version of the node (e2e/kind/k8s-build/go.mod)."""
    return required_version(K8S_BUILD_DIR / "go.mod", "k8s.io/kubernetes")


def image_tags() -> dict[str, str]:
    """The image names kubeadm of this version asks for, so that nothing is ever pulled.

    kubeadm's own defaults for its Kubernetes minor: etcd's "-0" build suffix and
    the CoreDNS and pause tags are kubeadm's constants (cmd/kubeadm/app/constants).
    Our images carry those names with our builds of those versions inside.
    """
    version = kubernetes()
    return {
        "kube-apiserver": f"registry.k8s.io/kube-apiserver:{version}",
        "kube-controller-manager": f"registry.k8s.io/kube-controller-manager:{version}",
        "kube-scheduler": f"registry.k8s.io/kube-scheduler:{version}",
        "etcd": f"registry.k8s.io/etcd:{ETCD.version.lstrip('v')}-0",
        "coredns": f"registry.k8s.io/coredns/coredns:{COREDNS.version}",
        "pause": f"registry.k8s.io/pause:{PAUSE_TAG}",
    }


#: Images kubeadm lists that our clusters never start: kube-proxy (kubeProxyMode none).
NOT_STARTED = frozenset({"kube-proxy"})


def not_preloaded(kubeadm_list: str) -> list[str]:
    """The images in `kubeadm config images list` output that image_tags() does not preload
    (and the cluster would start): each would be a pull, which a node here cannot do."""
    preloaded = set(image_tags().values())
    # One image per line; a warning kubeadm may print (words and spaces) is no image.
    listed = (line.strip() for line in kubeadm_list.splitlines())
    return [
        image
        for image in listed
        if image
        and " " not in image
        and image not in preloaded
        and _repository_name(image) not in NOT_STARTED
    ]


def _repository_name(image: str) -> str:
    """registry.k8s.io/kube-proxy:v1.34.4 -> kube-proxy."""
    return image.rsplit(":", 1)[0].rsplit("/", 1)[-1]


#: kubeadm 1.34's PauseVersion; containerd's sandbox image in node/files/etc/containerd/config.toml.
PAUSE_TAG = "3.10.1"
