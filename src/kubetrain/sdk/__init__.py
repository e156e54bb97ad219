"""The Python SDK: :class:`Client` talks to a master over HTTP."""

from kubetrain.sdk.client import Client

__all__ = ["Client"]
