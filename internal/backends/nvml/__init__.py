"""The NVML backend: real GPUs through nvidia-ml-py, and their health from NVML events and probes."""
