"""What the kubelet has been told about health: the basis for Allocate's race rule.

The kubelet chooses devices from the last ListAndWatch message it read, and
calls Allocate a little later (after GetPreferredAllocation, outside its own
lock). A device that turned unhealthy in between was healthy where the kubelet
stands; refusing it fails the pod for good (UnexpectedAdmissionError, never
retried) over a race the kubelet could not see. So Allocate hands out a
device that is unhealthy in our snapshot when, from the kubelet's side, it may
still have looked healthy:

- a stream is open, and the last snapshot sent on it still shows the device
  healthy (the change is published but not yet sent), or
- the snapshot that told the kubelet it is unhealthy went out less than
  `grace_s` ago (the kubelet may have chosen it just before reading it).

After that the kubelet knows, and a request for the device is refused
(FAILED_PRECONDITION) as before. A device that was never shown healthy (unhealthy
from the start, or new) gets no grace: nobody can have chosen it in good faith.

Pure state over snapshots and an injected clock; no I/O.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from gpu_device_plugin.inventory import Inventory

# ListAndWatch reaches the kubelet within a millisecond on a quiet node; an
# admission already past its choice of devices takes a few more for
# GetPreferredAllocation and Allocate. A second covers a loaded node with room to
# spare, and is short enough that a stale request is refused soon after.
ALLOCATE_GRACE_S = 1.0


@dataclass
class KubeletView:
    grace_s: float = ALLOCATE_GRACE_S
    clock: Callable[[], float] = time.monotonic
    # The last snapshot sent on any stream (None: none yet).
    told: Inventory | None = field(default=None, init=False)
    # The most devices any snapshot sent has listed: a kubelet's candidates can
    # name no more (the bound for absurd GetPreferredAllocation requests).
    most_devices: int = field(default=0, init=False)
    streams: int = field(default=0, init=False)
    # Device id -> when a sent snapshot first showed it unhealthy after showing it healthy.
    _unhealthy_since: dict[str, float] = field(default_factory=dict, init=False, repr=False)

    def sent(self, inventory: Inventory) -> None:
        """Record that `inventory` went out on the streams (once per snapshot)."""
        now = self.clock()
        before = self.told
        since: dict[str, float] = {}
        for device in inventory.devices:
            if device.healthy:
                continue
            earlier = before.by_id.get(device.id) if before is not None else None
            if earlier is not None and earlier.healthy:
                since[device.id] = now
            elif device.id in self._unhealthy_since:
                since[device.id] = self._unhealthy_since[device.id]
        self._unhealthy_since = since
        self.told = inventory
        self.most_devices = max(self.most_devices, len(inventory.devices))

    def racing(self, inventory: Inventory) -> dict[str, float | None]:
        """Unhealthy devices of `inventory` the kubelet may still have chosen in good faith.

        Maps each to the seconds since the kubelet was told, or None when it has not been yet.
        """
        if self.streams <= 0 or self.told is None:
            return {}
        now = self.clock()
        told = self.told.by_id
        found: dict[str, float | None] = {}
        for device in inventory.devices:
            if device.healthy:
                continue
            shown = told.get(device.id)
            if shown is not None and shown.healthy:
                found[device.id] = None
                continue
            since = self._unhealthy_since.get(device.id)
            if since is not None and now - since < self.grace_s:
                found[device.id] = now - since
        return found
