"""Logging and tracing set-up. Configured once by the CLI, injected everywhere else."""
