# syncd container image.
#
#   docker build -t syncd .
#   docker run --rm -e SYNCD_API_KEY=... -e SYNCD_DATABASE_URL=postgresql://u:p@db:5432/syncd syncd
#
# A release build records where it came from in the OCI labels:
#
#   docker build -t syncd:0.1.0 --build-arg VERSION=0.1.0 \
#     --build-arg REVISION="$(git rev-parse HEAD)" \
#     --build-arg SOURCE=https://example.org/your/syncd-repository .
#
# Configuration is only through SYNCD_* environment variables (see .env.example).
# docker-compose.yml runs it next to PostgreSQL.

# ---------------------------------------------------------------------------
# builder: build a wheel of the project, install it and its dependencies into
# a self-contained virtualenv at /opt/venv.  Every dependency ships wheels for
# linux/amd64 and linux/arm64, so no compiler is needed even here.
# ---------------------------------------------------------------------------
FROM python:3.11-slim AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv

WORKDIR /src
# .dockerignore admits only what the build needs (never .env, .git or .venv).
COPY . .

RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
    && /opt/venv/bin/pip install /wheels/syncd-*.whl

# `syncd migrate` looks for the alembic scripts under <venv>/share/syncd/migrations
# when installed.  Put them there unless the wheel already did.
RUN if [ ! -f /opt/venv/share/syncd/migrations/env.py ]; then \
        mkdir -p /opt/venv/share/syncd \
        && cp -a migrations /opt/venv/share/syncd/; \
    fi \
    && find /opt/venv/share/syncd -name __pycache__ -prune -exec rm -rf {} + \
    && test -f /opt/venv/share/syncd/migrations/env.py \
    && /opt/venv/bin/syncd --help > /dev/null

# ---------------------------------------------------------------------------
# runtime: the same Python base, the virtualenv and nothing else.
# ---------------------------------------------------------------------------
FROM python:3.11-slim AS runtime

LABEL org.opencontainers.image.title="syncd" \
      org.opencontainers.image.description="Mirror a CoreClaw account's run history into PostgreSQL" \
      org.opencontainers.image.licenses="Apache-2.0"

# glibc raises its mmap threshold whenever a large block is freed, after which
# large response buffers come from the heap and leave holes in it: RSS grew by
# ~7 MB of free heap over a few thousand cycles.  Fixed at glibc's own default
# (128 KiB) they are mmap'd and unmapped when freed; RSS stays flat, at no CPU
# cost we could measure (bench/soak.py).  One thread allocates, so
# MALLOC_ARENA_MAX would change nothing.
ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MALLOC_MMAP_THRESHOLD_=131072 \
    MALLOC_TRIM_THRESHOLD_=131072 \
    SYNCD_DATA_DIR=/var/lib/syncd

# A fixed uid/gid so volume ownership and Kubernetes runAsUser are predictable.
RUN groupadd --system --gid 10001 syncd \
    && useradd --system --uid 10001 --gid syncd --no-create-home \
         --home-dir /var/lib/syncd --shell /usr/sbin/nologin syncd \
    && install -d -o syncd -g syncd -m 0750 /var/lib/syncd

COPY --from=builder /opt/venv /opt/venv

# Declared after the COPY, so that a build for a new revision reuses every
# cached layer with files and only sets new metadata.
# VERSION's default is pyproject.toml's version (tests/test_container_files.py
# checks it); REVISION is the VCS commit and SOURCE the repository's URL, both
# empty unless given (an image built from a work tree has neither).
ARG VERSION=0.1.0
ARG REVISION=""
ARG SOURCE=""
LABEL org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}"

# syncd also reads ./.env; its working directory is its own writable data dir.
WORKDIR /var/lib/syncd
USER 10001:10001

EXPOSE 8080

# Shell form on purpose, so ${SYNCD_HTTP_PORT:-8080} follows the port the daemon
# listens on (DL3025 asks for exec form, which would not expand it).
# hadolint ignore=DL3025
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:${SYNCD_HTTP_PORT:-8080}/healthz', timeout=4)" || exit 1

ENTRYPOINT ["syncd"]
CMD ["run"]
