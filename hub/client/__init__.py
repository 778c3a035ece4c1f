"""The hub's Python client: `HubClient` from asyncio code, and the `hub publish`/`hub subscribe` commands.

Edges only: it talks to a hub over HTTP and imports nothing of the server's but the SSE reader.
"""

from hub.client.hub_client import (
    ClientError,
    Event,
    HubClient,
    HubRefused,
    HubUnreachable,
    Publication,
    Subscription,
)

__all__ = ["ClientError", "Event", "HubClient", "HubRefused", "HubUnreachable", "Publication", "Subscription"]
