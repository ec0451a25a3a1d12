"""HTTP errors: one exception type, JSON bodies, and the mapping from protocol error codes.

Every error a client sees is ``{"error": {"code", "message", "retryable"}, "detail": message}``
with a meaningful status; unexpected exceptions are logged here and reach the client only as
``500 internal`` (no stack traces on the wire).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web

from bridge.errors import BridgeError, BridgeTimeout
from bridge.protocol import ErrorCode

logger = logging.getLogger(__name__)

# HTTP-side codes, in addition to the protocol's
UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
VALIDATION_ERROR = "validation_error"
NOT_FOUND = "not_found"
METHOD_NOT_ALLOWED = "method_not_allowed"
SERVER_UNREACHABLE = "server_unreachable"
UPSTREAM_TIMEOUT = "timeout"
BAD_GATEWAY = "bad_gateway"
NOT_SERVED = "not_served"
REQUEST_TIMEOUT = "request_timeout"

# protocol code -> HTTP status, for error replies of the inference server
_STATUS_BY_CODE: Mapping[str, int] = {
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.OVERLOADED: 503,
    ErrorCode.DEADLINE_EXCEEDED: 504,
    ErrorCode.MODEL_UNAVAILABLE: 503,
    ErrorCode.INTERNAL: 500,
    # the companion's own requests were refused: a deployment problem, not the caller's
    ErrorCode.UNAUTHORIZED: 502,
    ErrorCode.UNSUPPORTED_VERSION: 502,
    ErrorCode.UNKNOWN_OP: 501,
}
_RETRY_AFTER_S = 1
ERROR_CODE_KEY = web.ResponseKey("vtla_error_code", str)


class ApiError(Exception):
    """Raised by handlers; the middleware turns it into a JSON error response."""

    def __init__(self, status: int, code: str, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retryable = retryable


def from_bridge_error(exc: BridgeError, server_up: bool) -> ApiError:
    if isinstance(exc, BridgeTimeout):
        if not server_up:
            return ApiError(503, SERVER_UNREACHABLE, "inference server is unreachable", retryable=True)
        return ApiError(504, UPSTREAM_TIMEOUT, "the inference server did not answer in time", retryable=True)
    status = _STATUS_BY_CODE.get(exc.code, 502)
    code = exc.code if exc.code != ErrorCode.UNKNOWN_OP else NOT_SERVED
    message = exc.message
    if exc.code == ErrorCode.INTERNAL:
        message = "internal error in the inference server"
    elif status == 502:
        logger.error("inference server refused the companion's request: %s", exc)
        message = "the inference server refused the HTTP companion (check its configuration)"
    return ApiError(status, code, message, retryable=exc.retryable)


def error_response(status: int, code: str, message: str, retryable: bool = False) -> web.Response:
    body = {"error": {"code": code, "message": message, "retryable": retryable}, "detail": message}
    headers = {"Retry-After": str(_RETRY_AFTER_S)} if status in (503, 429) else None
    response = web.json_response(body, status=status, headers=headers)
    response[ERROR_CODE_KEY] = code  # read by the metrics middleware
    if status == 408:
        response.force_close()  # the body never came: do not wait for it on this connection
    return response


_HTTP_CODES: Mapping[int, str] = {
    400: ErrorCode.BAD_REQUEST,
    401: ErrorCode.UNAUTHORIZED,
    404: NOT_FOUND,
    405: METHOD_NOT_ALLOWED,
    408: REQUEST_TIMEOUT,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
    415: UNSUPPORTED_MEDIA_TYPE,
    422: VALIDATION_ERROR,
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.retryable)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "http_error")
        message = exc.reason if exc.status != 413 else f"request body too large: {exc.text or exc.reason}"
        response = error_response(exc.status, code, message)
        if exc.status == 405 and "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except (ConnectionResetError, web.RequestPayloadError):
        raise
    except Exception:
        logger.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(500, ErrorCode.INTERNAL, "internal error", retryable=True)
