"""Bearer-token authentication with two roles, as a gRPC server interceptor.

- the trainer token may call ``taylorglo.v1.WorkerService`` only;
- the client token may call ``taylorglo.v1.ExperimentService`` only;
- health checking and server reflection are open (probes and tooling).

A call without a token, with a token that matches neither, or with more than
one ``authorization`` header (which one would count is ambiguous) is
UNAUTHENTICATED; a valid token of the wrong role is PERMISSION_DENIED. Tokens
are compared with :func:`hmac.compare_digest` (constant time). The same secret
may be configured for both roles.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

import grpc

from taylorglo_tf.connection import AUTH_METADATA_KEY

TRAINER = "trainer"
CLIENT = "client"
# method prefix -> role allowed to call it (None = open to everyone)
METHOD_ROLES: dict[str, str | None] = {
    "/taylorglo.v1.WorkerService/": TRAINER,
    "/taylorglo.v1.ExperimentService/": CLIENT,
    "/grpc.health.v1.Health/": None,
    "/grpc.reflection.v1alpha.ServerReflection/": None,
    "/grpc.reflection.v1.ServerReflection/": None,
}
MIN_TOKEN_CHARS = 16


def check_token(token: str, role: str) -> str:
    """Validate a configured token: at least MIN_TOKEN_CHARS printable characters, no whitespace."""
    if len(token) < MIN_TOKEN_CHARS or not token.isprintable() or any(ch.isspace() for ch in token):
        raise ValueError(f"the {role} token must be at least {MIN_TOKEN_CHARS} printable characters without spaces")
    return token


def _role_of(method: str) -> tuple[bool, str | None]:
    for prefix, role in METHOD_ROLES.items():
        if method.startswith(prefix):
            return True, role
    return False, None


def _bearer(metadata: tuple | None) -> tuple[str | None, str]:
    """``(token, "")``, or ``(None, why)`` when the call has no single bearer token."""
    values = [value for key, value in metadata or () if key == AUTH_METADATA_KEY]
    if len(values) > 1:
        # Refused rather than picking one: a proxy and a client could each add one.
        return None, f"{len(values)} authorization headers; send exactly one bearer token"
    if not values:
        return None, "missing bearer token"
    value = values[0]
    # the scheme name is case-insensitive (RFC 7235): clients in other languages send "bearer"
    if isinstance(value, str) and value[:7].lower() == "bearer ":
        return value[7:].strip(), ""
    return None, "the authorization header is not 'Bearer <token>'"


def _denial(code: grpc.StatusCode, details: str, handler: grpc.RpcMethodHandler | None) -> grpc.RpcMethodHandler:
    async def deny(request, context):  # on the event loop: a refusal takes no thread
        await context.abort(code, details)

    if handler is not None and handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(deny)
    return grpc.unary_unary_rpc_method_handler(deny)


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):
    """Checks ``authorization: Bearer <token>`` against the role a method needs."""

    def __init__(self, *, trainer_token: str | None, client_token: str | None):
        self._tokens = {role: tok.encode() for role, tok in ((TRAINER, trainer_token), (CLIENT, client_token)) if tok}
        if not self._tokens:
            raise ValueError("token authentication needs a trainer token, a client token, or both")

    def _roles(self, presented: str) -> set[str]:
        data = presented.encode()
        # compare against every token (no early exit) so timing tells nothing
        matches = {role: hmac.compare_digest(data, tok) for role, tok in self._tokens.items()}
        return {role for role, ok in matches.items() if ok}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        known, needed = _role_of(handler_call_details.method)
        if known and needed is None:
            return await continuation(handler_call_details)
        presented, problem = _bearer(handler_call_details.invocation_metadata)
        roles = self._roles(presented) if presented else set()
        if not roles:
            return _denial(
                grpc.StatusCode.UNAUTHENTICATED,
                problem or "invalid bearer token",
                await continuation(handler_call_details),
            )
        if known and needed not in roles:
            service = handler_call_details.method.split("/")[1]
            return _denial(
                grpc.StatusCode.PERMISSION_DENIED,
                f"a {' or '.join(sorted(roles))} token may not call {service}",
                await continuation(handler_call_details),
            )
        return await continuation(handler_call_details)
