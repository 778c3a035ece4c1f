"""broadcast-hub: a real-time Server-Sent Events broadcast hub with Redis fan-out."""

__version__ = "0.1.0"
