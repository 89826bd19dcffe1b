//go:build tools

// Package etcd pins the commands e2e/kind builds from this module.
package etcd

import (
	_ "go.etcd.io/etcd/server/v3"
)
