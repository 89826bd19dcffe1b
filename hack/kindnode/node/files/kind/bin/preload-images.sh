#!/bin/bash
# Import every image archive under /kind/images (gdp-preload-images.service).
set -euo pipefail
for _ in $(seq 60); do
  ctr version >/dev/null 2>&1 && break
  sleep 0.5
done
for archive in /kind/images/*.tar; do
  ctr --namespace=k8s.io images import --all-platforms --snapshotter=overlayfs "$archive"
done
