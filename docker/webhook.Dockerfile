# syntax=docker/dockerfile:1
# Tessera admission webhook (`python -m webhook serve`); the chart runs the cluster exporter from this
# image too (`python -m tessera_exporter exporter`).
# Build from the repository root:  docker build -f docker/webhook.Dockerfile -t tessera/webhook:0.1.0 .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: the tessera distribution and its dependencies in a virtual environment ------------------
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
 && /opt/venv/bin/python -c "import webhook.cli, tessera_exporter.cli; webhook.cli.build_parser(); tessera_exporter.cli.build_parser()"

# --- runtime: no compiler, no build files, a non-root user --------------------------------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="tessera-webhook" \
      org.opencontainers.image.description="Tessera admission webhook: HAMi-style accelerator requests to DRA claims" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=python-build /opt/venv /opt/venv
# The read-only root filesystem of the chart's pods is fine: bytecode is compiled above.
USER 65532:65532
EXPOSE 8443
ENTRYPOINT ["python", "-m", "webhook"]
CMD ["serve"]
