#!/usr/bin/env bash
# `task e2e:kind`: the e2e suite on a one-node kind cluster, the plugin deployed as the
# DaemonSet of manifests/kustomize/overlays/kind (the suite applies it), the kubelet
# restarts and plugin SIGKILLs through `docker exec` (E2E_KIND_NODE), the nvml backend
# on the C NVML fake mounted into the node (extraMounts).
#
# By default everything comes from this machine and its package registries: kind and
# the node image are built here (hack/kindnode, cached by version), the Docker engine
# is ours (e2e/kind/dockerd.sh) unless one already answers, and the node joins only an
# --internal Docker network this script creates, reached from here at the node's own
# address. With KIND_NODE_IMAGE=kindest/node:<version> (a user with internet) the stock
# image is used instead, with kind's default networking.
#
# Extra arguments go to pytest.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
py=$repo/.venv/bin/python
cluster=${KIND_CLUSTER_NAME:-gpu-dp-e2e}
network=${KIND_NETWORK:-gdp-kind}
# Benchmarking space (RFC 2544): nothing routes it, and it is no one's private range.
subnet=${KIND_NETWORK_SUBNET:-198.19.0.0/24}
plugin_archive=$repo/build/image/gpu-device-plugin.oci.tar
say() { echo "[e2e:kind] $*" >&2; }
started=$SECONDS

# Everything that is missing, in one message: a user should not install one thing, run
# again and only then learn of the next.
missing=()
command -v docker >/dev/null || missing+=("the docker client (apt-get install docker.io)")
if [ -z "${KIND:-}" ] && ! command -v go >/dev/null; then
  missing+=("go, to build kind from the Go module proxy (or set KIND to a kind binary)")
fi
if [ -n "${KIND_NODE_IMAGE:-}" ] && [ -z "${KUBECTL:-}" ] && ! command -v kubectl >/dev/null; then
  missing+=("kubectl for the stock image (or set KUBECTL)")
