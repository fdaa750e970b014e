# Slim, non-root image for the jsoc-bulk daemon (API, workers) and the JSOC emulator.
FROM python:3.11-slim AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    JSOC_BULK_DATA_DIR=/data \
    JSOC_BULK_HOST=0.0.0.0

WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY service ./service
COPY jsocsim ./jsocsim
COPY migrations ./migrations
RUN pip install . \
    && useradd --create-home --uid 10001 jsoc \
    && mkdir -p /data && chown jsoc:jsoc /data

USER jsoc
VOLUME ["/data"]
EXPOSE 8470
# Exec form: the service is PID 1's child-free main process, so SIGTERM reaches it directly.
ENTRYPOINT ["jsoc-bulk"]
CMD ["serve", "--db-upgrade"]
