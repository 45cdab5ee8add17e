"""Tokens: where they come from, the format gate, validation, revocation, perms.

* A token comes from ``X-Auth-Token``, else the ``session_id`` cookie. Query
  strings never count.
* The format gate: exactly N lowercase hex characters, N from the master's
  ``hash_type``. Anything else is refused before it reaches the master, a
  cache key or a log line.
* Validation asks the master (``get_token``); a result is cached for a few
  seconds, never past the token's ``expire``.
* ``/logout`` records the token (its SHA-256 digest) as revoked until it
  expires (the master's request channel has no way to delete a token); with
  ``processes: N`` the digest is shared with every worker.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections import OrderedDict, deque
from typing import Any
from collections.abc import Callable

from .errors import ApiError, unauthenticated
from .lowstate import token_well_formed
from .master.client import MasterClient

SESSION_COOKIE = b"session_id"


_DIGEST_RE = re.compile(r"[0-9a-f]{64}")


def token_digest(token: str) -> str:
    """The SHA-256 hex digest of *token* (how revocations are kept and shared)."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def token_from_request(request: Any) -> str | None:
    """The token of an HTTP request: the header, else the cookie."""
    header = request.getHeader(b"x-auth-token")
    if header is not None:
        return header if isinstance(header, str) else header.decode("latin-1")
    cookie = request.getCookie(SESSION_COOKIE)
    if cookie is not None:
        return cookie.decode("latin-1")
    return None


def compute_perms(external_auth: dict[str, Any], eauth: str, user: str, groups: list[str] | None) -> list[Any]:
    """The ``perms`` list of ``/login``, from the master's ``external_auth``.

    The user's entry, ``*``'s entry and each ``<group>%`` entry, de-duplicated;
    strings sorted first, then the rest sorted by ``repr``.
    """
    section = external_auth.get(eauth)
    if not isinstance(section, dict):
        return []
    perms: list[Any] = []
    names = [user, "*"] + [f"{group}%" for group in (groups or [])]
    for name in names:
        entry = section.get(name)
        if isinstance(entry, list):
            perms.extend(entry)
        elif entry is not None:
            perms.append(entry)
    unique: list[Any] = []
    for item in perms:
        if item not in unique:
            unique.append(item)
    strings = sorted(p for p in unique if isinstance(p, str))
    others = sorted((p for p in unique if not isinstance(p, str)), key=repr)
    return strings + others


class RateLimiter:
    """Counts events per key in a sliding window.

    :param limit: events allowed per window (0 = no limit).
    :param window: window length in seconds.
    :param now: time source.
    :param max_keys: most keys tracked (oldest forgotten first).
    """

    def __init__(self, limit: int, window: float, now: Callable[[], float] = time.monotonic, max_keys: int = 100000):
        self.limit = limit
        self.window = window
        self._now = now
        self._max_keys = max_keys
        self._events: OrderedDict[str, deque[float]] = OrderedDict()

    def _trim(self, key: str) -> deque[float]:
        now = self._now()
        events = self._events.get(key)
        if events is None:
            events = deque()
            self._events[key] = events
            while len(self._events) > self._max_keys:
                self._events.popitem(last=False)
        while events and now - events[0] >= self.window:
            events.popleft()
        return events

    def retry_after(self, key: str) -> int:
        """Seconds until *key* may act again; 0 when it may act now."""
        if self.limit <= 0:
            return 0
        events = self._trim(key)
        if len(events) < self.limit:
            return 0
        return max(1, int(self.window - (self._now() - events[0])) + 1)

    def hit(self, key: str) -> None:
        """Record one event for *key*."""
        if self.limit > 0:
            self._trim(key).append(self._now())


