"""One context-manager shape for every benchmark helper that is started and stopped."""

from __future__ import annotations

from types import TracebackType
from typing import Any, TypeVar

_T = TypeVar("_T", bound="StartStop")


class StartStop:
    """``with X(...) as x`` calls ``x.start()`` (which returns the started object) and ``x.stop()``."""

    def start(self: _T, *args: Any, **kwargs: Any) -> _T:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self: _T) -> _T:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
