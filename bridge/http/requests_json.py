"""Reading request bodies: JSON (415 / 400 / 422), forms, in bounded time (408); request ids."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import urllib.parse
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from bridge.http import keys
from bridge.http.errors import REQUEST_TIMEOUT, UNSUPPORTED_MEDIA_TYPE, VALIDATION_ERROR, ApiError
from bridge.protocol import ErrorCode


async def read_json_object(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        message = f"expected Content-Type application/json, got {request.content_type!r}"
        raise ApiError(415, UNSUPPORTED_MEDIA_TYPE, message)
    raw = await read_body(request)  # bounded by the app's client_max_size (-> 413) and in time (-> 408)
    body = parse_json(raw, "request body")
    if not isinstance(body, dict):
        raise ApiError(422, VALIDATION_ERROR, "request body must be a JSON object")
    return body


def parse_json(raw: bytes | str, what: str) -> Any:
    """JSON -> value; 400 for anything Python's parser refuses, including nesting too deep for it
    (RecursionError) and integers longer than its 4300-digit limit (ValueError)."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ApiError(400, ErrorCode.BAD_REQUEST, f"{what} is not valid JSON (or too deep / too long a number)") \
            from None


async def read_body(request: web.Request) -> bytes:
    """The whole body, within ``body_read_timeout_s`` (a caller that announces a body and stalls
    is answered 408 and disconnected instead of holding a connection forever)."""
    timeout_s = request.app[keys.SETTINGS].body_read_timeout_s
    try:
        return await asyncio.wait_for(request.read(), timeout_s)
    except asyncio.TimeoutError:
        raise ApiError(408, REQUEST_TIMEOUT, f"request body not received within {timeout_s:g} s") from None


async def read_form(request: web.Request) -> Any:
    """A multipart/urlencoded form, within the body timeout; 400 for fields that are not UTF-8."""
    timeout_s = request.app[keys.SETTINGS].body_read_timeout_s
    try:
        return await asyncio.wait_for(request.post(), timeout_s)
    except asyncio.TimeoutError:
        raise ApiError(408, REQUEST_TIMEOUT, f"request body not received within {timeout_s:g} s") from None
    except (UnicodeDecodeError, LookupError):  # undecodable field, or an unknown charset
        raise ApiError(400, ErrorCode.BAD_REQUEST, "form field is not valid text in its charset") from None
    # found by schemathesis (both were 500s): a part's headers malformed, no boundary in Content-Type
    except HttpProcessingError:
        raise ApiError(400, ErrorCode.BAD_REQUEST, "malformed multipart body (a part's headers)") from None
    except ValueError as exc:
        raise ApiError(400, ErrorCode.BAD_REQUEST, f"malformed form: {str(exc)[:200]}") from None


def new_request_id(op: str) -> str:
    """Moondream's style of request id: ``op_YYYY-mm-dd-HH:MM:SS-xxxxxx``."""
    return f"{op}_{time.strftime('%Y-%m-%d-%H:%M:%S', time.gmtime())}-{secrets.token_hex(3)}"


def header_safe(text: str) -> str:
    """``text`` for an HTTP header value: printable ASCII as is, anything else percent-encoded
    (a request id may hold any character; a header may not hold newlines or non-ASCII)."""
    return urllib.parse.quote(text, safe="".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%"))
