# Slim, non-root image for the jsoc-bulk daemon (API, workers) and the JSOC emulator.
FROM python:3.11-slim

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
COPY jsoc_bulk ./jsoc_bulk
COPY migrations ./migrations
# A regular install into site-packages: the wheel carries the Alembic migrations (the
# `migrations` package) with the service, which finds them there. The `jsocsim` extra:
# docker-compose.yml runs the emulator from this image too.
RUN pip install ".[jsocsim]" \
    && useradd --create-home --uid 10001 jsoc \
    && mkdir -p /data && chown jsoc:jsoc /data

USER jsoc
VOLUME ["/data"]
EXPOSE 8470
# Exec form: jsoc-bulk itself is the container's main process and receives SIGTERM (it drains
# in-flight work, checkpoints downloads and releases its leases, then exits 0).
ENTRYPOINT ["jsoc-bulk"]
CMD ["serve", "--db-upgrade"]
