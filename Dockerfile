# syntax=docker/dockerfile:1
#
# The selftune-events service. Build with `docker compose build` (or
# `docker build -t selftune-events .`); docker-compose.yml runs the same image
# twice: once as the one-shot `migrate`, then as the long-running `api`.

# Both stages use the same base, so the virtual environment's interpreter
# links (.venv/bin/python -> /usr/local/bin/python3.11) stay valid when it is
# copied from one to the other. Bump the patch release here, not the minor.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS build

# uv from PyPI, pinned to the release that wrote uv.lock.
RUN pip install --no-cache-dir uv==0.13.9

WORKDIR /app

# Compile bytecode now, so the non-root user (who cannot write here) starts
# fast; copy rather than hard-link, because the cache mount is another
# filesystem; use the image's Python, never a downloaded one.
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv

# Dependencies first, without the project: this layer is reused until
# uv.lock or pyproject.toml changes, whatever happens to app/.
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    uv sync --frozen --no-dev --no-install-project

COPY pyproject.toml uv.lock README.md alembic.ini ./
COPY migrations ./migrations
COPY app ./app

# The project itself stays an editable install on purpose: app/db/migrate.py
# finds migrations/ beside app/, which holds in /app and would not in
# site-packages.
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev


FROM ${PYTHON_IMAGE} AS runtime

# A fixed, numeric uid, so volume permissions and Kubernetes runAsNonRoot can
# check it without reading /etc/passwd.
RUN groupadd --system --gid 10001 selftune \
    && useradd --system --uid 10001 --gid selftune \
        --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin selftune

WORKDIR /app

# Owned by root and read-only for the service: it writes nothing to disk.
COPY --from=build /app /app

ENV PATH="/app/.venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

USER 10001:10001

EXPOSE 8000

# Exec form, so the service is PID 1 and receives SIGTERM itself: it then ends
# its streams and lets uvicorn drain (app/cli/server.py,
# GRACEFUL_SHUTDOWN_SECONDS), inside the stop grace period of compose.
CMD ["selftune-events", "serve", "--host", "0.0.0.0", "--port", "8000"]
