# Stand-in for nginx:1.27-alpine, from Debian bookworm's nginx (deploy/check.py): the configuration
# compose mounts at /etc/nginx/nginx.conf, logs to the container's output, in the foreground.
FROM broadcast-hub-check/debian:bookworm
# The mounted config names no user: workers run as nobody, who must write nginx's temp files.
RUN apt-get update \
    && apt-get install -y --no-install-recommends nginx-light \
    && rm -rf /var/lib/apt/lists/* /etc/nginx/sites-enabled/* \
    && ln -sf /dev/stdout /var/log/nginx/access.log \
    && ln -sf /dev/stderr /var/log/nginx/error.log \
    && chown -R nobody /var/lib/nginx
EXPOSE 80
STOPSIGNAL SIGQUIT
CMD ["nginx", "-g", "daemon off;"]
