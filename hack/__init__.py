"""gdp_hack: developer tools run as `python -m gdp_hack.<tool>`.

`image` (the reproducible image build), `nvmlfake` (the C NVML fake and its
driver roots), `manifests` (render and check the kustomize overlays), `traces`
(a local Jaeger), `genproto` (the gRPC stubs). Installed by scripts/bootstrap
from tools/pyproject.toml; never part of the product or its image.
"""
