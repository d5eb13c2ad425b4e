# The dockyard image: `dockyard orchestrator` and `dockyard agent` both run from it.
# It needs python:3.11-slim from a registry, so it cannot be built on an offline machine
# (scripts/demo.sh and scripts/test.sh don't use it; they run dockyard from .venv).
FROM python:3.11-slim
WORKDIR /src
COPY pyproject.toml README.md ./
COPY dockyard ./dockyard
COPY orchestrator ./orchestrator
COPY agent ./agent
RUN pip install --no-cache-dir . && rm -rf /src
WORKDIR /
RUN useradd --system --create-home --home-dir /var/lib/dockyard dockyard
# The orchestrator runs as this user; the agent service overrides to root for the Docker socket.
USER dockyard
ENTRYPOINT ["dockyard"]
CMD ["--help"]
