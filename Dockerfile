# parkspot server image: migrates the configured database, then serves on port 8000.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PARKSPOT_DATA_DIR=/app/var

RUN groupadd --system --gid 10001 parkspot \
    && useradd --system --uid 10001 --gid parkspot --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin parkspot

WORKDIR /app

# Dependencies first, from pyproject.toml alone, so a code change does not reinstall them.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# alembic.ini and alembic/ stay in the working directory: `parkspot migrate` looks there.
COPY README.md alembic.ini ./
COPY alembic ./alembic
COPY src ./src
RUN pip install --no-deps . \
    && mkdir -p /app/var \
    && chown parkspot:parkspot /app/var

USER parkspot
EXPOSE 8000
VOLUME ["/app/var"]

HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]

# Arguments given to `docker run IMAGE ...` (or compose's `command:`) go to `parkspot serve`,
# e.g. `--workers 4` (needs PARKSPOT_REDIS_URL).
ENTRYPOINT ["/bin/sh", "-c", "parkspot migrate && exec parkspot serve --host 0.0.0.0 --port 8000 \"$@\"", "parkspot"]
CMD []
