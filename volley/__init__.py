"""Volley: latency of server networking stacks, measured with pinned ping-pong clients."""

__version__ = "0.1.0"
