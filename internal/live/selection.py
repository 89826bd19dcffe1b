"""Which named config applies: the Node label's value, else the default, else NVIDIA's fallbacks.

Pure, the rules of NVIDIA's config-manager: a label naming a config picks it
(a name that is not in the folder is an error: nothing changes); no label picks
--default-config (which must exist); without one, a config named `default`,
else the only config there is, else none at all (the flags alone).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from gpu_device_plugin.errors import PluginError

#: The config NVIDIA's "named" fallback looks for.
NAMED_FALLBACK = "default"


class SelectionError(PluginError):
    """No config can be chosen (the label or the default names one that is not there)."""


@dataclass(frozen=True)
class Selection:
    name: str | None
    """The config to apply; None: none, the flags alone."""
    why: str
    """How it was chosen, for the log line and the Event."""

    @property
    def shown(self) -> str:
        return self.name if self.name is not None else "(flags alone)"


def select_config(
    label: str | None, available: Collection[str], *, label_key: str, default: str | None
) -> Selection:
    names = sorted(available)
    if label:
        if label not in available:
            raise SelectionError(
                f"label {label_key}={label} names a config that is not in the folder "
                f"(there: {', '.join(names) or 'none'})"
            )
        return Selection(label, f"label {label_key}={label}")
    if default is not None:
        if default not in available:
            raise SelectionError(
                f"--default-config {default} is not in the folder (there: {', '.join(names) or 'none'})"
            )
        return Selection(default, f"no label {label_key}: --default-config")
    if NAMED_FALLBACK in available:
        return Selection(NAMED_FALLBACK, f"no label {label_key}: the config named {NAMED_FALLBACK}")
    if len(names) == 1:
        return Selection(names[0], f"no label {label_key}: the only config")
    return Selection(None, f"no label {label_key} and {len(names)} configs, none named {NAMED_FALLBACK}")
