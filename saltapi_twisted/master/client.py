"""The master's six clear commands, with typed errors.

``ping``, ``mk_token``, ``get_token``, ``publish``, ``runner`` and ``wheel``
are the only commands the master exposes on its request channel. Every load
sent here was built by the caller from an allowlist and carries the caller's
credentials; this module chooses ``cmd`` and nothing else.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet import defer
from twisted.logger import Logger

from .exceptions import AuthenticationFailed, MasterError, error_from_reply


class Channel(Protocol):
    """What :class:`MasterClient` needs from the request channel."""

    def request(self, load: dict[str, Any], timeout: float | None = None) -> defer.Deferred[Any]:
        """Send one load; a Deferred of the decoded reply."""


class MasterClient:
    """Typed operations over a request channel.

    :param channel: a :class:`~saltapi_twisted.master.reqclient.RequestChannel`
        or a fake with the same ``request`` method.
    """

    _log = Logger()

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        #: called with (cmd, outcome, seconds) after every round trip
        self.observer: Callable[[str, str, float], None] | None = None

    async def _request(self, load: dict[str, Any], timeout: float | None = None) -> Any:
        started = time.monotonic()
        outcome = "ok"
        try:
            return await self.channel.request(load, timeout)
        except BaseException as exc:
            outcome = type(exc).__name__
            raise
        finally:
            seconds = time.monotonic() - started
            self._log.debug(
                "master {cmd} request: {outcome} in {ms:.1f} ms",
                cmd=str(load.get("cmd")),
                outcome=outcome,
                ms=seconds * 1000,
            )
            if self.observer is not None:
                self.observer(str(load.get("cmd")), outcome, seconds)

    async def _call(self, load: dict[str, Any], timeout: float | None = None) -> Any:
        reply = await self._request(load, timeout)
        error = error_from_reply(reply)
        if error is not None:
            raise error
        return reply

    async def ping(self, timeout: float | None = None) -> bool:
        """A round trip that executes nothing (the master echoes the load)."""
        reply = await self._request({"cmd": "ping"}, timeout)
        return isinstance(reply, dict)

    async def mk_token(
        self, username: str, password: str, eauth: str, token_expire: float | None = None
    ) -> dict[str, Any]:
        """Mint a token; :class:`AuthenticationFailed` for bad credentials."""
        load: dict[str, Any] = {"cmd": "mk_token", "username": username, "password": password, "eauth": eauth}
        if token_expire is not None:
            load["token_expire"] = token_expire
        reply = await self._call(load)
        if not isinstance(reply, dict) or not reply.get("token"):
            raise AuthenticationFailed("Authentication failed")
        return reply

    async def get_token(self, token: str) -> dict[str, Any] | None:
        """The token's data, or ``None`` if the master does not know it."""
        reply = await self._request({"cmd": "get_token", "token": token})
        if isinstance(reply, dict) and reply.get("token") and "expire" in reply:
            return reply
        return None

    async def publish(self, load: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        """Publish a job; ``{"jid", "minions", ...}`` (``jid`` None: nothing matched)."""
        reply = await self._call({**load, "cmd": "publish"}, timeout)
        if not isinstance(reply, dict):
            raise MasterError(f"Unexpected publish reply: {reply!r}")
        reply.setdefault("minions", [])
        reply.setdefault("jid", None)
        return reply

    async def runner(self, load: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        """Start a runner; ``{"tag", "jid"}``. The result comes on the bus."""
        reply = await self._call({**load, "cmd": "runner"}, timeout)
        if not isinstance(reply, dict) or "jid" not in reply:
            raise MasterError(f"Unexpected runner reply: {reply!r}")
        return reply

    async def wheel(self, load: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        """Run a wheel function; ``{"tag", "data"}`` with the result."""
        reply = await self._call({**load, "cmd": "wheel"}, timeout)
        if not isinstance(reply, dict) or "tag" not in reply:
            raise MasterError(f"Unexpected wheel reply: {reply!r}")
        return reply
