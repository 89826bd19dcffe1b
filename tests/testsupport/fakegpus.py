"""Writing the fake backend's YAML file the way a user (or a ConfigMap update) does."""

from __future__ import annotations

from pathlib import Path

import yaml

from gpu_device_plugin.backends.fake.spec import fake_uuid


def write_fake_config(path: Path, count: int = 8, unhealthy: tuple[int, ...] = ()) -> None:
    devices = [
        {"uuid": fake_uuid(i), "numa": i * 2 // count, "health": "Unhealthy" if i in unhealthy else "Healthy"}
        for i in range(count)
    ]
    # Write-then-rename: a reader never sees half a file.
    scratch = path.with_name(path.name + ".tmp")
    scratch.write_text(yaml.safe_dump({"devices": devices}))
    scratch.replace(path)
