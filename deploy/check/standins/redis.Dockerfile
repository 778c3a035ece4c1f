# Stand-in for redis:7 and redis:7-alpine, from Debian bookworm's Redis 7 (deploy/check.py). As the
# official image: data in /data, and protected mode off when no config file is given (other containers
# connect), through the same kind of entrypoint.
FROM broadcast-hub-check/debian:bookworm
RUN apt-get update \
    && apt-get install -y --no-install-recommends redis-server redis-tools \
    && rm -rf /var/lib/apt/lists/*
COPY redis-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
WORKDIR /data
ENTRYPOINT ["docker-entrypoint.sh"]
EXPOSE 6379
CMD ["redis-server"]
