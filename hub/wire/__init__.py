"""The wire: pure functions and values, no I/O. Event and id formats, topics and selectors, the stream
formats, and the parsing of every request body and query. Bytes in, values or bytes out; nothing here
awaits, reads a clock or touches a socket."""
