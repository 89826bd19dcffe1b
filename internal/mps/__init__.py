"""MPS: the folders a control daemon and its clients share, the limits it enforces, its supervision.

Both sides live here because they must agree byte for byte: `mps-control` (the
sidecar) starts one `nvidia-cuda-mps-control` per MPS resource under the MPS
root and writes a ready file once the daemon answers with its limits set; the
plugin hands containers that daemon's pipe folder and reads the same ready file
before it lets the kubelet allocate. Nothing here knows a backend, a gRPC
message or a flag.
"""
