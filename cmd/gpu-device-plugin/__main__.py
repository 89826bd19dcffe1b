"""`python -m gpu_device_plugin.cli` runs the CLI."""

from gpu_device_plugin.cli.main import main

main()
