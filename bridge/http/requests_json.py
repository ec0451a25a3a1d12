"""Reading and validating JSON request bodies (415 / 400 / 422), and the ``/v1`` API key check."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from bridge.http import keys
from bridge.http.errors import REQUEST_TIMEOUT, UNSUPPORTED_MEDIA_TYPE, VALIDATION_ERROR, ApiError
from bridge.protocol import ErrorCode
from bridge.quoting import quote

SETTINGS_KEYS: dict[str, type] = {"temperature": float, "top_p": float, "max_tokens": int, "max_objects": int}


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


def invalid(field: str, expected: str, value: Any) -> ApiError:
    return ApiError(422, VALIDATION_ERROR, f"{field}: expected {expected}, got {quote(value)}")


def optional_str(body: dict[str, Any], field: str, max_chars: int) -> str | None:
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid(field, "a string", value)
    if len(value) > max_chars:
        raise ApiError(422, VALIDATION_ERROR, f"{field}: longer than {max_chars} characters")
    return value


def required_str(body: dict[str, Any], field: str, max_chars: int) -> str:
    value = optional_str(body, field, max_chars)
    if value is None or not value.strip():
        raise ApiError(422, VALIDATION_ERROR, f"{field}: required")
    return value


def optional_bool(body: dict[str, Any], field: str, default: bool = False) -> bool:
    value = body.get(field, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise invalid(field, "true or false", value)
    return value


def one_of(body: dict[str, Any], field: str, choices: Sequence[str], default: str) -> str:
    value = body.get(field, default)
    if value is None:
        return default
    if value not in choices:
        raise invalid(field, f"one of {list(choices)}", value)
    return str(value)


def settings_arg(body: dict[str, Any]) -> dict[str, float | int] | None:
    """``settings``: known keys type-checked here (ranges are the server's to check); others dropped."""
    value = body.get("settings")
    if value is None:
        return None
    if not isinstance(value, dict):
        raise invalid("settings", "an object", value)
    settings: dict[str, float | int] = {}
    for key, kind in SETTINGS_KEYS.items():
        v = value.get(key)
        if v is None:
            continue
        ok = isinstance(v, int) if kind is int else isinstance(v, (int, float))
        if isinstance(v, bool) or not ok:
            raise invalid(f"settings.{key}", "an integer" if kind is int else "a number", v)
        settings[key] = v
    return settings or None


def request_id(body: dict[str, Any], op: str) -> str:
    """The caller's ``request_id`` when given, else Moondream's style ``op_YYYY-mm-dd-HH:MM:SS-xxxxxx``."""
    given = body.get("request_id")
    if given is not None:
        if not isinstance(given, str) or not 0 < len(given) <= 200:
            raise invalid("request_id", "a string of 1..200 characters", given)
        return given
    return f"{op}_{time.strftime('%Y-%m-%d-%H:%M:%S', time.gmtime())}-{secrets.token_hex(3)}"
