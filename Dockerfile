# syntax=docker/dockerfile:1
#
# Targets:
#   runtime (default)  docker compose, Unraid, plain docker: runs as UID/GID 1000.
#   homeassistant      the Home Assistant app image (addon/config.yaml): same layers, but starts
#                      as root, because the Supervisor writes /data/options.json as root with
#                      mode 0600 and creates /data root-owned; the entrypoint reads the options,
#                      hands /data to UID 1000 and drops root before starting the service.
#
#   docker build -t watchbridge .
#   docker build --target homeassistant --build-arg BUILD_ARCH=aarch64 -t watchbridge-ha .

FROM python:3.12.11-slim-bookworm AS base

FROM base AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
# constraints.txt pins every distribution the install brings in, the indirect ones too, so an
# image built later gets the versions tested together rather than whatever is newest that day.
COPY pyproject.toml README.md constraints.txt ./
COPY src ./src
RUN /opt/venv/bin/pip install --no-cache-dir -c constraints.txt .

FROM base AS app
ARG BUILD_VERSION=0.1.0
ARG BUILD_ARCH=amd64
ARG BUILD_REVISION=unknown
LABEL org.opencontainers.image.title="watchbridge" \
      org.opencontainers.image.description="Keeps watch history, ratings and watchlists in sync across Trakt, Plex, Jellyfin/Emby, Serializd and AniList" \
      org.opencontainers.image.source="https://github.com/watchbridge/watchbridge" \
      org.opencontainers.image.url="https://github.com/watchbridge/watchbridge" \
      org.opencontainers.image.documentation="https://github.com/watchbridge/watchbridge#readme" \
      org.opencontainers.image.version="${BUILD_VERSION}" \
      org.opencontainers.image.revision="${BUILD_REVISION}" \
      org.opencontainers.image.licenses="MIT" \
      io.hass.name="watchbridge" \
      io.hass.description="Keeps watch history in sync across Trakt, Plex, Jellyfin, Serializd and AniList" \
      io.hass.url="https://github.com/watchbridge/watchbridge" \
      io.hass.version="${BUILD_VERSION}" \
      io.hass.type="app" \
      io.hass.arch="${BUILD_ARCH}"

RUN groupadd --gid 1000 watchbridge \
    && useradd --uid 1000 --gid 1000 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin watchbridge \
    && mkdir -p /config /data \
    && chown 1000:1000 /config /data

COPY --from=builder /opt/venv /opt/venv
COPY config/watchbridge.example.yaml /app/watchbridge.example.yaml

# SQLITE_TMPDIR: SQLite's temporary copies (the rewrite that gives space back after an
# outage's backlog) go to the data disk the space check counts, not to /tmp, which compose
# mounts in memory.
ENV PATH="/opt/venv/bin:${PATH}" \
    SQLITE_TMPDIR=/data \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    WATCHBRIDGE_DATA_DIR=/data \
    WATCHBRIDGE_CONFIG=/config/watchbridge.yaml \
    WATCHBRIDGE_EXAMPLE_CONFIG=/app/watchbridge.example.yaml \
    WATCHBRIDGE_IMAGE=1
WORKDIR /app
VOLUME ["/config", "/data"]
EXPOSE 8765

# Asks /healthz, then /readyz (unhealthy while the database takes no writes: a full disk), on
# $WATCHBRIDGE_PORT (8765) at the address server.host listens on (loopback for every
# interface), as the running service noted it in /data/watchbridge.listening (a bare socket,
# ~0.01 s of CPU), else read from the config the entrypoint chooses. Under Home Assistant 8765
# is server.webhook_port, which also answers both (the app's watchdog asks /healthz alone).
# Not `python -I`: it saves ~2 ms; nor -S, which would lose the venv's packages.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/opt/venv/bin/python", "-m", "watchbridge.healthcheck"]

ENTRYPOINT ["/opt/venv/bin/python", "-m", "watchbridge.entrypoint"]

FROM app AS homeassistant

FROM app AS runtime
USER 1000:1000
