//go:build tools

// Package jaegerbuild pins the Jaeger command that e2e/cluster/jaeger.py compiles.
package jaegerbuild

import (
	_ "github.com/jaegertracing/jaeger/cmd/jaeger"
)
