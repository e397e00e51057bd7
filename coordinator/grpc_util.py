"""Exceptions of the coordinator and the one place that maps them to gRPC status codes.

:class:`DecodeGuardInterceptor` extends the same rule to request bytes that do
not parse: INVALID_ARGUMENT naming the message type, not grpc's INTERNAL.

Servicer methods raise these (or :class:`taylorglo_tf.spec.SpecError`); the
:func:`rpc` decorator turns them into the matching status with a message naming
the value. A database that cannot be written just now (disk full, locked) is
UNAVAILABLE, which clients retry, and is logged as one line per distinct error
at most once a minute. Anything else is a bug: logged with its traceback and
answered INTERNAL, never UNKNOWN.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any

import grpc

from taylorglo_tf.spec import SpecError

from .errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    StorageUnavailable,
    Unavailable,
)
from .ratelog import RateLimitedLog

log = logging.getLogger(__name__)
storage_log = RateLimitedLog(log)


_CODES: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
    (SpecError, grpc.StatusCode.INVALID_ARGUMENT),
    (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (Unavailable, grpc.StatusCode.UNAVAILABLE),
)


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The gRPC status code and details for an exception raised by a servicer."""
    for kind, code in _CODES:
        if isinstance(exc, kind):
            return code, str(exc)
    return grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}"


def _logged_status(exc: Exception, method: str) -> tuple[grpc.StatusCode, str]:
    code, details = status_for(exc)
    if code is grpc.StatusCode.INTERNAL:
        log.exception("%s failed", method)
    elif isinstance(exc, StorageUnavailable):
        storage_log.warning(f"answering UNAVAILABLE: {details}")
    return code, details


def _abort(context: grpc.ServicerContext, exc: Exception, method: str) -> None:
    context.abort(*_logged_status(exc, method))


def rpc(method: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a servicer method (unary or server-streaming; ``async def`` on the asyncio
    server's event loop, or plain, run in its thread pool) to map exceptions to status codes."""
    if inspect.isasyncgenfunction(method):

        @functools.wraps(method)
        async def async_stream(self, request, context):
            try:
                async for response in method(self, request, context):
                    yield response
            except Exception as exc:
                await context.abort(*_logged_status(exc, method.__qualname__))

        return async_stream

    if inspect.iscoroutinefunction(method):

        @functools.wraps(method)
        async def coroutine(self, request, context):
            try:
                return await method(self, request, context)
            except Exception as exc:
                await context.abort(*_logged_status(exc, method.__qualname__))

        return coroutine

    if inspect.isgeneratorfunction(method):

        @functools.wraps(method)
        def streaming(self, request, context):
            try:
                yield from method(self, request, context)
            except Exception as exc:
                _abort(context, exc, method.__qualname__)

        return streaming

    @functools.wraps(method)
    def unary(self, request, context):
        try:
            return method(self, request, context)
        except Exception as exc:
            _abort(context, exc, method.__qualname__)

    return unary


class _Undecodable:
    """Stands in for a request whose bytes did not parse (kept for the handler to refuse)."""

    def __init__(self, error: Exception):
        self.error = error


def _undecodable_details(method: str, request: _Undecodable) -> str:
    return f"request: the bytes sent to {method} are not a valid request message: {request.error}"


class DecodeGuardInterceptor(grpc.aio.ServerInterceptor):
    """Answers a unary request that does not parse with INVALID_ARGUMENT instead of INTERNAL.

    grpc-python aborts with INTERNAL ("Exception deserializing request!") when a
    request deserializer raises; here the deserializer never raises and the
    handler refuses the request, naming the method and the parse error. Handlers
    keep their kind: ``async`` ones stay on the event loop, plain ones in the
    server's thread pool.
    """

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None or handler.request_streaming:
            return handler
        parse, method = handler.request_deserializer, handler_call_details.method

        def tolerant(data: bytes) -> Any:
            try:
                return parse(data)
            except Exception as exc:
                return _Undecodable(exc)

        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(
                _guarded(handler.unary_stream, method),
                request_deserializer=tolerant,
                response_serializer=handler.response_serializer,
            )
        return grpc.unary_unary_rpc_method_handler(
            _guarded(handler.unary_unary, method),
            request_deserializer=tolerant,
            response_serializer=handler.response_serializer,
        )


def _guarded(behaviour: Callable[..., Any], method: str) -> Callable[..., Any]:
    """``behaviour`` refusing an undecodable request first, of the same kind (async generator,
    coroutine, generator or plain function) so the server runs it where it ran before."""
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    if inspect.isasyncgenfunction(behaviour):

        async def async_stream(request, context):
            if isinstance(request, _Undecodable):
                await context.abort(invalid, _undecodable_details(method, request))
            async for response in behaviour(request, context):
                yield response

        return async_stream
    if inspect.iscoroutinefunction(behaviour):

        async def coroutine(request, context):
            if isinstance(request, _Undecodable):
                await context.abort(invalid, _undecodable_details(method, request))
            return await behaviour(request, context)

        return coroutine
    if inspect.isgeneratorfunction(behaviour):

        def stream(request, context):
            if isinstance(request, _Undecodable):
                context.abort(invalid, _undecodable_details(method, request))
            yield from behaviour(request, context)

        return stream

    def plain(request, context):
        if isinstance(request, _Undecodable):
            context.abort(invalid, _undecodable_details(method, request))
        return behaviour(request, context)

    return plain
