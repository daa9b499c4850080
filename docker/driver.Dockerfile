# syntax=docker/dockerfile:1
# Tessera DRA kubelet plugin (`python -m dra_driver`), carrying libvgpu.so for the init container
# (`python -m isolation.install --source /opt/tessera/lib --dest <host lib dir>`).
# Build from the repository root:  docker build -f docker/driver.Dockerfile -t tessera/driver:0.1.0 .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# libvgpu.so is preloaded into every workload container, whatever its distribution, so it is built
# against an old glibc (2.17, manylinux2014): a library linked on a newer glibc needs symbol versions
# (e.g. dlsym@GLIBC_2.34) that Ubuntu 20.04 or UBI 8 CUDA images lack, and ld.so then skips the
# preload, which would silently run the workload without isolation. For arm64 nodes pass
# --build-arg LIBVGPU_BUILDER=quay.io/pypa/manylinux2014_aarch64.
ARG LIBVGPU_BUILDER=quay.io/pypa/manylinux2014_x86_64
ARG LIBVGPU_MAX_GLIBC=2.17

# --- libvgpu.so ----------------------------------------------------------------------------------------
FROM ${LIBVGPU_BUILDER} AS libvgpu
ARG LIBVGPU_MAX_GLIBC
WORKDIR /src
COPY isolation/ isolation/
COPY docker/check-glibc.sh /usr/local/bin/check-glibc
RUN make -C isolation clean >/dev/null 2>&1 || true; \
    make -C isolation \
 && test -f isolation/build/libvgpu.so \
 && sh /usr/local/bin/check-glibc isolation/build/libvgpu.so "${LIBVGPU_MAX_GLIBC}" \
 && mkdir -p /out && cp isolation/build/libvgpu.so /out/libvgpu.so

# --- the tessera distribution in a virtual environment -------------------------------------------------
FROM ${PYTHON_IMAGE} AS python-build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY vendors/ vendors/
COPY webhook/ webhook/
COPY dra_driver/ dra_driver/
COPY isolation/ isolation/
COPY kubeapi/ kubeapi/
COPY tessera_common/ tessera_common/
COPY tessera_exporter/ tessera_exporter/
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-compile . \
 && /opt/venv/bin/python -m compileall -q /opt/venv/lib \
 && /opt/venv/bin/python -c "import dra_driver.cli, isolation.install; dra_driver.cli.build_parser({})"

# --- runtime -------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="tessera-driver" \
      org.opencontainers.image.description="Tessera DRA kubelet plugin with the libvgpu.so isolation library" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=python-build /opt/venv /opt/venv
COPY --from=libvgpu /out/libvgpu.so /opt/tessera/lib/
# The image defaults to an unprivileged user. The chart runs the plugin as root (UID 0, no
# capabilities) because its sockets and files live in root-owned host directories.
USER 65532:65532
EXPOSE 9400 51515
ENTRYPOINT ["python", "-m", "dra_driver"]
