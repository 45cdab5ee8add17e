"""Typed failures of the master link, mapped to HTTP statuses by the web layer."""

from __future__ import annotations

from typing import Any


class MasterRequestError(Exception):
    """Base of every failure reported by, or about, the master."""


class MasterUnavailable(MasterRequestError):
    """The master cannot be reached right now (503)."""


class MasterTimeout(MasterRequestError):
    """The master did not answer within the deadline (504)."""


class AuthenticationFailed(MasterRequestError):
    """The master refused the credentials (401)."""


class AuthorizationFailed(MasterRequestError):
    """The master knows the user but denies the call (403)."""


class MasterError(MasterRequestError):
    """The master answered with an error of another kind (502 / per-chunk text)."""


class BusUnavailable(MasterRequestError):
    """The master's event bus is not connected (503)."""


class ShuttingDown(MasterRequestError):
    """The service is stopping (503)."""


_AUTHENTICATION_NAMES = {
    "AuthenticationError",
    "TokenAuthenticationError",
    "EauthAuthenticationError",
    "UserAuthenticationError",
}


def error_from_reply(reply: Any) -> MasterRequestError | None:
    """The typed error a master reply carries, or ``None`` for a normal reply.

    Replies of the form ``{"error": {"name": ..., "message": ...}}`` are the
    master's own exceptions. A ``TokenAuthenticationError`` that names a user
    means the token was valid but the user may not call the function: that is
    an authorization failure.
    """
    if isinstance(reply, str):
        if reply in ("bad load",) or reply.startswith("Some exception"):
            return MasterError(f"The master refused the request: {reply}")
        return None
    if not isinstance(reply, dict) or "error" not in reply:
        return None
    error = reply["error"]
    if isinstance(error, dict):
        name = str(error.get("name", ""))
        message = str(error.get("message", name))
        if name == "AuthorizationError":
            return AuthorizationFailed(message)
        if name == "TokenAuthenticationError" and "for user" in message:
            return AuthorizationFailed(message)
        if name in _AUTHENTICATION_NAMES:
            return AuthenticationFailed(message)
        return MasterError(f"{name}: {message}" if name else message)
    if isinstance(error, str) and reply.get("jid") is None and "minions" in reply:
        # "Master could not resolve minions for target ...": not an error for
        # the caller; the publish simply matched nothing.
        return None
    return MasterError(str(error))
