"""What a new plan changes against the resources being served: the diff a live config change applies.

Pure: from the served managers (by name) and the new plan it says, per resource,
which of four things happens. `keep`: equal manager, its server, socket,
registration and streams are left alone. `swap`: same name and same
DevicePluginOptions, other devices or answers: the manager is swapped in place
and the existing streams publish its devices. `reregister`: same name, other
options (the kubelet reads them only at registration). `remove` / `add`: a name
that goes or comes (a renamed resource is one of each: to the kubelet it is
another resource).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gpu_device_plugin.resources.manager import ResourceManager


@dataclass(frozen=True)
class PlanDiff:
    keep: tuple[ResourceManager, ...] = ()
    swap: tuple[ResourceManager, ...] = ()
    reregister: tuple[ResourceManager, ...] = ()
    remove: tuple[str, ...] = ()
    add: tuple[ResourceManager, ...] = ()

    @property
    def changed(self) -> bool:
        return bool(self.swap or self.reregister or self.remove or self.add)

    def summary(self) -> str:
        """What changed, for the log line and the ConfigApplied Event."""
        parts = [
            f"{what} {', '.join(names)}"
            for what, names in (
                ("added", [m.resource_name for m in self.add]),
                ("removed", list(self.remove)),
                ("re-registered", [m.resource_name for m in self.reregister]),
                ("updated", [m.resource_name for m in self.swap]),
                ("unchanged", [m.resource_name for m in self.keep]),
            )
            if names
        ]
        return "; ".join(parts) or "no resources"


def diff_plans(
    served: Mapping[str, ResourceManager],
    plan: Sequence[ResourceManager],
    options: Callable[[ResourceManager], Any],
) -> PlanDiff:
    """The diff from `served` to `plan`; `options(manager)` is what its registration
    promises (compared by equality), so a change of it re-registers."""
    keep: list[ResourceManager] = []
    swap: list[ResourceManager] = []
    reregister: list[ResourceManager] = []
    add: list[ResourceManager] = []
    for manager in plan:
        old = served.get(manager.resource_name)
        if old is None:
            add.append(manager)
        elif old == manager:
            keep.append(manager)
        elif options(old) == options(manager):
            swap.append(manager)
        else:
            reregister.append(manager)
    planned = {m.resource_name for m in plan}
    remove = tuple(name for name in served if name not in planned)
    return PlanDiff(tuple(keep), tuple(swap), tuple(reregister), remove, tuple(add))
