"""A kind node image built here, from Debian's archive and the Go module proxy, on BuildKit.

`python -m gdp_hack.kindnode build|tools|config` (`task kind:image`, `task e2e:kind`).
One job per module:

- versions: every pinned version, read from the go.mod files under e2e/kind/;
- gobuilds: kind, Kubernetes, containerd, crictl, etcd and CoreDNS from the Go
  module proxy, cached by version (gdp_e2e.cluster.build.go_build);
- rootfs: the node's Debian bookworm tree (debootstrap, systemd, runc, the CNI
  plugins) packed as an OCI layout, cached by recipe;
- images: the images the cluster starts (control plane, etcd, CoreDNS, pause,
  the workload's busybox) as OCI archives, preloaded into the node;
- nodeimage: node/Dockerfile on a private buildkitd, into a docker-archive
  that `docker load` takes, cached by everything it is made of;
- clusterconfig: the kind Cluster config for this image (or the stock one).
"""
