# broadcast-hub: slim, non-root, runtime dependencies only. Configure it with HUB_* variables.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY hub ./hub
# Wheels for the hub and what it needs at run time, nothing of the test or bench extras.
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
# MALLOC_MMAP_THRESHOLD_: glibc otherwise raises its threshold once a large block is freed, and event
# data of 128 KiB and more is then carved from the heap, which it seldom gives back: after twelve 30 MB
# replays were cut off the hub kept 400 MB, with the threshold fixed 63 MB (its size before them).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MALLOC_MMAP_THRESHOLD_=131072 \
    HUB_SERVER_HOST=0.0.0.0 \
    HUB_SERVER_PORT=8080
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels broadcast-hub \
    && rm -rf /wheels \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin hub
USER hub
EXPOSE 8080
# Liveness only: /readyz (broker reachable) is for the load balancer, which should stop sending traffic
# to a replica whose Redis is gone rather than have it restarted.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('HUB_SERVER_PORT', '8080'), timeout=2)"]
STOPSIGNAL SIGTERM
CMD ["hub", "serve"]
