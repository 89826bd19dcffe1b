//go:build tools

// Package coredns pins the commands e2e/kind builds from this module.
package coredns

import (
	_ "github.com/coredns/coredns"
)
