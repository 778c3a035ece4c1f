"""What the hub relies on inside aiohttp, beyond its public API, and a fingerprint of each.

`python -m tests.support.aiohttp_internals` prints the installed aiohttp's fingerprints: read the changed
code against the hub module named beside it, then add them to `KNOWN` and widen the pin in pyproject.toml.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect

from hub.http import connections

# (module, qualified name) -> the hub module that depends on how it behaves, and how
RELIED_ON: dict[tuple[str, str], str] = {
    ("aiohttp.web_protocol", "RequestHandler.data_received"): (
        "hub.http.connections, hub.http.drain: drops every byte once closing (why the drain replaces "
        "pre_shutdown), and feeds `_messages`/`_waiter` as the header deadline reads them; the publish "
        "fast path (`_feed_fast`) holds `_waiter` back while it runs, so it must wake the task only "
        "through `_waiter`"
    ),
    ("aiohttp.web_protocol", "RequestHandler._handle_request"): (
        "hub.http.connections.GuardedRequestHandler._handle_request extends it: (request, start_time, "
        "request_handler) -> (response, reset)"
    ),
    ("aiohttp.web_protocol", "RequestHandler.start"): (
        "hub.http.connections: reads `_waiter`, `_messages`, `_request_in_progress` as this loop sets them; "
        "the fast path's `_answered` sets the keep-alive timer as this loop does after a response"
    ),
    ("aiohttp.web_protocol", "RequestHandler._process_keepalive"): (
        "hub.http.connections: the fast path moves `_next_keepalive_close_time` on and schedules this"
    ),
    ("aiohttp.http_parser", "HttpParser.message_consumed"): (
        "hub.http.connections: the fast path frees the parser's slot for a request it takes, as start() does"
    ),
    ("aiohttp.web_protocol", "RequestHandler.connection_lost"): (
        "hub.http.detach: called once a detached stream's task is done, to forget the connection"
    ),
    ("aiohttp.web_protocol", "RequestHandler.connection_made"): (
        "hub.http.connections: the admission check runs after it"
    ),
    ("aiohttp.web_protocol", "RequestHandler.shutdown"): (
        "hub.http.drain: aiohttp's own end for what a drain leaves past its deadline"
    ),
    ("aiohttp.web_protocol", "RequestHandler.handle_error"): (
        "hub.http.connections: wraps its answer to a request aiohttp could not parse"
    ),
    ("aiohttp.web_server", "Server.__call__"): (
        "hub.http.connections.GuardedServer.__call__ replaces it, with the same arguments"
    ),
    ("aiohttp.web_server", "Server.__init__"): (
        "hub.http.connections: GuardedServer reads `_loop` and `_kwargs` that it sets"
    ),
    ("aiohttp.web_server", "Server.pre_shutdown"): "hub.http.connections.GuardedServer overrides it",
    ("aiohttp.web_server", "Server.shutdown"): "hub.http.connections.GuardedServer extends it",
    ("aiohttp.web_runner", "AppRunner._make_server"): (
        "hub.http.connections.HubRunner._make_server swaps the class of the Server it returns"
    ),
    ("aiohttp.web_runner", "BaseRunner.cleanup"): "hub.http.connections.HubRunner.cleanup drains first",
    ("aiohttp.web_runner", "TCPSite.start"): "hub.http.connections reads the site's `_server` sockets",
    ("aiohttp.web_runner", "BaseSite.stop"): "hub.http.connections: the listening server it closes",
    ("aiohttp.web_response", "StreamResponse.write_eof"): (
        "hub.http.detach.DetachableResponse skips it for a detached stream"
    ),
    ("aiohttp.web_response", "StreamResponse._start"): (
        "hub.engine: frames written straight to the transport follow the headers aiohttp wrote here "
        "(chunked when HTTP/1.1)"
    ),
}

# The slots of RequestHandler the hub reads: hub.http.connections names them, and checks them on import.
SLOTS = connections.RELIED_ON

# aiohttp version -> {"module:qualname": sha256 of the source, first 16 hex}. 3.14.4 and 3.14.5 share
# every one; 3.14.0-3.14.2 differ in RequestHandler.data_received, start and connection_made.
_3_14_4 = {
    "aiohttp.web_protocol:RequestHandler.data_received": "1ee57ebe052e6c80",
    "aiohttp.web_protocol:RequestHandler._handle_request": "a88a34ee65a2714c",
    "aiohttp.web_protocol:RequestHandler.start": "2e565fd40c8e04fb",
    "aiohttp.web_protocol:RequestHandler.connection_lost": "df2fe6e95fd04c7c",
    "aiohttp.web_protocol:RequestHandler.connection_made": "44d50b5763b2c7e4",
    "aiohttp.web_protocol:RequestHandler.shutdown": "5eb4bd473db61e84",
    "aiohttp.web_protocol:RequestHandler.handle_error": "94962ffef500c172",
    "aiohttp.web_protocol:RequestHandler._process_keepalive": "b472e0fb8445ce42",
    "aiohttp.http_parser:HttpParser.message_consumed": "c86a2f61373da10f",
    "aiohttp.web_server:Server.__call__": "c5700549e688b164",
    "aiohttp.web_server:Server.__init__": "ceb06418afb91a22",
    "aiohttp.web_server:Server.pre_shutdown": "e01318ac421ba9fe",
    "aiohttp.web_server:Server.shutdown": "fc8f137a6c82728c",
    "aiohttp.web_runner:AppRunner._make_server": "2d5358865abd00e3",
    "aiohttp.web_runner:BaseRunner.cleanup": "a53a459c698cb522",
    "aiohttp.web_runner:TCPSite.start": "0baaeca3d4f956ad",
    "aiohttp.web_runner:BaseSite.stop": "c92f18307773ff03",
    "aiohttp.web_response:StreamResponse.write_eof": "12b174e4cfe3bb7e",
    "aiohttp.web_response:StreamResponse._start": "7e03ebd82e7f9f98",
}
KNOWN: dict[str, dict[str, str]] = {"3.14.4": _3_14_4, "3.14.5": _3_14_4}


def fingerprints() -> dict[str, str]:
    out = {}
    for (module_name, qualname), _why in RELIED_ON.items():
        obj: object = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
        source = inspect.getsource(obj)  # type: ignore[arg-type]
        out[f"{module_name}:{qualname}"] = hashlib.sha256(source.encode()).hexdigest()[:16]
    return out


if __name__ == "__main__":
    import aiohttp

    print(f"    {aiohttp.__version__!r}: {{")
    for name, digest in fingerprints().items():
        print(f"        {name!r}: {digest!r},")
    print("    },")
