"""The one retry helper: exponential backoff with jitter, and a call retried until a deadline.

Trainers (lease, report, return), and ``taylorglo watch`` reconnecting to a
restarted coordinator, all wait and retry through these, so the delays and the
rules for giving up are the same everywhere. This is the outer layer, for
outages longer than the channel's own retries of idempotent calls ride out
(:data:`taylorglo_tf.connection.SERVICE_CONFIG`, about a second and a half).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Collection
from typing import TypeVar

import grpc

T = TypeVar("T")


class Retryable(Exception):
    """A failure worth another try that is no gRPC error, e.g. a stream that ended before its end.

    :func:`call_with_retries` retries it like a retryable status code.
    """


class Backoff:
    """Exponential backoff with jitter: the n-th delay is uniform in [d/2, d],
    d = min(maximum_s, initial_s * multiplier**n) seconds."""

    def __init__(
        self,
        initial_s: float = 0.1,
        maximum_s: float = 5.0,
        multiplier: float = 2.0,
        rng: random.Random | None = None,
    ) -> None:
        if not (initial_s > 0 and maximum_s >= initial_s and multiplier >= 1):
            raise ValueError(
                f"Backoff needs 0 < initial_s <= maximum_s and multiplier >= 1, got "
                f"initial_s={initial_s}, maximum_s={maximum_s}, multiplier={multiplier}"
            )
        self.initial_s, self.maximum_s, self.multiplier = initial_s, maximum_s, multiplier
        self._rng = rng or random.Random()
        self._failures = 0

    def next_delay(self) -> float:
        ceiling = min(self.maximum_s, self.initial_s * self.multiplier ** min(self._failures, 60))
        self._failures += 1
        return self._rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self._failures = 0

    def fresh(self) -> Backoff:
        """A new schedule with the same settings (one per retried operation)."""
        return Backoff(self.initial_s, self.maximum_s, self.multiplier, self._rng)


def call_with_retries(
    call: Callable[[float], T],
    *,
    retryable: Collection[grpc.StatusCode],
    give_up_at: Callable[[], float],
    backoff: Backoff,
    wait: Callable[[float], object] = time.sleep,
    on_retry: Callable[[Exception, float], None] | None = None,
) -> T:
    """``call(time_left_s)`` until it returns; retryable errors wait the next backoff delay and try again.

    Retryable: a :class:`grpc.RpcError` whose code is in ``retryable``, and any
    :class:`Retryable`. ``give_up_at()`` is a ``time.monotonic()`` deadline, read
    again after every failure and wait (a stop request may bring it forward, a
    caller may start it at the first failure); no wait passes it. ``wait(s)``
    sleeps and may return early (an interruptible wait: pass a stop event's
    ``wait``); the call is then tried again at once if time is left. Raises the
    last error when it is not retryable or the deadline has passed.
    """
    while True:
        try:
            return call(max(0.0, give_up_at() - time.monotonic()))
        except (grpc.RpcError, Retryable) as error:
            remaining = give_up_at() - time.monotonic()
            worth_retrying = isinstance(error, Retryable) or error.code() in retryable
            if not worth_retrying or remaining <= 0:
                raise
            delay = min(backoff.next_delay(), remaining)
            if on_retry is not None:
                on_retry(error, delay)
            wait(delay)
