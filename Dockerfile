# syntax=docker/dockerfile:1
# Herald: one image for both containers of the pod.
#   herald run               the operator (the default command)
#   herald callback-server   the callback sidecar
#   kubectl-herald           the kubectl plugin, on PATH too (docker run --entrypoint
#                            kubectl-herald …, or `kubectl herald` with a kubectl beside it)
# Build: docker build -t ghcr.io/herald-dev/herald:0.1.0 .
# The image holds no secrets and no configuration: the Helm chart mounts the config file
# (HERALD_CONFIG_FILE) and the keys (/etc/herald/secrets/) at run time.

# --- builder: wheels for herald and every dependency -----------------------------------
FROM python:3.11-slim AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
# Only what the wheel is built from (see .dockerignore): pyproject.toml, README.md (the
# project's readme) and the package sources.
COPY pyproject.toml README.md ./
COPY operator/ operator/
RUN pip wheel --wheel-dir /wheels .

# --- final: the wheels installed, nothing else ------------------------------------------
FROM python:3.11-slim

ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="herald" \
      org.opencontainers.image.description="Kubernetes operator that publishes ScheduledPosts through n8n at the right second" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/herald-dev/herald" \
      org.opencontainers.image.url="https://herald.dev"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# Install from the builder's wheels only (--no-index: no registry access, no compilers),
# then drop pip's wheel files with the mount. A fixed non-root user: uid/gid 65532, as the
# chart's securityContext (runAsUser/runAsGroup/fsGroup 65532) expects.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels /wheels/herald-*.whl \
    && groupadd --system --gid 65532 herald \
    && useradd --system --uid 65532 --gid 65532 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin herald

USER 65532:65532
WORKDIR /tmp
# metrics, health (operator); callbacks (sidecar)
EXPOSE 9090 8081 8080
ENTRYPOINT ["herald"]
CMD ["run"]
