"""Multipart messages on a plain (not asyncio) pyzmq socket, without pyzmq's per-frame Python layer.

``Socket.send_multipart``, ``recv_multipart`` and ``poll`` are Python wrappers around pyzmq's
Cython socket: per message they run a few Python frames, do the flags' ``enum.IntFlag``
arithmetic (``SNDMORE | flags`` is three Python calls) and, for ``poll``, build a ``Poller``.
A lone client's request comes after an idle, when every Python call on its path runs on cold
caches at ~10x its hot cost (docs/benchmarks.md §1), so the server and the sync client call the
Cython methods directly with int flags. Behaviour is pyzmq's own: the socket's
``copy_threshold`` still applies to ``copy=False`` sends, errors are the same ``ZMQError``s.
Not for ``zmq.asyncio`` sockets, whose send/recv return futures.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import zmq
import zmq.backend

from bridge.codec import Buffer

_CythonSocket: Any = zmq.backend.Socket  # what zmq.Socket's Python layer subclasses
_send = _CythonSocket.send
_recv = _CythonSocket.recv
_poll = zmq.backend.zmq_poll  # (get/set of an option build a SocketOption enum in Python: not used here)

NOBLOCK = int(zmq.NOBLOCK)
_SNDMORE = int(zmq.SNDMORE)
_POLLIN = int(zmq.POLLIN)


def send_frames(sock: zmq.Socket[Any], frames: Sequence[Buffer | zmq.Frame], flags: int = 0) -> None:
    """``sock.send_multipart(frames, flags, copy=False)``: frames under the socket's
    ``copy_threshold`` are copied into the message, larger ones sent zero-copy. Every frame must
    be bytes, a memoryview or a Frame (unlike send_multipart, they are not checked up front)."""
    more = flags | _SNDMORE
    last = len(frames) - 1
    for i in range(last):
        _send(sock, frames[i], more, False)
    _send(sock, frames[last], flags, False)


def recv_frames(sock: zmq.Socket[Any], flags: int = 0) -> list[zmq.Frame]:
    """``sock.recv_multipart(flags, copy=False)``: the parts of one message as Frames
    (a message's parts arrive together: only the first receive can block or raise ``zmq.Again``)."""
    frame = _recv(sock, flags, False)
    frames = [frame]
    while frame.more:
        frame = _recv(sock, 0, False)
        frames.append(frame)
    return frames


def wait_readable(sock: zmq.Socket[Any], timeout_ms: int) -> bool:
    """Whether a message can be read, waiting at most ``timeout_ms`` (0: now; the GIL is released)."""
    return bool(_poll([(sock, _POLLIN)], timeout_ms))


def input_pending(sock: zmq.Socket[Any]) -> bool:
    """Whether a message can be read now."""
    return bool(_poll([(sock, _POLLIN)], 0))
