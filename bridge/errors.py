"""Exceptions raised by the clients; each carries the protocol error code."""

from __future__ import annotations

from bridge.protocol import ErrorCode


class BridgeError(Exception):
    """The server answered with an error reply (or, for subclasses, the client gave up)."""

    def __init__(self, code: str, message: str, retryable: bool) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retryable = retryable


class BridgeTimeout(BridgeError):
    """No reply within the client's timeout; the socket was reset (Lazy Pirate)."""

    CODE = "timeout"

    def __init__(self, message: str) -> None:
        super().__init__(self.CODE, message, retryable=True)


class ProtocolViolation(BridgeError):
    """The server's reply did not follow the protocol (a bug on the server side)."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.INTERNAL, message, retryable=False)
