"""HTTP plumbing shared by the endpoint modules: reading a body under a size cap, writing a JSON response.

:func:`read_body` refuses more than ``limit`` bytes with :class:`~gateway.errors.PayloadTooLarge` (413) whether or not
the client announced a length; :func:`json_response` renders with orjson. ``gateway.app`` and ``gateway.agents_api``
both use them, so neither imports the other for plumbing.

What it leaves out: parsing and validating the JSON (``gateway.schemas``), error rendering (``gateway.app``).
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response

from gateway.errors import InvalidRequest, PayloadTooLarge

JSON = "application/json"


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """``data`` as an orjson-encoded JSON response."""
    return Response(orjson.dumps(data), status_code=status, media_type=JSON, headers=headers)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing more than ``limit`` bytes (413) whether or not a length was announced."""
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise InvalidRequest("content-length header is not a number")
        if int(length) > limit:
            raise PayloadTooLarge(f"request body of {length} bytes is above the limit of {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body is above the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
