# The gpu-device-plugin image: the daemon in a Python virtual environment installed
# from hash-checked locks, on Debian bookworm's python3 (3.11: the interpreter the
# cp311 wheels in requirements/runtime.lock are built for).
#
# Reproducible: built with BuildKit >= 0.13 and SOURCE_DATE_EPOCH set (the commit
# time) plus the exporter option rewrite-timestamp=true, two builds of one commit
# give the same image digest. `task image` builds it on a machine with no registry
# and `task image:verify` proves the digests match (hack/image/README.md). A plain
# `docker build --network host .` works too, with the real-world bases below.
#
# Two bases, both pinned by digest and both overridable build arguments:
#   BUILD_BASE: where the environment is assembled (shell, apt, pip; never shipped),
#   BASE: what the image runs on: Debian's python3 and the libraries it needs, no
#         shell, no package manager (distroless). hack/image replaces both with
#         equivalents it makes with debootstrap and passes as named contexts.
ARG BUILD_BASE=docker.io/library/debian:bookworm-slim@sha256:3783cc01769c7b2b1b83a5c5ad96c815348e28ed7da68e2e3687004faa906251
ARG BASE=gcr.io/distroless/python3-debian12@sha256:078ef2498f450dddbabf7c46f889016824c8c032f84edd2017cd135a2b4bae91
# Seconds since 1970: no time in the image is later. BuildKit takes it from the
# caller's SOURCE_DATE_EPOCH; hack/image passes the commit time.
ARG SOURCE_DATE_EPOCH=0

FROM ${BUILD_BASE} AS build
ARG SOURCE_DATE_EPOCH
# With SOURCE_DATE_EPOCH set, py_compile writes hash-based .pyc files (no source
# mtimes inside) and setuptools dates the wheel's entries with it.
ENV SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH} \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1
# python3 and venv: the local build base has them; debian:bookworm-slim gets them here.
RUN if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then \
        apt-get update \
        && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
        && rm -rf /var/lib/apt/lists/*; \
    fi
WORKDIR /src

# pip and setuptools, hash-checked, in a venv of their own so they never reach /opt/venv.
# The optional secret `pip-cert` is a CA bundle for a TLS-inspecting proxy; it is
# mounted for the step only and is not part of any layer or cache key.
COPY hack/image/build-tools.lock hack/image/
RUN --mount=type=secret,id=pip-cert \
    if [ -s /run/secrets/pip-cert ]; then export PIP_CERT=/run/secrets/pip-cert; fi \
    && python3 -m venv /opt/build-tools \
    && /opt/build-tools/bin/pip install --require-hashes --no-deps -r hack/image/build-tools.lock

# The runtime environment: exactly requirements/runtime.lock, wheels only, hash-checked.
# Made without pip: nothing installs packages at run time.
COPY requirements/runtime.lock requirements/
RUN --mount=type=secret,id=pip-cert \
    if [ -s /run/secrets/pip-cert ]; then export PIP_CERT=/run/secrets/pip-cert; fi \
    && python3 -m venv --without-pip /opt/venv \
    && /opt/build-tools/bin/pip --python /opt/venv/bin/python install \
        --require-hashes --no-deps --only-binary=:all: -r requirements/runtime.lock

# Trimmed to stay within the 150 MB budget, of what the daemon never loads:
# - hack/image/trim.py: kubernetes/aio (the client's asyncio copy, about 68 MB),
#   the generated API modules of groups we never call (about 26 MB), test modules.
#   We use the sync kubernetes.client, and CoreV1Api only.
# - aiohttp and the packages only it needs: kubernetes requires them for
#   kubernetes.aio alone (pip knows their files, so pip removes them).
COPY hack/image/trim.py hack/image/
RUN python3 hack/image/trim.py /opt/venv/lib/python3.11/site-packages \
    && /opt/build-tools/bin/pip --python /opt/venv/bin/python uninstall -y \
        aiohttp aiohttp-retry aiohappyeyeballs aiosignal attrs frozenlist multidict propcache yarl

# The project from this source tree, not editable: built into a wheel with the
# hash-checked setuptools (no build isolation, so no unpinned download), then installed.
COPY pyproject.toml README.md ./
COPY internal internal
COPY cmd cmd
RUN /opt/build-tools/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /tmp/dist . \
    && /opt/build-tools/bin/pip --python /opt/venv/bin/python install --no-deps --no-index /tmp/dist/*.whl \
    && /opt/venv/bin/python -B -c 'import gpu_device_plugin.cli.main, kubernetes.config; from kubernetes.client import CoreV1Api'

FROM ${BASE}
ARG VERSION=0.0.0+unknown
ARG REVISION=unknown
ARG CREATED=1970-01-01T00:00:00Z
ARG SOURCE=
LABEL org.opencontainers.image.title="gpu-device-plugin" \
      org.opencontainers.image.description="Kubernetes device plugin for NVIDIA GPUs" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}"
COPY --from=build /opt/venv /opt/venv
# Every module has its .pyc already and the DaemonSet's root filesystem is read-only.
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1
# Root, because the kubelet's device-plugin folder (a hostPath) belongs to root; the
# process needs no capabilities, and the DaemonSet drops them all.
USER 0:0
ENTRYPOINT ["/opt/venv/bin/gpu-device-plugin"]
CMD ["serve"]