fi
engine_answers() {
  command -v docker >/dev/null && { docker info >/dev/null 2>&1 || DOCKER_HOST=unix:///run/gdp-docker/docker.sock docker info >/dev/null 2>&1; }
}
if ! engine_answers; then
  if ! command -v dockerd >/dev/null || [ "$(id -u)" != 0 ]; then
    missing+=("a running Docker engine, or root and dockerd to start ours (apt-get install docker.io)")
  fi
fi
if [ ${#missing[@]} -gt 0 ]; then
  message="e2e:kind cannot run: missing ${missing[0]}"
  for item in "${missing[@]:1}"; do message+="; $item"; done
  echo "$message" >&2
  echo "the local-cluster e2e (task e2e) needs none of these" >&2
  exit 1
fi

workdir=$(mktemp -d /tmp/gdp-kind-XXXXXX)
chmod 755 "$workdir"
we_started_docker=""
cluster_made=""
network_made=""
declare -A sysctl_before=()

cleanup() {
  local status=$?
  if [ -n "$cluster_made" ]; then
    if [ "$status" != 0 ] && [ -n "${E2E_KIND_KEEP_LOGS:-}" ]; then
      "$kind" export logs "$E2E_KIND_KEEP_LOGS" --name "$cluster" >/dev/null 2>&1 || true
    fi
    "$kind" delete cluster --name "$cluster" >/dev/null 2>&1 || true
  fi
  # The kubelet in the node sets these host-wide (a privileged container shares the
  # kernel): put back what the machine had.
  for key in "${!sysctl_before[@]}"; do
    sysctl -qw "$key=${sysctl_before[$key]}" >/dev/null 2>&1 || true
  done
  [ -z "$network_made" ] || docker network rm "$network" >/dev/null 2>&1 || true
  [ -z "$we_started_docker" ] || "$repo/e2e/kind/dockerd.sh" stop || true
  rm -rf "$workdir"
  exit "$status"
}
trap cleanup EXIT

# --- the Docker engine: the caller's if one answers, else ours.
if ! docker info >/dev/null 2>&1; then
  eval "$("$repo/e2e/kind/dockerd.sh" env)"
  if ! docker info >/dev/null 2>&1; then
    "$repo/e2e/kind/dockerd.sh" start
    we_started_docker=1
  fi
fi
say "docker engine $(docker version --format '{{.Server.Version}}') at ${DOCKER_HOST:-the default socket}"

# --- kind, and a kubectl for the suite.
kind=${KIND:-$("$py" -m gdp_hack.kindnode kind)}
say "kind: $kind ($("$kind" version))"

# --- the node image: ours (built once per key) or the stock one.
config_args=()
if [ -n "${KIND_NODE_IMAGE:-}" ]; then
  node_image=$KIND_NODE_IMAGE
  kubectl=${KUBECTL:-kubectl}
  say "node image: $node_image (stock; kind's own networking)"
else
  built=$("$py" -m gdp_hack.kindnode build)
  node_image=$(sed -n 1p <<<"$built")
  node_archive=$(sed -n 2p <<<"$built")
  if ! docker image inspect "$node_image" >/dev/null 2>&1; then
    say "docker load $node_archive"
    docker load -i "$node_archive" >/dev/null
  fi
  # Node images of earlier keys are never run again: keep the engine's disk to one.
  docker images --format '{{.Repository}}:{{.Tag}}' "${node_image%:*}" | grep -vxF "$node_image" \
    | xargs -r docker rmi >/dev/null 2>&1 || true
  kubectl=${KUBECTL:-$("$py" -c 'from gdp_hack.kindnode import gobuilds; print(gobuilds.kubernetes() / "kubectl")')}
  config_args+=(--ours)
  say "node image: $node_image (built here)"
fi

# --- the plugin image (BuildKit, hack/image) and the NVML fake for the nvml tests.
"$repo/.venv/bin/task" -d "$repo" image
nvml_root=$workdir/nvml-driver-root
mkdir -p "$nvml_root"
config_args+=(--nvml-root "$nvml_root")
"$py" -m gdp_hack.kindnode config "${config_args[@]}" >"$workdir/kind-config.json"

# --- the network (ours only): internal, so the node reaches nothing off this machine.
if [ -z "${KIND_NODE_IMAGE:-}" ]; then
  if ! docker network inspect "$network" >/dev/null 2>&1; then
    docker network create --internal --subnet "$subnet" "$network" >/dev/null
    network_made=1
  fi
  if [ "$(docker network inspect -f '{{.Internal}}' "$network")" != true ]; then
    echo "e2e:kind: docker network $network exists and is not --internal; remove it or set KIND_NETWORK" >&2
    exit 1
  fi
  export KIND_EXPERIMENTAL_DOCKER_NETWORK=$network
fi

for key in vm.overcommit_memory kernel.panic kernel.panic_on_oops; do
  sysctl_before[$key]=$(sysctl -n "$key")
done

say "kind create cluster --name $cluster --image $node_image"
"$kind" delete cluster --name "$cluster" >/dev/null 2>&1 || true
cluster_made=1
create_started=$SECONDS
node=$cluster-control-plane
if ! "$kind" create cluster --name "$cluster" --image "$node_image" --config "$workdir/kind-config.json" \
  --kubeconfig "$workdir/kind.kubeconfig" --wait 180s 2>&1 | tee "$workdir/kind-create.log"; then
  # kind's last step writes a kubeconfig for the API server's published port; a node
  # on an --internal network has none. That one failure, after every step succeeded
  # and the node is Ready, leaves a working cluster: the kubeconfig is made below.
  if [ -n "${KIND_NODE_IMAGE:-}" ] || ! grep -q "failed to get api server port" "$workdir/kind-create.log" \
    || ! docker exec "$node" kubectl get node "$node" --no-headers 2>/dev/null | grep -qw Ready; then
    echo "e2e:kind: kind create cluster failed" >&2
    exit 1
  fi
fi
say "cluster up in $((SECONDS - create_started)) s"

kubeconfig=$workdir/kubeconfig
if [ -z "${KIND_NODE_IMAGE:-}" ]; then
  # No ports are published from an internal network: reach the API server at the node's
  # own address on the network (in the API server certificate as its advertise address).
  address=$(docker inspect -f "{{(index .NetworkSettings.Networks \"$network\").IPAddress}}" "$node")
  "$kind" get kubeconfig --internal --name "$cluster" | sed "s#https://$node:6443#https://$address:6443#" >"$kubeconfig"
else
  cp "$workdir/kind.kubeconfig" "$kubeconfig"
fi

say "kind load image-archive $plugin_archive"
"$kind" load image-archive "$plugin_archive" --name "$cluster"
if [ -n "${KIND_NODE_IMAGE:-}" ]; then
  # The suite's workload image (our node image has it preloaded).
  "$py" -c 'import sys; from pathlib import Path; from gdp_hack.kindnode import images; from gdp_e2e.cluster import images as oci; oci.busybox_image(images.host_busybox(), Path(sys.argv[1]))' "$workdir/busybox.tar"
  "$kind" load image-archive "$workdir/busybox.tar" --name "$cluster"
fi

export E2E_KUBECONFIG=$kubeconfig
export E2E_PLUGIN=daemonset
export E2E_KIND_NODE=$node
export E2E_KIND_NVML_ROOT=$nvml_root
if [ -z "${KIND_NODE_IMAGE:-}" ]; then
  # Our node runs no kube-proxy: the DaemonSet joins the node's network and reaches the
  # API server on the node itself (kubeadm's port), as on the local cluster.
  export E2E_API_PORT_ON_NODE=6443
fi
export KUBECTL=$kubectl
say "the e2e suite on $node (setup took $((SECONDS - started)) s)"
suite_started=$SECONDS
"$repo/.venv/bin/pytest" -p no:cacheprovider "$repo/e2e/tests" "$@"
say "suite passed in $((SECONDS - suite_started)) s; e2e:kind in $((SECONDS - started)) s"
