"""A one-node Kubernetes cluster made of host processes, for the e2e suite.

Everything here is built from upstream parts that this machine can get from
package registries: Kubernetes from the Go module proxy, containerd, runc,
etcd and the loopback CNI plugin from Debian. Nothing is pulled from a
container registry: the two images the pods need are written locally as OCI
archives and imported into containerd.

The cluster listens on 127.0.0.1 and unix sockets only. It never creates a
pod network (pods use hostNetwork), never touches a bridge, and never sends
traffic anywhere but loopback.

This package uses the standard library only, so it can bring a cluster up
before any test dependency is installed.
"""
