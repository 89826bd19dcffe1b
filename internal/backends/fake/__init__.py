"""The fake backend: devices from a YAML file (or a count), whose edits are its health source."""
