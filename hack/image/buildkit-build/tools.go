//go:build tools

// Package buildkitbuild pins the BuildKit commands that hack/image builds.
package buildkitbuild

import (
	_ "github.com/moby/buildkit/cmd/buildctl"
	_ "github.com/moby/buildkit/cmd/buildkitd"
)