class Authenticator:
    """Validates tokens against the master and remembers revocations.

    :param master: the master client.
    :param token_length: N, the hex length of a token.
    :param cache_seconds: how long a validation is reused.
    :param now: wall-clock time (tokens expire in epoch seconds).
    """

    def __init__(
        self,
        master: MasterClient,
        token_length: int,
        cache_seconds: float = 5.0,
        now: Callable[[], float] = time.time,
        max_cache: int = 10000,
    ) -> None:
        self.master = master
        self.token_length = token_length
        self.cache_seconds = cache_seconds
        self._now = now
        self._max_cache = max_cache
        self._cache: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()
        self._revoked: dict[str, float] = {}
        self._revocation_listeners: list[Callable[[str], None]] = []
        self._revocation_sharers: list[Callable[[str, float], None]] = []
        self._digest_listeners: list[Callable[[str], None]] = []

    def well_formed(self, token: object) -> bool:
        """The format gate."""
        return token_well_formed(token, self.token_length)

    def is_revoked(self, token: str) -> bool:
        """Whether ``/logout`` (here or in another worker) revoked *token*.

        Revocations are kept as SHA-256 digests (what workers share), compared
        with :func:`hmac.compare_digest`.
        """
        now = self._now()
        for revoked, expire in list(self._revoked.items()):
            if expire <= now:
                del self._revoked[revoked]
        digest = token_digest(token)
        return any(hmac.compare_digest(digest, revoked) for revoked in self._revoked)

    async def validate(self, token: str | None) -> dict[str, Any]:
        """The master's data for a valid token.

        :raises ApiError: 401 for a missing, malformed, unknown, expired or
            revoked token.
        :raises MasterUnavailable, MasterTimeout: when the master cannot say.
        """
        if token is None:
            raise unauthenticated()
        if not self.well_formed(token):
            raise unauthenticated("Invalid token")
        if self.is_revoked(token):
            raise unauthenticated("Token revoked")
        now = self._now()
        cached = self._cache.get(token)
        if cached is not None:
            until, info = cached
            if now < until and now < float(info.get("expire", 0)):
                return info
            del self._cache[token]
        fetched = await self.master.get_token(token)
        now = self._now()
        if fetched is None or float(fetched.get("expire", 0)) <= now:
            raise unauthenticated("Invalid or expired token")
        if self.is_revoked(token):
            raise unauthenticated("Token revoked")
        self._cache[token] = (min(now + self.cache_seconds, float(fetched["expire"])), fetched)
        while len(self._cache) > self._max_cache:
            self._cache.popitem(last=False)
        return fetched

    def revoke(self, token: str, expire: float) -> None:
        """Refuse *token* from now until *expire*; tell open streams and the other workers."""
        digest = token_digest(token)
        self._revoked[digest] = expire
        self._cache.pop(token, None)
        for listener in list(self._revocation_listeners):
            listener(token)
        for share in list(self._revocation_sharers):
            share(digest, expire)

    def revoke_digest(self, digest: str, expire: float) -> bool:
        """Another worker revoked the token with this SHA-256 *digest* (False: ignored)."""
        if not (isinstance(digest, str) and _DIGEST_RE.fullmatch(digest)):
            return False
        if not isinstance(expire, (int, float)) or isinstance(expire, bool) or expire <= self._now():
            return False
        self._revoked[digest] = float(expire)
        for listener in list(self._digest_listeners):
            listener(digest)
        return True

    def share_revocations(self, sharer: Callable[[str, float], None]) -> None:
        """Call *sharer* with (digest, expire) for each ``/logout`` here."""
        self._revocation_sharers.append(sharer)

    def on_revoke_digest(self, listener: Callable[[str], None]) -> None:
        """Call *listener* with the digest of each token another worker revoked."""
        self._digest_listeners.append(listener)

    def on_revoke(self, listener: Callable[[str], None]) -> Callable[[], None]:
        """Call *listener* with each revoked token; returns an unsubscribe function."""
        self._revocation_listeners.append(listener)
        return lambda: self._revocation_listeners.remove(listener)

    def check_external_auth(self, external_auth: dict[str, Any], eauth: str) -> None:
        """401 before minting when ``external_auth`` has no section for *eauth*."""
        if not isinstance(external_auth.get(eauth), dict):
            raise ApiError(
                "unauthenticated",
                f"Authentication failed: eauth backend {eauth!r} is not configured",
                {"WWW-Authenticate": "Session"},
            )
