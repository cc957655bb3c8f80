"""Who answers SIGTERM: one handler at a time, installed from the main thread (where Python runs
signal handlers) and the previous one restored after. The runtime's stops a step; training's
(steps.train.signals) saves a resume point first."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

Handler = Callable[[int, FrameType | None], Any]


@contextlib.contextmanager
def sigterm_handler(handler: Handler) -> Iterator[None]:
    """`handler` answers SIGTERM inside the block; elsewhere than the main thread nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
