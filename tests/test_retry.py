"""The one outer retry helper: backoff until a deadline, any failure worth retrying, waits a stop cuts short."""

import math
import random
import threading
import time

import grpc
import pytest

from taylorglo_tf.retry import Backoff, Retryable, call_with_retries


class Failure(grpc.RpcError):
    def __init__(self, code):
        self._code = code

    def code(self):
        return self._code


def failing(times, error):
    """A call that raises ``error`` ``times`` times, then returns the number of calls."""
    calls = []

    def call(time_left_s):
        calls.append(time_left_s)
        if len(calls) <= times:
            raise error
        return len(calls)

    return call


def test_retryable_failures_are_retried_with_backoff_until_the_call_succeeds():
    waits = []
    result = call_with_retries(
        failing(3, Failure(grpc.StatusCode.UNAVAILABLE)),
        retryable={grpc.StatusCode.UNAVAILABLE},
        give_up_at=lambda: math.inf,
        backoff=Backoff(0.1, 0.4, rng=random.Random(1)),
        wait=waits.append,
    )
    assert result == 4
    assert len(waits) == 3 and 0.05 <= waits[0] <= 0.1 and 0.2 <= waits[2] <= 0.4  # doubling, with jitter


def test_a_failure_that_is_no_grpc_error_is_retried_when_it_says_so():
    assert (
        call_with_retries(
            failing(2, Retryable("stream ended early")),
            retryable=(),
            give_up_at=lambda: math.inf,
            backoff=Backoff(),
            wait=lambda s: None,
        )
        == 3
    )


def test_a_code_that_no_retry_fixes_is_raised_at_once():
    call = failing(1, Failure(grpc.StatusCode.PERMISSION_DENIED))
    with pytest.raises(Failure):
        call_with_retries(
            call,
            retryable={grpc.StatusCode.UNAVAILABLE},
            give_up_at=lambda: math.inf,
            backoff=Backoff(),
            wait=lambda s: pytest.fail("waited"),
        )


def test_no_wait_passes_the_deadline_and_the_last_error_is_raised_at_it():
    waits = []
    deadline = time.monotonic() + 0.3
    with pytest.raises(Retryable):
        call_with_retries(
            failing(10**6, Retryable("away")),
            retryable=(),
            give_up_at=lambda: deadline,
            backoff=Backoff(0.1, 0.1),
            wait=lambda s: (waits.append(s), time.sleep(s)),
        )
    assert time.monotonic() >= deadline and all(w <= 0.3 for w in waits)


def test_a_stop_request_cuts_a_long_backoff_short():
    stop = threading.Event()
    stop_deadline = [math.inf]

    def request_stop():
        stop_deadline[0] = time.monotonic()
        stop.set()

    threading.Timer(0.2, request_stop).start()
    started = time.monotonic()
    with pytest.raises(Failure):
        call_with_retries(
            failing(10**6, Failure(grpc.StatusCode.UNAVAILABLE)),
            retryable={grpc.StatusCode.UNAVAILABLE},
            give_up_at=lambda: stop_deadline[0],
            backoff=Backoff(60.0, 60.0),
            wait=stop.wait,
        )
    assert time.monotonic() - started < 5  # not the 30..60 s the backoff asked for
