//go:build tools

// Package crictl pins the commands e2e/kind builds from this module.
package crictl

import (
	_ "sigs.k8s.io/cri-tools/cmd/crictl"
)
