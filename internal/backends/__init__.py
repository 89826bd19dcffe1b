"""The discovery backends, one subpackage each: everything a backend needs lives together.

`nvml/` reads real GPUs through NVML (discovery, topology, health events and probes);
`fake/` serves devices described in a YAML file or by a count (discovery, presets,
the file watch that is its health source). registry.py maps a configured kind to one.
"""
