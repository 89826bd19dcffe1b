"""gdp_bench: the benchmarks, each a module run as `python -m gdp_bench.<name>`.

`python -m gdp_bench.run` (`task bench`) runs them by name and writes
bench/results/<name>.json; bench/README.md has the figures. Installed by
scripts/bootstrap from tools/pyproject.toml; never part of the product.
"""
