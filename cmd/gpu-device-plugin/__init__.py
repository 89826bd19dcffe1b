"""The `gpu-device-plugin` command: parses flags into a typed config and wires the layers."""
