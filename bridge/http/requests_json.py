"""Reading and validating JSON request bodies (415 / 400 / 422), and the ``/v1`` API key check."""

from __future__ import annotations

import hmac
import json
import secrets
import time
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from bridge.http.errors import UNSUPPORTED_MEDIA_TYPE, VALIDATION_ERROR, ApiError
from bridge.protocol import ErrorCode

AUTH_HEADER = "X-Moondream-Auth"
SETTINGS_KEYS: dict[str, type] = {"temperature": float, "top_p": float, "max_tokens": int, "max_objects": int}


async def read_json_object(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        message = f"expected Content-Type application/json, got {request.content_type!r}"
        raise ApiError(415, UNSUPPORTED_MEDIA_TYPE, message)
    raw = await request.read()  # bounded by the app's client_max_size (-> 413)
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, ErrorCode.BAD_REQUEST, "request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(422, VALIDATION_ERROR, "request body must be a JSON object")
    return body


def invalid(field: str, expected: str, value: Any) -> ApiError:
    return ApiError(422, VALIDATION_ERROR, f"{field}: expected {expected}, got {json.dumps(value)[:60]}")


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


def check_api_key(request: web.Request, keys: Sequence[str]) -> None:
    """401 unless a configured key is given (``X-Moondream-Auth`` or ``Authorization: Bearer``)."""
    if not keys:
        return
    given = request.headers.get(AUTH_HEADER)
    if given is None:
        auth = request.headers.get("Authorization", "")
        given = auth[len("Bearer ") :] if auth.startswith("Bearer ") else ""
    given_bytes = given.encode()
    matched = False
    for key in keys:  # every key compared, in constant time each
        matched |= hmac.compare_digest(given_bytes, key.encode())
    if not matched:
        raise ApiError(401, ErrorCode.UNAUTHORIZED, f"missing or invalid {AUTH_HEADER} header")
