"""One connection to the API server, made on first use and shared by the daemon's cluster tasks.

Connecting imports the `kubernetes` client and reads the kubeconfig or the
service account: done on a worker thread when the first task needs it, so the
plugin registers with the kubelet without waiting for any of it. A kubeconfig
that cannot be loaded is a ConfigError, which ends the process with code 2.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from gpu_device_plugin.cluster.nodeapi import NodeApi
from gpu_device_plugin.cluster.offloop import off_loop

# How long the first connection waits for the plugin to register with the kubelet.
REGISTRATION_GRACE_S = 5.0


class ClusterSession:
    def __init__(
        self,
        connect: Callable[[], NodeApi],
        *,
        not_before: asyncio.Event | None = None,
        grace_s: float = REGISTRATION_GRACE_S,
    ) -> None:
        self._connect = connect
        self._not_before = not_before
        self._grace_s = grace_s
        self._api: NodeApi | None = None
        self._lock = asyncio.Lock()

    async def api(self) -> NodeApi:
        async with self._lock:
            if self._api is None:
                await self._after_registration()
                self._api = await off_loop(self._connect, name="cluster-connect")
            return self._api

    async def _after_registration(self) -> None:
        # Importing the client holds the GIL for about half a second: done while the plugin
        # starts, it would delay the registration by a third of that. So it waits for the
        # registration, but not for long: labels still come when no kubelet is there yet.
        if self._not_before is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._grace_s):
                await self._not_before.wait()
