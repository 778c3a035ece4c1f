"""The `hub` command."""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import signal
import sys
from collections.abc import Sequence

from hub.client.hub_client import DEFAULT_URL, PUBLISH_DEADLINE
from hub.config import Config, load
from hub.errors import ConfigError, HttpError, ListenError
from hub.http.auth import Authorizer, mint


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hub", description="broadcast-hub: an SSE broadcast hub")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the hub")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8080)")
    serve.add_argument("--redis", metavar="URL", help="Redis URL; unset: in-process memory broker")
    serve.add_argument("--config", metavar="FILE", help="TOML config file (or HUB_CONFIG)")
    serve.add_argument("--workers", type=int, help="processes sharing the port (needs Redis)")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    token = commands.add_parser("token", help="mint a JWT for development, printed on stdout")
    token.add_argument("--publish", action="append", default=[], metavar="SEL", help="may publish to SEL")
    token.add_argument("--subscribe", action="append", default=[], metavar="SEL", help="may read SEL")
    token.add_argument("--ttl", type=float, default=3600.0, help="seconds until it expires; 0: never")
    token.add_argument("--subject", help="the sub claim")
    token.add_argument("--admin", action="store_true", help="may read /stats, /stats/stream and /metrics")
    token.add_argument(
        "--control", action="store_true", help="may list every subscription and disconnect streams"
    )
    token.add_argument("--secret", help="HS256 secret (default: auth.jwt_secret from config/environment)")
    token.add_argument("--private-key", metavar="FILE", help="PEM private key for RS256/ES256")
    token.add_argument("--algorithm", help="default: HS256, or by the private key's type")
    token.add_argument("--config", metavar="FILE", help="TOML config file (or HUB_CONFIG)")
    publish = commands.add_parser("publish", help="publish one event; prints its id")
    publish.add_argument("topic", metavar="TOPIC")
    publish.add_argument("data", metavar="DATA", help="the data as text; -: read it from stdin")
    publish.add_argument("--event", help="the event type (default: message)")
    publish.add_argument("--retain", action="store_true", help="keep it as the topic's current state")
    publish.add_argument("--json", action="store_true", help="DATA is JSON: publish the value it holds")
    publish.add_argument(
        "--binary",
        action="store_true",
        help="publish DATA's bytes as a binary event (with -: stdin's bytes, as they are)",
    )
    publish.add_argument(
        "--idempotency-key", metavar="KEY", help="the publish's key (default: a new one): reuse it to retry"
    )
    publish.add_argument(
        "--retry-for", type=float, default=PUBLISH_DEADLINE, metavar="SECONDS",
        help=f"retry a 503, 504 or connection failure for up to this long (default: {PUBLISH_DEADLINE:g})",
    )  # fmt: skip
    _client_options(publish)
    subscribe = commands.add_parser("subscribe", help="print events live, one line each, until stopped")
    subscribe.add_argument("selectors", nargs="+", metavar="SELECTOR", help="a topic or pattern")
    subscribe.add_argument("--since", metavar="ID", help="resume after this event id, or 'earliest'")
    subscribe.add_argument("--json", action="store_true", help="one JSON object per event")
    _client_options(subscribe)
    commands.add_parser(
        "bench", help="the load benchmark (from a checkout): same as python -m bench load", add_help=False
    )
    args, rest = parser.parse_known_args(argv)
    if args.command == "bench":
        return _bench(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")

    if args.command == "token":
        return _token(args)
    if args.command in ("publish", "subscribe"):
        from hub.client import commands as client_commands

        return client_commands.run(args)

    try:
        config = load(
            args.config,
            os.environ,
            {
                "server.host": args.host,
                "server.port": args.port,
                "redis.url": args.redis,
                "server.workers": args.workers,
            },
        )
        Authorizer(config.auth)  # reads and checks the public key now, not on the first request
    except ConfigError as exc:
        print(f"hub: configuration error: {exc}", file=sys.stderr)
        return 2
    _setup_logging(args.log_level, config.server.log_format)
    if config.server.workers > 1:
        return _run_workers(config, args.log_level)
    return _run(config, reuse_port=False)


def _client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url", default=os.environ.get("HUB_URL") or DEFAULT_URL, help=f"the hub (HUB_URL; {DEFAULT_URL})"
    )
    parser.add_argument("--token", default=os.environ.get("HUB_TOKEN"), help="a JWT (HUB_TOKEN)")


def _token(args: argparse.Namespace) -> int:
    try:
        secret = args.secret
        if secret is None and not args.private_key:
            secret = load(args.config, os.environ).auth.jwt_secret
        token = mint(
            publish=args.publish,
            subscribe=args.subscribe,
            ttl=args.ttl or None,
            secret=secret or "",
            private_key=args.private_key or "",
            algorithm=args.algorithm or "",
            subject=args.subject,
            admin=args.admin,
            control=args.control,
        )
    except (ConfigError, HttpError) as exc:
        message = exc.message if isinstance(exc, HttpError) else str(exc)
        print(f"hub token: {message}", file=sys.stderr)
        return 2
    print(token)
    return 0


def _bench(args: list[str]) -> int:
    import subprocess
    from pathlib import Path

    if not (Path.cwd() / "bench" / "__main__.py").exists():
        print(
            "hub bench runs from the root of a checkout of the repository (it needs bench/)", file=sys.stderr
        )
        return 2
    return subprocess.call([sys.executable, "-m", "bench", "load", *args])


def _run(config: Config, *, reuse_port: bool) -> int:
    from hub.http.server import serve

    try:
        try:
            import uvloop
        except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
            asyncio.run(serve(config, reuse_port=reuse_port))
        else:
            uvloop.run(serve(config, reuse_port=reuse_port))
    except ListenError as exc:
        print(f"hub: {exc}", file=sys.stderr)
        return 2
    return 0


def _worker(config: Config, log_level: str) -> None:
    _setup_logging(log_level, config.server.log_format)
    sys.exit(_run(config, reuse_port=True))


def _run_workers(config: Config, log_level: str) -> int:
    ctx = multiprocessing.get_context("spawn")
    workers = [
        ctx.Process(target=_worker, args=(config, log_level), name=f"hub-worker-{i}")
        for i in range(config.server.workers)
    ]
    for worker in workers:
        worker.start()

    def forward(signum: int, _frame: object) -> None:
        for worker in workers:
            if worker.pid is not None and worker.is_alive():
                os.kill(worker.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for worker in workers:
        worker.join()
    return max((w.exitcode or 0) for w in workers)


def _setup_logging(level: str, fmt: str) -> None:
    from hub import logs

    logs.setup(level, fmt)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
