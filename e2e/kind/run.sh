#!/usr/bin/env bash
# `task e2e:kind`: the e2e suite on a kind cluster, with the plugin deployed as
# the DaemonSet of manifests/kustomize/overlays/kind. For users with Docker and
# the internet (kind pulls its node image; the Dockerfile pulls its base image).
# It cannot run on a machine without them, and says so instead of passing.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cluster=${KIND_CLUSTER_NAME:-gpu-dp-e2e}
image=localhost/gpu-device-plugin:dev

# Everything that is missing, in one message: a user should not install one thing,
# run again and only then learn of the next.
missing=()
command -v docker >/dev/null || missing+=("docker (https://docs.docker.com/engine/install/)")
command -v kind >/dev/null || missing+=("kind (https://kind.sigs.k8s.io/docs/user/quick-start/#installation)")
command -v kubectl >/dev/null || missing+=("kubectl (https://kubernetes.io/docs/tasks/tools/)")
if command -v docker >/dev/null && ! docker info >/dev/null 2>&1; then
  missing+=("a running Docker engine ('docker info' failed: is dockerd up, may this user reach its socket?)")
fi
if [ ${#missing[@]} -gt 0 ]; then
  message="e2e:kind cannot run: missing ${missing[0]}"
  for item in "${missing[@]:1}"; do
    message+="; ${item}"
  done
  echo "$message" >&2
  echo "the local-cluster e2e (task e2e) needs none of these" >&2
  exit 1
fi

workdir=$(mktemp -d)
cleanup() {
  kind delete cluster --name "$cluster" >/dev/null 2>&1 || true
  rm -rf "$workdir"
}
trap cleanup EXIT

kind create cluster --name "$cluster" --config "$repo/e2e/kind/kind-config.yaml" \
  --kubeconfig "$workdir/kubeconfig" --wait 120s
docker build --network host -t "$image" \
  --build-arg REVISION="$(git -C "$repo" rev-parse HEAD 2>/dev/null || echo unknown)" "$repo"
kind load docker-image "$image" --name "$cluster"

export E2E_KUBECONFIG="$workdir/kubeconfig"
export E2E_PLUGIN=daemonset
export E2E_KIND_NODE="$cluster-control-plane"
"$repo/.venv/bin/pytest" "$repo/e2e/tests" "$@"
