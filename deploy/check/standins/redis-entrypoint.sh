#!/bin/sh
# What the official Redis image's entrypoint does to its arguments: options alone run redis-server, and
# without a config file protected mode is off, so that other containers may connect.
set -e
case "$1" in
    -*) set -- redis-server "$@" ;;
esac
if [ "$1" = redis-server ]; then
    case "$2" in
        *.conf) ;;
        *) set -- "$@" --protected-mode no ;;
    esac
fi
exec "$@"
