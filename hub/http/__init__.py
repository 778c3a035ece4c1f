"""The HTTP edge: thin handlers that parse, call the engine, and render errors one way."""
