"""The coordinator's exceptions (no gRPC here): :mod:`taylorglo_tf.coordinator.grpc_util` maps each to a status code."""

from __future__ import annotations


class InvalidArgument(ValueError):
    """A request field is invalid; ``field`` is its path within the request."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


class NotFound(LookupError):
    pass


class FailedPrecondition(RuntimeError):
    pass


class Unavailable(RuntimeError):
    """Try again later: the coordinator is shutting down, or its database cannot be written just now."""


class StorageUnavailable(Unavailable):
    """The database refused a read or write (disk full, locked, I/O error); nothing was changed.

    Retryable: the same call succeeds once the condition clears, and the
    coordinator's memory is only ever changed after the database has the change.
    """
