"""Process exit codes: the one place that decides them."""

OK = 0
FAILURE = 1  # runtime failure: NVML unusable, plugin unhealthy or unreachable (probe)
BAD_CONFIG = 2  # a flag, env var or config file is wrong; click uses 2 for usage errors too
