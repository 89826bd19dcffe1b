"""Builds the gpu-device-plugin container image reproducibly, on a machine with no registry.

`python -m gdp_hack.image build|verify|base` (the `image` and
`image:verify` tasks). The parts, one job each:

- debian: the two Debian bookworm bases (build and runtime) made with
  debootstrap and packed as OCI layouts, standing in for the digests the
  Dockerfile pins for the real world;
- buildkit: BuildKit built from the Go module proxy (pinned by
  buildkit-build/go.mod), a private buildkitd, and the `buildctl build` call;
- ociread: what an OCI archive holds (manifest digest, uncompressed size,
  biggest contributors);
- smoke: runs the built image with runc and checks what a user would see;
- steps: the build and verify flows.

It uses the standard library only and needs root (debootstrap, buildkitd and
runc do). The deterministic tar and OCI layout writer is shared with the e2e
cluster (gdp_e2e.cluster.images).
"""
