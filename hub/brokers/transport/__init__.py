"""The Redis transport under both brokers: raw RESP connections, opened from the configured URL.

- `endpoint`: where a Redis server is and how to log in to it, read from the URL by redis-py itself (TLS
  options, unix sockets, username and password, db), and a connection opened and set up (AUTH, SELECT,
  CLIENT SETNAME) from it.
- `reply_reader`: a connection's replies parsed (hiredis) in the loop's own callback.
- `commands`: commands pipelined over one connection (`CommandLink`), telling "never sent" from "sent,
  no answer".
- `supervisor`: one connection kept open: reconnected with capped, jittered backoff when it ends.
- `resp`: commands packed as RESP.

The brokers are the policies over it: what a connection subscribes to, what a lost one means. This package
must never know of topics, ids, partitions or events.
"""
