"""One log line per distinct error, at most once per interval, instead of a traceback per call.

A full disk fails every call that writes; logging each with its traceback
buried the log (thousands of tracebacks a minute). Here the first occurrence of
a message is logged at once, repeats within ``interval_s`` are counted, and the
next line after the interval says how many were left out.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

DEFAULT_INTERVAL_S = 60.0
_MAX_MESSAGES = 1000  # distinct messages remembered; the oldest are forgotten beyond it


class RateLimitedLog:
    def __init__(
        self,
        logger: logging.Logger,
        interval_s: float = DEFAULT_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger, self._interval, self._clock = logger, interval_s, clock
        self._lock = threading.Lock()
        self._seen: dict[str, list[float | int]] = {}  # message -> [last logged at, left out since]

    def warning(self, message: str) -> None:
        now = self._clock()
        with self._lock:
            entry = self._seen.get(message)
            if entry is not None and now - entry[0] < self._interval:
                entry[1] += 1
                return
            left_out = int(entry[1]) if entry is not None else 0
            self._seen[message] = [now, 0]
            if len(self._seen) > _MAX_MESSAGES:
                del self._seen[next(iter(self._seen))]
        if left_out:
            self._logger.warning("%s (and %d more times in the last %g s)", message, left_out, self._interval)
        else:
            self._logger.warning("%s", message)
