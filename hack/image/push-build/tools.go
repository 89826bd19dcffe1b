//go:build tools

// Package pushbuild pins the two clients `task image:push` runs (hack/image/push.py):
// crane, which pushes the OCI archive to a registry, and kustomize, whose
// `edit set image` pins the pushed digest in the prod overlay.
package pushbuild

import (
	_ "github.com/google/go-containerregistry/cmd/crane"
	_ "sigs.k8s.io/kustomize/kustomize/v5"
)
