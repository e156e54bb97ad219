"""The Python SDK: :class:`Client` talks to a master over HTTP; :mod:`.tracking` runs inside jobs.

``Client`` is imported lazily so that training code importing the in-job
helpers does not pay for httpx and pydantic.
"""

from typing import Any

__all__ = ["Client"]


def __getattr__(name: str) -> Any:
    if name == "Client":
        from kubetrain.sdk.client import Client

        return Client
    raise AttributeError(name)
