//go:build tools

// Package kind pins the commands e2e/kind builds from this module.
package kind

import (
	_ "sigs.k8s.io/kind"
)
