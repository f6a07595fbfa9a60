# syntax=docker/dockerfile:1

# Build stage: install the project and its locked dependencies into a self-contained venv.
FROM python:3.11-slim AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/venv
ENV PATH="/opt/venv/bin:${PATH}"

WORKDIR /src
# Exactly what `pip install .` needs; constraints.txt pins every dependency to the lock.
COPY pyproject.toml README.md constraints.txt ./
COPY proxy/ ./proxy/
RUN pip install --no-cache-dir -c constraints.txt .


# Runtime stage: the venv only; no build inputs, no compilers, no curl.
FROM python:3.11-slim AS runtime

ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    METERING_HOST=0.0.0.0 \
    METERING_PORT=8080 \
    METERING_DATABASE_URL=sqlite+aiosqlite:////data/metering.db

# A fixed UID/GID so that volume ownership is predictable on every host.
RUN groupadd --system --gid 10001 metering \
    && useradd --system --no-log-init --uid 10001 --gid metering \
        --home-dir /data --no-create-home --shell /usr/sbin/nologin metering \
    && mkdir /data \
    && chown metering:metering /data

COPY --from=build /opt/venv /opt/venv

WORKDIR /data
VOLUME ["/data"]
USER 10001:10001
EXPOSE 8080

# urllib instead of curl: the slim image has no curl and needs none.
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('METERING_PORT', '8080') + '/healthz', timeout=4)"]

ENTRYPOINT ["metering-proxy"]
CMD ["serve"]
