"""Who is calling, may they, and how much may they hold: API keys and per-caller limits.

Every route that runs a model (``/v1/*`` and ``/predict``) requires one of the configured API keys
when keys are set (``X-Moondream-Auth`` or ``Authorization: Bearer``); ``[http] open_predict``
opens ``/predict`` for the predecessor's key-less scripts. The companion is one client of the
inference server for all its callers, so it limits each caller itself: by API key when one is
given, else by remote address, at most ``max_inflight_per_caller`` requests in flight (429 beyond).
"""

from __future__ import annotations

import hmac
from collections import Counter
from collections.abc import Sequence

from aiohttp import web

from bridge.http import keys
from bridge.http.errors import ApiError, Handler
from bridge.protocol import ErrorCode

AUTH_HEADER = "X-Moondream-Auth"
MODEL_ROUTES = frozenset(("caption", "query", "detect", "point", "act", "predict"))
TOO_MANY_REQUESTS = "too_many_requests"
_CALLERS = web.AppKey("callers_in_flight", Counter)


def given_key(request: web.Request) -> str:
    given = request.headers.get(AUTH_HEADER)
    if given is None:
        auth = request.headers.get("Authorization", "")
        given = auth[len("Bearer ") :] if auth.startswith("Bearer ") else ""
    return given


def check_api_key(request: web.Request, api_keys: Sequence[str]) -> None:
    """401 unless a configured key is given. Header bytes that are not UTF-8 are simply wrong."""
    if not api_keys:
        return
    given_bytes = given_key(request).encode("utf-8", "surrogateescape")
    matched = False
    for key in api_keys:  # every key compared, in constant time each
        matched |= hmac.compare_digest(given_bytes, key.encode())
    if not matched:
        raise ApiError(401, ErrorCode.UNAUTHORIZED, f"missing or invalid {AUTH_HEADER} header")


def caller_of(request: web.Request, api_keys: Sequence[str]) -> str:
    """The identity per-caller limits count against: the (valid) key, else the remote address."""
    if api_keys:
        return "key:" + given_key(request)
    return "addr:" + (request.remote or "unknown")


@web.middleware
async def caller_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    route = request.match_info.route.name
    if route not in MODEL_ROUTES:
        return await handler(request)
    settings = request.app[keys.SETTINGS]
    if not (route == "predict" and settings.open_predict):
        check_api_key(request, settings.api_keys)
    caller = caller_of(request, settings.api_keys)
    in_flight = request.app[_CALLERS]
    if in_flight[caller] >= settings.max_inflight_per_caller:
        raise ApiError(
            429, TOO_MANY_REQUESTS,
            f"this caller has {in_flight[caller]} requests in flight, limit {settings.max_inflight_per_caller}",
            retryable=True,
        )
    in_flight[caller] += 1
    try:
        return await handler(request)
    finally:
        in_flight[caller] -= 1
        if in_flight[caller] <= 0:
            del in_flight[caller]


def setup(app: web.Application) -> None:
    app[_CALLERS] = Counter()
