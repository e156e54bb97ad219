"""The one error tree of kubetrain.

Every error a user can cause or see is a :class:`KubetrainError` with a stable
``code``.  The code crosses the wire: the server maps it to an HTTP status and
the SDK rebuilds the same class from the JSON body, so CLI, SDK and API share
one vocabulary.  Messages say what was wrong *and* what to do next.
"""

from __future__ import annotations

from typing import Any, ClassVar


class KubetrainError(Exception):
    """Base class: a message for humans, a code for machines."""

    code: ClassVar[str] = "internal"
    http_status: ClassVar[int] = 500

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details}


class SpecError(KubetrainError):
    """A job spec (YAML, flags or JSON) is invalid; nothing was stored."""

    code = "invalid_spec"
    http_status = 422


class PayloadTooLargeError(KubetrainError):
    code = "payload_too_large"
    http_status = 413


class NotFoundError(KubetrainError):
    code = "not_found"
    http_status = 404


class ConflictError(KubetrainError):
    """The request clashes with what is stored (a name taken, a finished job cancelled...)."""

    code = "conflict"
    http_status = 409


class InvalidTransitionError(KubetrainError):
    """A state change that the state machine does not allow (a bug or a race, never silent)."""

    code = "invalid_transition"
    http_status = 409


class UnauthorizedError(KubetrainError):
    code = "unauthorized"
    http_status = 401


class ForbiddenError(KubetrainError):
    """The caller is known but may not do this (another user's job, an admin-only command)."""

    code = "forbidden"
    http_status = 403


class MasterUnavailableError(KubetrainError):
    """The CLI/SDK could not reach a master."""

    code = "master_unavailable"
    http_status = 503


class OverloadedError(KubetrainError):
    """The master refused the request unprocessed because too many of its kind were in progress.

    Nothing was done, so any request answered with it may be sent again; the
    answer's ``Retry-After`` says after how many seconds, and the SDK does so
    with jittered backoff before it raises this.
    """

    code = "overloaded"
    http_status = 503


class EngineError(KubetrainError):
    """An engine could not do what was asked (launch failed, node unusable)."""

    code = "engine_error"
    http_status = 500


class ConfigError(KubetrainError):
    """Settings or the home's config file are invalid."""

    code = "invalid_config"
    http_status = 500


_BY_CODE: dict[str, type[KubetrainError]] = {
    cls.code: cls
    for cls in (
        KubetrainError,
        SpecError,
        PayloadTooLargeError,
        NotFoundError,
        ConflictError,
        InvalidTransitionError,
        UnauthorizedError,
        ForbiddenError,
        MasterUnavailableError,
        OverloadedError,
        EngineError,
        ConfigError,
    )
}


def error_from_dict(data: dict[str, Any]) -> KubetrainError:
    """Rebuild the error class a server sent (unknown codes become the base class)."""
    cls = _BY_CODE.get(str(data.get("code")), KubetrainError)
    return cls(str(data.get("message", "unknown error")), details=data.get("details") or {})


def error_from_response(status: int, content: bytes) -> KubetrainError:
    """The error a master's answer carries (``{"code", "message", "details"}``), or an internal one naming the
    status when the body is not that (a proxy's page, a truncated answer)."""
    import json

    try:
        body = json.loads(content)
    except ValueError:
        body = {"code": "internal", "message": f"HTTP {status}: {content[:200].decode(errors='replace')}"}
    if not isinstance(body, dict) or "message" not in body:
        body = {"code": "internal", "message": f"HTTP {status}"}
    return error_from_dict(body)


class InsufficientStorageError(KubetrainError):
    """The master's disk (its home or its database) is full; the request was not done. Freeing space fixes it."""

    code = "insufficient_storage"
    http_status = 507


_BY_CODE[InsufficientStorageError.code] = InsufficientStorageError
