"""The gateway's error tree, and how each error becomes OpenAI-style error JSON.

Every error a client can see derives from :class:`TandemError`. Each subclass fixes the HTTP status, the OpenAI
``type`` and a default ``code``; :meth:`TandemError.to_body` renders ``{"error": {...}}`` exactly as the OpenAI API
does. The tree::

    TandemError                      500 server_error (never raised for a client's mistake)
    ├── InvalidRequest               400 invalid_request_error   (malformed body, a field a route cannot serve)
    │   └── PromptTooLarge           400 context_length_exceeded
    ├── PayloadTooLarge              413 invalid_request_error
    ├── AuthenticationError          401 invalid_api_key
    ├── PermissionDenied             403 permission_denied       (admin endpoints without the admin key)
    ├── NotFound                     404 not_found_error
    │   └── ModelNotFound            404 model_not_found         (lists the routes)
    ├── RateLimited                  429 rate_limit_exceeded     (carries retry_after seconds)
    │   └── BudgetExceeded           429 insufficient_quota
    ├── BackendError                 502 upstream_error          (a backend answered badly / died)
    │   └── BackendUnavailable       503 service_unavailable     (no backend could be reached)
    │       ├── BackendTimeout       504 timeout
    │       └── LimitStoreUnavailable 503 limit_store_unavailable (Redis down: limits fail closed)
    └── ConfigError                  (start-up only; names the offending field)

``retryable`` says whether trying the same backend again may work: ``gateway.dispatch`` retries a backend (and
counts the failure towards its cooldown) only when it is True; any backend failure still moves on to the route's
fallbacks. It is a class attribute: False for the whole tree (a client's mistake is never retried) except the
:class:`BackendError` branch, where it is True (connection refused, timeouts, 5xx, a broken stream). A failure of
that branch that another try would not fix (an upstream 401/403/404: our config is wrong) is raised with
``retryable=False``, which that instance keeps.

What it leaves out: HTTP wiring (see ``gateway.app``), which maps these to responses and SSE error events.
"""

from __future__ import annotations

from typing import Any


class TandemError(Exception):
    """Base of every error tandem reports to a client."""

    status: int = 500
    type: str = "server_error"
    code: str | None = "internal_error"
    retryable: bool = False
    """Whether trying the same backend again may succeed (``gateway.dispatch`` retries only these)."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None, **extra: Any):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.extra = extra

    def to_body(self) -> dict[str, Any]:
        """The OpenAI error JSON: ``{"error": {"message", "type", "param", "code"}}`` plus any extra fields."""
        err: dict[str, Any] = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        err.update(self.extra)
        return {"error": err}

    def headers(self) -> dict[str, str]:
        """Extra response headers (``retry-after`` for 429s)."""
        return {}


class InvalidRequest(TandemError):
    status, type, code = 400, "invalid_request_error", "invalid_request"


class PromptTooLarge(InvalidRequest):
    code = "context_length_exceeded"


class PayloadTooLarge(TandemError):
    status, type, code = 413, "invalid_request_error", "payload_too_large"


class AuthenticationError(TandemError):
    status, type, code = 401, "invalid_request_error", "invalid_api_key"


class PermissionDenied(TandemError):
    status, type, code = 403, "invalid_request_error", "permission_denied"


class NotFound(TandemError):
    status, type, code = 404, "invalid_request_error", "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"

    def __init__(self, model: str, routes: list[str]):
        super().__init__(
            f"The model '{model}' does not exist. Routes served here: {', '.join(sorted(routes))}",
            param="model",
            routes=sorted(routes),
        )


class RateLimited(TandemError):
    status, type, code = 429, "requests", "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: float, **kw: Any):
        super().__init__(message, **kw)
        self.retry_after = max(1, int(retry_after + 0.999))

    def headers(self) -> dict[str, str]:
        return {"retry-after": str(self.retry_after)}


class BudgetExceeded(RateLimited):
    type, code = "insufficient_quota", "insufficient_quota"


class BackendError(TandemError):
    """A backend failed. Retryable (a connection refused, a timeout, a 5xx or a broken stream may pass on another
    try) unless raised with ``retryable=False`` (the call itself is wrong, e.g. the upstream refused our
    credentials)."""

    status, type, code = 502, "api_error", "upstream_error"
    retryable = True

    def __init__(self, message: str, *, retryable: bool | None = None, **kw: Any):
        super().__init__(message, **kw)
        if retryable is not None:
            self.retryable = retryable


class BackendUnavailable(BackendError):
    status, code = 503, "service_unavailable"


class BackendTimeout(BackendUnavailable):
    status, code = 504, "timeout"


class LimitStoreUnavailable(BackendUnavailable):
    """The shared limit store (Redis) cannot be reached: 503, limits fail closed."""

    code = "limit_store_unavailable"


class ConfigError(TandemError):
    """A configuration that cannot be used; raised at start-up or on reload, never per request."""

    code = "config_error"
