"""gdp_e2e: the real-kubelet end-to-end harness (the local cluster in `gdp_e2e.cluster`).

Installed by scripts/bootstrap from tools/pyproject.toml; the suite itself is
e2e/tests, run by pytest. Never part of the product or its image.
"""
