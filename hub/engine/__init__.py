"""The engine: this process's subscriptions, fed by one broker reader, feeding per-connection outboxes.
It never awaits a subscriber and knows nothing of HTTP."""
