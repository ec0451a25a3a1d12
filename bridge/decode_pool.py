"""The image-decode worker pool, fair across clients.

JPEG/PNG decoding (and a generation request's crops) runs in a few threads before the inference
loop. A plain thread pool serves its queue in order, so one client that sends 60 costly images
occupies every worker and every other client's image waits behind all 60. Here each client has at
most ``per_client`` jobs running or queued in the pool; its further jobs wait in its own FIFO and
enter the pool one at a time as its earlier ones finish, so the pool's queue holds at most
``per_client`` jobs of any client and serves clients round-robin.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

logger = logging.getLogger(__name__)

Job = tuple[Callable[..., None], tuple[Any, ...]]


class FairDecodePool:
    def __init__(self, workers: int, per_client: int) -> None:
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="image-decode")
        self._per_client = max(1, per_client)
        self._lock = threading.Lock()
        self._active: dict[Hashable, int] = {}  # client -> jobs running or queued in the executor
        self._waiting: dict[Hashable, deque[Job]] = {}
        self._closed = False

    def submit(self, client: Hashable | None, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)`` in the pool; ``client=None``: work of bounded cost that needs no
        fairness (raw arrays: crops and resizes only), submitted at once."""
        if client is None:
            try:
                self._executor.submit(fn, *args)
            except RuntimeError:  # shut down: the server is stopping
                pass
            return
        with self._lock:
            if self._closed:
                return
            if self._active.get(client, 0) >= self._per_client:
                self._waiting.setdefault(client, deque()).append((fn, args))
                return
            self._active[client] = self._active.get(client, 0) + 1
        try:
            self._executor.submit(self._run, client, fn, args)
        except RuntimeError:  # shut down meanwhile: the server is stopping
            pass

    def _run(self, client: Hashable, fn: Callable[..., None], args: tuple[Any, ...]) -> None:
        try:
            fn(*args)
        except Exception:  # the jobs answer their own errors; this is a last resort
            logger.exception("decode job failed")
        finally:
            self._next(client)

    def _next(self, client: Hashable) -> None:
        with self._lock:
            queue = self._waiting.get(client)
            if queue and not self._closed:
                fn, args = queue.popleft()
                if not queue:
                    del self._waiting[client]
            else:
                self._active[client] -= 1
                if self._active[client] <= 0:
                    del self._active[client]
                return
        try:
            self._executor.submit(self._run, client, fn, args)
        except RuntimeError:
            pass

    def shutdown(self) -> None:
        with self._lock:
            self._closed = True
            self._waiting.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)
