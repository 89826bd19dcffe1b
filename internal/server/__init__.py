"""The kubelet-facing side: the DevicePlugin gRPC service, its socket, registration,
and the watch that restarts both when the kubelet restarts.

The server translates protobuf to domain values and back; decisions belong to
the allocator, and device state arrives only through the SnapshotCell.
"""
