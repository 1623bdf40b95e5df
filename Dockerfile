# syntax=docker/dockerfile:1
# twilio-status-exporter: `docker build -t twilio-status-exporter .`, then
# `docker run -p 8080:8080 -e TWILIO_AUTH_TOKEN=... -v exporter-data:/data twilio-status-exporter`.
# Two stages: the first installs the package into a virtualenv; the runtime image gets only
# that virtualenv (no compiler, pip cache, wheels or sources).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# The dependencies first, in a layer of their own: it depends on pyproject.toml alone, so a
# change to the code or the README rebuilds only the small layer of the package itself.
# The build backend comes in that layer too, so building the package needs no download.
COPY pyproject.toml ./
RUN python -m venv /opt/twilio-status-exporter \
    && python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb')); print(*p['project']['dependencies'], *p['build-system']['requires'], sep='\n')" > /tmp/requirements.txt \
    && /opt/twilio-status-exporter/bin/pip install --requirement /tmp/requirements.txt
COPY README.md ./
COPY exporter ./exporter
# pip, setuptools and wheel are only needed to install: dropping them saves ~25 MB.
RUN /opt/twilio-status-exporter/bin/pip install --no-deps --no-build-isolation . \
    && /opt/twilio-status-exporter/bin/pip uninstall --yes pip setuptools wheel

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="twilio-status-exporter" \
      org.opencontainers.image.description="Twilio StatusCallback receiver: Prometheus metrics, OpenTelemetry traces, a durable lifecycle record" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed numeric uid and gid, so Kubernetes' runAsNonRoot can verify them and volumes can be
# chowned; the group is created first with that gid, or files on the volume would belong to
# a gid that has no name in the image.
RUN groupadd --system --gid 10001 exporter \
    && useradd --system --no-log-init --uid 10001 --gid exporter --home-dir /data \
        --shell /usr/sbin/nologin exporter \
    && mkdir -p /data \
    && chown exporter:exporter /data
COPY --from=build /opt/twilio-status-exporter /opt/twilio-status-exporter
COPY deploy/docker/healthcheck.py /opt/twilio-status-exporter/healthcheck.py
# The embedded store lives on the volume (set a postgresql:// URL to share one database
# between replicas instead). The per-worker metric files are small and rewritten constantly,
# so a tmpfs suits them (`--tmpfs /tmp`); they are wiped at every start.
ENV PATH=/opt/twilio-status-exporter/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    EXPORTER_STORE=sqlite:////data/twilio-status-exporter.db \
    PROMETHEUS_MULTIPROC_DIR=/tmp/twilio-status-exporter-metrics
VOLUME ["/data"]
WORKDIR /data
USER 10001:10001
EXPOSE 8080
# Liveness only (/healthz): a database outage shows on /readyz and must not restart the
# container, which would not bring the database back. The check asks the address the service
# was started with (`serve --bind`, EXPORTER_BIND), not a fixed port.
HEALTHCHECK --interval=15s --timeout=3s --start-period=15s --retries=3 \
    CMD ["python", "/opt/twilio-status-exporter/healthcheck.py"]
ENTRYPOINT ["twilio-status-exporter"]
CMD ["serve"]
