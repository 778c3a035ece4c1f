# Stand-in for python:3.11-slim, from Debian bookworm's own Python 3.11 (deploy/check.py): pip and
# `python` on the PATH as the official image has them, and no build tools (no recommends).
FROM broadcast-hub-check/debian:bookworm
# The machine's own certificate authorities too: builds reach PyPI through whatever the machine does.
COPY ca/ /usr/local/share/ca-certificates/
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-pip python-is-python3 ca-certificates \
    && update-ca-certificates \
    && rm -rf /var/lib/apt/lists/* /usr/lib/python3.11/EXTERNALLY-MANAGED
CMD ["python3"]
