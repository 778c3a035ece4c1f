"""Nchan (nginx with the nchan module, in C) as a reference server of the load benchmark.

Debian's `nginx` and `libnginx-mod-nchan`, started with a config of their own in a temporary directory (its
pid file, error log and temp paths there, nothing of /etc/nginx read): one worker process, listening on
the given port of 127.0.0.1. Its store is memory, or with a Redis URL the scenario's Redis (Nchan's
`distributed` mode: a publish is answered once Redis has stored it, and every Nchan on that Redis delivers
it). It is set up as the hub runs in the benchmark: EventSource subscribers that start at the next event,
and each topic's last 1,000 events kept for a day (the hub's history.max_events and max_age).

Subscribers: GET /sub/<topic> with Accept: text/event-stream. Publishers: POST /pub/<topic>, the body
being the event's data (bench/loadgen.c, --proto nchan).
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

MODULE = Path("/usr/lib/nginx/modules/ngx_nchan_module.so")
HISTORY_EVENTS = 1000  # the hub's history.max_events
HISTORY_TIMEOUT = "1d"  # the hub's history.max_age

CONFIG = """\
load_module {module};
{user}worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{
    worker_connections {connections};
}}
http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    # nginx closes a keep-alive connection after 1,000 requests by default; the hub never does
    keepalive_requests 1000000000;
{upstream}    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location ~ ^/sub/(.+)$ {{
            nchan_subscriber eventsource;
            nchan_channel_id $1;
            nchan_subscriber_first_message newest;
{store}        }}
        location ~ ^/pub/(.+)$ {{
            nchan_publisher http;
            nchan_channel_id $1;
            nchan_message_buffer_length {history};
            nchan_message_timeout {timeout};
{store}        }}
    }}
}}
"""


def nginx_binary() -> str:
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.access(binary, os.X_OK) or not MODULE.exists():
        raise RuntimeError("Nchan needs nginx and its module: apt-get install nginx libnginx-mod-nchan")
    return binary


def config(port: int, workdir: Path, redis_url: str | None, connections: int) -> str:
    """nginx.conf for one Nchan on `port`, its files under `workdir`, storing in Redis if `redis_url`."""
    upstream = store = ""
    if redis_url is not None:
        parts = urlsplit(redis_url)
        if parts.scheme != "redis":
            raise ValueError(f"Nchan runs here on one Redis (redis://host:port), not {redis_url}")
        upstream = f"    upstream redis_store {{\n        nchan_redis_server {redis_url};\n    }}\n"
        store = "            nchan_redis_pass redis_store;\n"
    # nginx started as root hands its worker to `nobody`, who could not write to this directory
    user = f"user {getpass.getuser()};\n" if os.geteuid() == 0 else ""
    return CONFIG.format(
        module=MODULE,
        user=user,
        dir=workdir,
        connections=connections,
        upstream=upstream,
        port=port,
        store=store,
        history=HISTORY_EVENTS,
        timeout=HISTORY_TIMEOUT,
    )


@contextlib.contextmanager
def configured(port: int, redis_url: str | None, connections: int) -> Iterator[list[str]]:
    """The command that runs one Nchan on `port` in the foreground (master and one worker), with its
    config written to a temporary directory, removed afterwards. `connections`: the most it must hold
    open at once, subscribers, publishers and Redis together."""
    workdir = Path(tempfile.mkdtemp(prefix="bench-nchan-"))
    try:
        conf = workdir / "nginx.conf"
        conf.write_text(config(port, workdir, redis_url, connections))
        log = workdir / "error.log"
        yield [nginx_binary(), "-p", str(workdir), "-c", str(conf), "-e", str(log), "-g", "daemon off;"]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
