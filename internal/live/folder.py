"""The folder of named configs: a ConfigMap mounted as a volume, one file per key.

The kubelet updates such a mount atomically: it writes the new keys into a
fresh hidden folder and renames the `..data` link onto it, so every `<name>`
link (`<name> -> ..data/<name>`) switches at once. Entries starting with `..`
are that machinery, never configs. The folder is watched with inotify
(fswatch.py); any change there (the `..data` swap, a plain file edited in a
folder that is not a ConfigMap) is a reason to look again; whether anything
changed for us is the reader's to decide, by content.
"""

from __future__ import annotations

from pathlib import Path

from gpu_device_plugin.fswatch import FolderWatch


class ConfigFolder:
    def __init__(self, path: Path) -> None:
        self.path = path

    def names(self) -> frozenset[str]:
        """The configs there now (files, links to files); an unreadable folder has none."""
        try:
            entries = list(self.path.iterdir())
        except OSError:
            return frozenset()
        return frozenset(e.name for e in entries if not e.name.startswith("..") and e.is_file())

    def file(self, name: str) -> Path:
        return self.path / name

    def watch(self) -> FolderWatch:
        return FolderWatch(self.path)
