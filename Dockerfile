# The dockyard image: `dockyard orchestrator` and `dockyard agent` both run from it.
#
# Built by scripts/build-image.sh, offline: BASE_IMAGE is then dockyard-base:bookworm, a Debian
# bookworm rootfs made with debootstrap and `docker import`ed (python3, python3-venv). The build
# context is a wheelhouse built on the host (deps/: the runtime dependencies, app/: dockyard's
# wheel): the build installs with --no-index and reaches no package index.
# With a registry: scripts/build-image.sh with DOCKYARD_BASE_IMAGE=python:3.11-slim (any image
# with Python 3.11, the wheels' version, and its venv module).
ARG BASE_IMAGE=dockyard-base:bookworm
FROM ${BASE_IMAGE}
# Bookworm's python3 is externally managed (PEP 668): the project lives in its own venv. The
# dependencies first (a layer docker keeps while they do not change), then the project.
COPY deps /tmp/deps
RUN python3 -m venv /opt/dockyard \
 && /opt/dockyard/bin/pip install --no-cache-dir --no-index --disable-pip-version-check /tmp/deps/*.whl \
 && rm -rf /tmp/deps
COPY app /tmp/app
RUN /opt/dockyard/bin/pip install --no-cache-dir --no-index --no-deps --disable-pip-version-check /tmp/app/*.whl \
 && rm -rf /tmp/app \
 && /opt/dockyard/bin/dockyard --version
ENV PATH=/opt/dockyard/bin:$PATH PYTHONUNBUFFERED=1
# The orchestrator runs as this unprivileged user (its store under /var/lib/dockyard); the agent
# needs the Docker socket and runs as root (docker-compose.yml: user: root).
RUN (getent group dockyard || groupadd --system dockyard) \
 && (getent passwd dockyard || useradd --system --gid dockyard --home-dir /var/lib/dockyard --shell /usr/sbin/nologin dockyard) \
 && mkdir -p /var/lib/dockyard && chown dockyard:dockyard /var/lib/dockyard
USER dockyard
WORKDIR /var/lib/dockyard
ENTRYPOINT ["dockyard"]
CMD ["--help"]
