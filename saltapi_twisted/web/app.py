"""The REST routes (klein), thin: parsing, auth and dispatch live elsewhere.

Every route answers through :meth:`SaltAPI._serve`, which sets the common
headers, negotiates the output format, maps every failure to the
``{"status", "error", "return"}`` body, and never lets a traceback out.
"""

from __future__ import annotations

import io
import math
import os
import re
import tarfile
import time
from urllib.parse import parse_qs
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, cast
from collections.abc import Awaitable, Callable

from klein import Klein
from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import PathConverter

from .. import __version__
from ..auth import Authenticator, RateLimiter, compute_perms, token_from_request
from ..clients import FAILED_TO_AUTHENTICATE, ClientRunner, Entries
from ..config import ApiConfig
from ..cors import cors_headers, is_foreign, own_origin, preflight_headers
from ..errors import ApiError, error_body, master_unavailable, unauthenticated
from ..jobs import JobTimeout
from ..lowstate import LOCAL_FAMILY, Limits, to_bool, validate_lowstate
from ..master.framing import FramingError, pack_request
from ..metrics import Metrics
from ..master.client import MasterClient
from ..master.eventbus import EventBus
from ..master.exceptions import (
    AuthenticationFailed,
    AuthorizationFailed,
    BusUnavailable,
    MasterError,
    MasterRequestError,
    MasterTimeout,
    MasterUnavailable,
    ShuttingDown,
)
from ..negotiation import JSON, choose_output, normalize_lowstate, parse_body, serialize, serialize_in_slices
from ..streams import EventHub
from .events import SSE, serve_events
from .hook import serve_hook
from .proxies import TrustedProxies

_JID_RE = re.compile(r"^[0-9]{20}(_[A-Za-z0-9]{1,32})?$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


KEYS_BODY_KEYS = frozenset({"mid", "keysize", "force", "token", "username", "password", "eauth"})
KEYS_BODY_MESSAGE = "Send mid (and optionally keysize, force) with a token or username, password and eauth"
#: ``keysize`` bounds: Salt's minimum, and a cap on the master's CPU time per request.
KEY_SIZES = (2048, 8192)


def _valid_mid(mid: str) -> bool:
    """1-255 UTF-8 bytes, no ``/``, ``\\`` or control characters, not ``.`` or ``..``."""
    try:
        size = len(mid.encode("utf-8"))
    except UnicodeEncodeError:
        return False
    return 0 < size <= 255 and mid not in (".", "..") and not _MID_BAD.search(mid)


def _key_size(value: Any) -> int:
    if isinstance(value, str) and re.fullmatch(r"[1-9][0-9]{0,5}", value):
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not KEY_SIZES[0] <= value <= KEY_SIZES[1]:
        raise ApiError("bad_request", f"keysize must be a whole number of bits from {KEY_SIZES[0]} to {KEY_SIZES[1]}")
    return value


def _file_safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)[:200]


def key_archive(private: str, public: str, mtime: float) -> bytes:
    """An uncompressed tar of ``minion.pem`` (0600) and ``minion.pub`` (0644)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, text, mode in (("minion.pem", private, 0o600), ("minion.pub", public, 0o644)):
            data = text.encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, int(mtime)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _bearer_token(request: IRequest) -> str | None:
    """``Authorization: Bearer <token>`` (accepted on ``/metrics`` only)."""
    header = request.getHeader(b"authorization")
    if header is None:
        return None
    text = header if isinstance(header, str) else header.decode("latin-1")
    scheme, _sep, value = text.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def _note_user(request: IRequest, name: Any) -> None:
    """Remember who made *request*, for the access log (control characters masked)."""
    if isinstance(name, str) and name:
        cast(Any, request).saltapi_user = _CONTROL_RE.sub("?", name[:256]).replace(" ", "?")


_MID_BAD = re.compile(r"[/\\\x00-\x1f\x7f]")
LOGIN_KEYS_MESSAGE = 'Require "username", "password", and "eauth" params'


class AnyPathConverter(PathConverter):
    """Like ``path``, but also empty segments (``/hook//x`` reaches the handler, which refuses it)."""

    regex = r"[\s\S]*"
    part_isolating = False


#: Every REST path: each answers OPTIONS.
REST_PATHS = (
    "/",
    "/login",
    "/logout",
    "/token",
    "/run",
    "/minions",
    "/minions/",
    "/minions/<mid>",
    "/jobs",
    "/jobs/",
    "/jobs/<jid>",
    "/keys",
    "/keys/",
    "/keys/<mid>",
    "/events",
    "/hook",
    "/hook/<anypath:suffix>",
    "/stats",
    "/health",
    "/metrics",
    "/openapi.json",
)


def _options_routes(app: Klein) -> Callable[[Any], Any]:
    """Register one function as the ``OPTIONS`` handler of every REST path."""

    def register(function: Any) -> Any:
        for index, path in enumerate(REST_PATHS):
            function = app.route(path, methods=["OPTIONS"], endpoint=f"options_{index}")(function)
        return function

    return register


@dataclass
class Raw:
    """Bytes sent as they are (the handler set ``Content-Type``)."""

    body: bytes


#: What a streaming handler returns once its stream has ended.
STREAMED = object()


@dataclass
class Response:
    """A non-default answer: status, body and headers."""

    body: Any
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Stats:
    """The server's own counters, for ``/stats``."""

    started: float = field(default_factory=time.time)
    requests: Counter[int] = field(default_factory=Counter)
    streams: int = 0
    logins_ok: int = 0
    logins_failed: int = 0


class SaltAPI:
    """The klein application: every REST route of the API.

    :param config: the API configuration.
    :param master: master client.
    :param bus: the event bus.
    :param auth: token validation.
    :param runner: runs lowstate chunks.
    :param clock: time source.
    :param channel: the request channel (health and stats).
    """

    app = Klein()
    app.url_map.converters["anypath"] = AnyPathConverter
    # Paths match exactly: no slash merging, no redirects.
    app.url_map.merge_slashes = False
    app.url_map.strict_slashes = True
    _log = Logger()

    def __init__(
        self,
        config: ApiConfig,
        master: MasterClient,
        bus: EventBus,
        auth: Authenticator,
        runner: ClientRunner,
        clock: IReactorTime,
        channel: Any = None,
        firer: Any = None,
        salt_version: str | None = None,
    ) -> None:
        self.config = config
        self.master = master
        self.bus = bus
        self.auth = auth
        self.runner = runner
        self.clock = clock
        self.channel = channel
        self.firer = firer
        self.salt_version = salt_version
        self.stats = Stats()
        self.metrics = Metrics()
        if hasattr(master, "observer"):
            master.observer = self.metrics.observe_master
        self.proxies = TrustedProxies(config.trusted_proxies)
        self.login_limiter = RateLimiter(config.login_rate_limit, 60.0)
        self.hook_limiter = RateLimiter(config.webhook_rate_limit, 1.0)
        self.hub = EventHub(bus, clock, time.time, config.events_replay_buffer)
        auth.on_revoke(self.hub.revoked)
        auth.on_revoke_digest(self.hub.revoked_digest)
        self.limits = Limits(
            max_chunks=config.max_chunks,
            max_tgt_length=config.max_tgt_length,
            token_length=config.master.token_length,
        )
        self.shutting_down = False
        #: this worker's number with ``processes: N`` (set by the service), else None
        self.worker: int | None = None
        #: the reactor-lag probe (set by the service)
        self.lag: Any = None
        #: the site serving this app (connection counters), once built.
        self.site: Any = None
        #: open event streams (SSE, websockets): each has ``close(reason)``.
        self.streams: set[Any] = set()

    def resource(self) -> Any:
        """The twisted.web resource serving this app."""
        return self.app.resource()

    async def close_streams(self, wait: float = 3.0) -> None:
        """End every open stream (shutdown); wait, bounded, until their connections are gone."""
        streams = list(self.streams) + list(self.hub.streams)
        for stream in list(self.streams):
            stream.close("shutdown")
        self.hub.close_all("shutdown")
        self.hub.stop()
        pending = [s.finished for s in streams if getattr(s, "finished", None) is not None and not s.finished.called]
        if pending:
            done = defer.DeferredList(pending, consumeErrors=True)
            done.addTimeout(wait, self.clock)
            try:
                await done
            except defer.TimeoutError:
                pass

    # ------------------------------------------------------------------
    # common machinery

    def _base_headers(self, request: IRequest) -> None:
        request.setHeader(b"X-Content-Type-Options", b"nosniff")
        if self.salt_version:
            request.setHeader(b"X-Salt-Version", self.salt_version.encode())
        origin = _header(request, b"origin")
        for name, value in cors_headers(origin, self.config.cors_origin).items():
            request.setHeader(name.encode(), value.encode())

    def _serve(
        self, request: IRequest, handler: Callable[..., Awaitable[Any]], *args: Any, offers: tuple[str, ...] = ()
    ) -> defer.Deferred[bytes]:
        return defer.ensureDeferred(self._run(request, handler, *args, offers=offers))

    async def _run(
        self, request: IRequest, handler: Callable[..., Awaitable[Any]], *args: Any, offers: tuple[str, ...] = ()
    ) -> bytes:
        started = time.monotonic()
        try:
            return await self._respond(request, handler, *args, offers=offers)
        finally:
            self.metrics.observe_request(
                request.path, request.method, getattr(request, "code", 0), time.monotonic() - started
            )

    async def _respond(
        self, request: IRequest, handler: Callable[..., Awaitable[Any]], *args: Any, offers: tuple[str, ...] = ()
    ) -> bytes:
        self._base_headers(request)
        media = choose_output(_header(request, b"accept"))
        if media is None and offers:
            media = JSON if choose_output(_header(request, b"accept"), offers=offers) else None
        try:
            if media is None:
                raise ApiError(
                    "not_acceptable", "None of the types in Accept can be served: application/json, application/x-yaml"
                )
            if self.shutting_down:
                raise ApiError("shutting_down", "The API is shutting down", {"Retry-After": "5"})
            result = await handler(request, *args)
        except defer.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure becomes an error body
            error = self._to_api_error(exc)
            return self._render_error(request, error, media or JSON)
        if result is STREAMED:
            self.stats.requests[200] += 1
            return b""
        if isinstance(result, Raw):
            self.stats.requests[200] += 1
            return result.body
        response = result if isinstance(result, Response) else Response(result)
        request.setResponseCode(response.status)
        self.stats.requests[response.status] += 1
        for name, value in response.headers.items():
            request.setHeader(name.encode(), value.encode())
        if response.body is None:
            return b""
        request.setHeader(b"Content-Type", media.encode())
        return await serialize_in_slices(response.body, media, self._next_turn)

    def _next_turn(self) -> defer.Deferred[None]:
        """A Deferred that fires on the reactor's next turn."""
        return task.deferLater(self.clock, 0, lambda: None)

    def _to_api_error(self, exc: BaseException) -> ApiError:
        if isinstance(exc, ApiError):
            return exc
        if isinstance(exc, AuthorizationFailed):
            return ApiError("forbidden", "Permission denied: the master refused this call for this user")
        if isinstance(exc, AuthenticationFailed):
            return unauthenticated("Authentication failed")
        if isinstance(exc, ShuttingDown):
            return ApiError("shutting_down", str(exc), {"Retry-After": "5"})
        if isinstance(exc, (MasterUnavailable, BusUnavailable)):
            return master_unavailable(str(exc))
        if isinstance(exc, MasterTimeout):
            return ApiError("master_timeout", str(exc))
        if isinstance(exc, MasterError):
            return ApiError("master_error", str(exc))
        if isinstance(exc, FramingError):
            return ApiError("bad_request", "The request holds a value that cannot be sent to the master")
        self._log.failure("unexpected error while handling a request", failure=None)
        return ApiError("internal_error", "An unexpected error occurred")

    def _render_error(self, request: IRequest, error: ApiError, media: str) -> bytes:
        request.setResponseCode(error.status)
        self.stats.requests[error.status] += 1
        for name, value in error.headers.items():
            request.setHeader(name.encode(), value.encode())
        request.setHeader(b"Content-Type", media.encode())
        return serialize(error.body(), media)

    def _raw_body(self, request: IRequest) -> bytes:
        """The request body, at most ``max_request_body_size`` bytes (else 413)."""
        length = _header(request, b"content-length")
        if length is not None and length.isdigit() and int(length) > self.config.max_request_body_size:
            raise ApiError("payload_too_large", f"Request body over {self.config.max_request_body_size} bytes")
        raw = b""
        if request.content is not None:
            # twisted.web has already read a form body once (into args).
            request.content.seek(0, 0)
            raw = request.content.read(self.config.max_request_body_size + 1)
        if len(raw) > self.config.max_request_body_size:
            raise ApiError("payload_too_large", f"Request body over {self.config.max_request_body_size} bytes")
        return raw

    def _query(self, request: IRequest) -> dict[str, list[str]]:
        return query_args(request)

    def _read_body(self, request: IRequest, required: bool = True) -> Any:
        raw = self._raw_body(request)
        query = query_args(request)
        content_type = _header(request, b"content-type")
        if not raw.strip():
            if required:
                raise ApiError("bad_request", "The request body is empty")
            return None
        return parse_body(
            raw,
            content_type,
            query=query,
            max_depth=self.config.max_json_depth,
            max_fields=self.config.max_form_fields,
        )

    def _check_csrf(self, request: IRequest) -> None:
        """A POST authenticated only by the cookie must come from our own origin."""
        if request.getHeader(b"x-auth-token") is not None:
            return
        if request.getCookie(b"session_id") is None:
            return
        scheme = "https" if self.proxies.is_secure(request) else "http"
        own = own_origin(scheme, _header(request, b"host"))
        if is_foreign(_header(request, b"origin"), own, self.config.cors_origin, _header(request, b"sec-fetch-site")):
            raise ApiError("csrf", "Cross-site request refused: send X-Auth-Token or use the same origin")

    async def _require_token(self, request: IRequest) -> tuple[str, dict[str, Any]]:
        token = token_from_request(request)
        info = await self.auth.validate(token)
        assert token is not None  # noqa: S101 - validate() refused None
        _note_user(request, info.get("name"))
        return token, info

    def _validate(self, chunks: Any, header_token: str | None, require_credentials: bool = True) -> list[dict]:
        # Clients such as salt-pepper send unset options as null ("batch": null):
        # a null option is an absent one.
        chunks = [
            {k: v for k, v in chunk.items() if v is not None or k == "client"} if isinstance(chunk, dict) else chunk
            for chunk in normalize_lowstate(chunks)
        ]
        validated = validate_lowstate(
            chunks,
            enabled_clients=self.config.master.enabled_clients,
            limits=self.limits,
            header_token=header_token,
            require_credentials=require_credentials,
            now=time.time(),
            jid_seen=self.bus.jid_seen,
            bus_connected_since=_epoch_since(self.bus.connected_since, self.clock),
        )
        for index, chunk in enumerate(validated, 1):
            if chunk["client"] not in LOCAL_FAMILY and str(chunk.get("fun", "")).count(".") != 1:
                raise ApiError("invalid_value", f"chunk {index}: fun must be <module>.<function>")
            try:
                pack_request(chunk)
            except FramingError:
                raise ApiError("bad_request", f"chunk {index}: a value cannot be sent to the master") from None
        return validated

    async def _execute(self, chunks: list[dict]) -> list[Any]:
        """Check every distinct token, then run the chunks in order."""
        for token in dict.fromkeys(c["token"] for c in chunks if "token" in c):
            await self.auth.validate(token)
        results: list[Any] = []
        for index, chunk in enumerate(chunks):
            try:
                result = await self.runner.run(chunk)
            except defer.CancelledError:
                raise
            except (AuthenticationFailed, AuthorizationFailed):
                if index == 0:
                    raise
                results.append(FAILED_TO_AUTHENTICATE)
                break
            except (MasterUnavailable, ShuttingDown, MasterTimeout, MasterError) as exc:
                if index == 0 and not isinstance(exc, JobTimeout):
                    raise
                results.append(f"Unexpected exception while handling request: {exc}")
                continue
            except (MasterRequestError, ApiError) as exc:
                results.append(f"Unexpected exception while handling request: {exc}")
                continue
            if isinstance(result, Entries):
                results.extend(result)
            else:
                results.append(result)
        return results

    # ------------------------------------------------------------------
    # errors from routing

    @app.handle_errors(NotFound)
    def not_found(self, request: IRequest, failure: Any) -> defer.Deferred[bytes]:
        async def handler(request: IRequest) -> Any:
            raise ApiError("not_found", "Not found")

        return self._serve(request, handler)

    @app.handle_errors(MethodNotAllowed)
    def method_not_allowed(self, request: IRequest, failure: Any) -> defer.Deferred[bytes]:
        methods = sorted(set(getattr(failure.value, "valid_methods", None) or []) | {"OPTIONS"})

        async def handler(request: IRequest) -> Any:
            raise ApiError(
                "method_not_allowed", f"Method {request.method.decode()} not allowed", {"Allow": ", ".join(methods)}
            )

        return self._serve(request, handler)

    # ------------------------------------------------------------------
    # OPTIONS on every REST route

    @_options_routes(app)
    def options(self, request: IRequest, **_path: Any) -> defer.Deferred[bytes]:
        async def handler(request: IRequest) -> Response:
            headers = preflight_headers(
                _header(request, b"origin"),
                self.config.cors_origin,
                _header(request, b"access-control-request-headers"),
            )
            return Response(None, 204, headers)

        return self._serve(request, handler)

    # ------------------------------------------------------------------
    # /

    @app.route("/", methods=["GET"])
    def root_get(self, request: IRequest) -> defer.Deferred[bytes]:
        async def handler(request: IRequest) -> Any:
            return {"return": "Welcome", "clients": list(self.config.master.enabled_clients)}

        return self._serve(request, handler)

    @app.route("/", methods=["POST"])
    def root_post(self, request: IRequest) -> defer.Deferred[bytes]:
        async def handler(request: IRequest) -> Any:
            token, _info = await self._require_token(request)
            self._check_csrf(request)
            chunks = self._validate(self._read_body(request), token)
            return {"return": await self._execute(chunks)}

        return self._serve(request, handler)

    @app.route("/run", methods=["POST"])
    def run(self, request: IRequest) -> defer.Deferred[bytes]:
        async def handler(request: IRequest) -> Any:
            token = token_from_request(request)
            if token is not None and not self.auth.well_formed(token):
                raise unauthenticated("Invalid token")
            self._check_csrf(request)
            chunks = self._validate(self._read_body(request), token)
            return {"return": await self._execute(chunks)}

        return self._serve(request, handler)

    # ------------------------------------------------------------------
    # /login, /logout, /token

    def _client_ip(self, request: IRequest) -> str:
        return self.proxies.client_ip(request)

    def _credentials_from_body(self, request: IRequest) -> dict[str, Any]:
        body = self._read_body(request)
        if isinstance(body, list) and len(body) == 1 and isinstance(body[0], dict):
            body = body[0]
        if not isinstance(body, dict):
            raise ApiError("bad_request", LOGIN_KEYS_MESSAGE)
        values: dict[str, Any] = {}
        for key in ("username", "password", "eauth"):
            value = body.get(key)
            if isinstance(value, list) and len(value) == 1:
                value = value[0]
            if not isinstance(value, str) or (key != "password" and not value):
                raise ApiError("bad_request", LOGIN_KEYS_MESSAGE)
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise ApiError("bad_request", f"{key} is not valid text") from None
            values[key] = value
        if (
            len(values["username"]) > 256
            or len(values["password"]) > 4096
            or not re.fullmatch(r"[A-Za-z0-9_]{1,64}", values["eauth"])
        ):
            raise ApiError("bad_request", "username, password or eauth out of bounds")
        expire = body.get("token_expire")
        if expire is not None:
            try:
                seconds = float(expire)
            except (TypeError, ValueError, OverflowError):
                seconds = -1.0
            if isinstance(expire, bool) or not math.isfinite(seconds) or seconds < 0:
                raise ApiError("bad_request", "token_expire must be a number of seconds, 0 or more")
            values["token_expire"] = seconds
        return values

    def _set_session_cookie(self, request: IRequest, token: str, max_age: int) -> None:
        """``session_id=<token>; HttpOnly; SameSite=...; Path=/; Max-Age=...`` (+ ``Secure`` over TLS)."""
        cookie = f"session_id={token}; Path=/; Max-Age={max_age}; HttpOnly; SameSite={self.config.cookie_samesite}"
        if self.proxies.is_secure(request):
            cookie += "; Secure"
        cast(Any, request).cookies.append(cookie.encode("ascii"))

    async def _mint(self, request: IRequest) -> dict[str, Any]:
        ip = self._client_ip(request)
        retry = self.login_limiter.retry_after(ip)
        creds = self._credentials_from_body(request) if not retry else {}
        user_key = "user:" + str(creds.get("username", ""))
        if not retry:
            retry = self.login_limiter.retry_after(user_key)
        if retry:
            self.metrics.rate_limited["login"] += 1
            raise ApiError("rate_limited", "Too many failed logins; try again later", {"Retry-After": str(retry)})
        try:
            self.auth.check_external_auth(self.config.master.external_auth, creds["eauth"])
            info = await self.master.mk_token(
                creds["username"], creds["password"], creds["eauth"], creds.get("token_expire")
            )
        except (AuthenticationFailed, ApiError) as exc:
            if isinstance(exc, ApiError) and exc.word != "unauthenticated":
                raise
            self.login_limiter.hit(ip)
            self.login_limiter.hit(user_key)
            self.stats.logins_failed += 1
            self.metrics.logins["failed"] += 1
            raise unauthenticated("Authentication failed") from None
        self.stats.logins_ok += 1
        self.metrics.logins["ok"] += 1
        _note_user(request, info.get("name"))
        return info

    def _login_entry(self, info: dict[str, Any]) -> dict[str, Any]:
        return {
            "token": info["token"],
            "expire": info.get("expire"),
            "start": info.get("start"),
            "user": info.get("name"),
            "eauth": info.get("eauth"),
            "perms": compute_perms(
                self.config.master.external_auth, str(info.get("eauth")), str(info.get("name")), info.get("groups")
            ),
        }

    @app.route("/login", methods=["POST"])
    def login_post(self, request: IRequest) -> defer.Deferred[bytes]:
        async def handler(request: IRequest) -> Any:
            info = await self._mint(request)
            token = info["token"]
            max_age = max(0, int(float(info.get("expire", 0)) - time.time()))
            self._set_session_cookie(request, token, max_age)
            return Response(
                {"return": [self._login_entry(info)]},
                200,
                {"X-Auth-Token": token, "Cache-Control": "no-store"},
            )

        return self._serve(request, handler)

    @app.route("/login", methods=["GET"])
    def login_get(self, request: IRequest) -> defer.Deferred[bytes]:
        async def handler(request: IRequest) -> Any:
            _token, info = await self._require_token(request)
            return Response({"return": [self._login_entry(info)]}, 200, {"Cache-Control": "no-store"})

        return self._serve(request, handler)

    @app.route("/logout", methods=["POST"])
    def logout(self, request: IRequest) -> defer.Deferred[bytes]:
        async def handler(request: IRequest) -> Any:
            token, info = await self._require_token(request)
            self._check_csrf(request)
            self.auth.revoke(token, float(info.get("expire", time.time() + 3600)))
            self._set_session_cookie(request, "", 0)
            return {"return": "Your token has been cleared"}

        return self._serve(request, handler)

    @app.route("/token", methods=["POST"])
    def token(self, request: IRequest) -> defer.Deferred[bytes]:
        async def handler(request: IRequest) -> Any:
            info = await self._mint(request)
            entry = {k: info.get(k) for k in ("token", "start", "expire", "name", "eauth")}
            return Response([entry], 200, {"Cache-Control": "no-store"})

        return self._serve(request, handler)

    # ------------------------------------------------------------------
    # /minions

    async def _minions_get(self, request: IRequest, mid: str) -> Any:
        token, _info = await self._require_token(request)
        target = mid or "*"
        if _CONTROL_RE.search(target) or len(target.encode()) > self.config.max_tgt_length:
            raise ApiError("bad_request", "Invalid minion id")
        chunks = self._validate([{"client": "local", "tgt": target, "fun": "grains.items"}], token)
        return {"return": await self._execute(chunks)}

    @app.route("/minions", methods=["GET"])
    def minions_all(self, request: IRequest) -> defer.Deferred[bytes]:
        return self._serve(request, self._minions_get, "")

    @app.route("/minions/", methods=["GET"])
    def minions_slash(self, request: IRequest) -> defer.Deferred[bytes]:
        return self._serve(request, self._minions_get, "")

    @app.route("/minions/<mid>", methods=["GET"])
    def minions_one(self, request: IRequest, mid: str) -> defer.Deferred[bytes]:
        return self._serve(request, self._minions_get, mid)

    async def _minions_post(self, request: IRequest) -> Any:
        token, _info = await self._require_token(request)
        self._check_csrf(request)
        body = normalize_lowstate(self._read_body(request))
        chunks = []
        for chunk in body:
            if isinstance(chunk, dict):
                chunk = dict(chunk)
                chunk.setdefault("client", "local_async")
                if chunk["client"] != "local_async":
                    raise ApiError("wrong_client", "We don't serve your kind here")
            chunks.append(chunk)
        validated = self._validate(chunks, token)
        results = await self._execute(validated)
        jobs = [r for r in results if isinstance(r, dict) and r.get("jid")]
        headers = {"Location": f"/jobs/{jobs[0]['jid']}"} if jobs else {}
        return Response(
            {"return": results, "_links": {"jobs": [{"href": f"/jobs/{r['jid']}"} for r in jobs]}}, 202, headers
        )

    @app.route("/minions", methods=["POST"])
    @app.route("/minions/", methods=["POST"], endpoint="minions_post_slash")
    def minions_post(self, request: IRequest) -> defer.Deferred[bytes]:
        return self._serve(request, self._minions_post)

    # ------------------------------------------------------------------
    # /jobs

    async def _jobs(self, request: IRequest, jid: str) -> Any:
        token, _info = await self._require_token(request)
        try:
            query = query_args(request)
        except ValueError:
            raise ApiError("bad_request", "Too many query parameters") from None
        unknown = set(query) - {"format"}
        if unknown:
            raise ApiError("bad_request", f"Unknown query parameters: {', '.join(sorted(unknown))}")
        fmt = self.config.jobs_format
        if "format" in query:
            fmt = query["format"][-1]
            if fmt not in ("tornado", "cherrypy"):
                raise ApiError("bad_request", "format must be tornado or cherrypy")
        if not jid:
            chunks = self._validate([{"client": "runner", "fun": "jobs.list_jobs"}], token)
            return {"return": await self._execute(chunks)}
        if not _JID_RE.fullmatch(jid):
            raise ApiError("bad_request", "Invalid jid")
        chunks = self._validate([{"client": "runner", "fun": "jobs.list_job", "jid": jid}], token)
        results = await self._execute(chunks)
        if fmt == "cherrypy" and results and isinstance(results[0], dict):
            job = dict(results[0])
            result = job.pop("Result", {}) or {}
            returns = {m: (r.get("return") if isinstance(r, dict) else r) for m, r in result.items()}
            return {"info": [job], "return": [returns]}
        return {"return": results}

    @app.route("/jobs", methods=["GET"])
    def jobs_all(self, request: IRequest) -> defer.Deferred[bytes]:
        return self._serve(request, self._jobs, "")

    @app.route("/jobs/", methods=["GET"])
    def jobs_slash(self, request: IRequest) -> defer.Deferred[bytes]:
        return self._serve(request, self._jobs, "")

    @app.route("/jobs/<jid>", methods=["GET"])
    def jobs_one(self, request: IRequest, jid: str) -> defer.Deferred[bytes]:
        return self._serve(request, self._jobs, jid)

    # ------------------------------------------------------------------
    # /keys

    async def _keys(self, request: IRequest, mid: str) -> Any:
        token, _info = await self._require_token(request)
        if not mid:
            chunks = self._validate([{"client": "wheel", "fun": "key.list_all"}], token)
        else:
            if not _valid_mid(mid):
                raise ApiError("bad_request", "Invalid minion id")
            chunks = self._validate([{"client": "wheel", "fun": "key.finger", "match": mid}], token)
        results = await self._execute(chunks)
        entry = results[0] if results else {}
        if isinstance(entry, dict):
            data = entry.get("data") or {}
            return {"return": data.get("return")}
        return {"return": entry}

    @app.route("/keys", methods=["GET"])
    def keys_all(self, request: IRequest) -> defer.Deferred[bytes]:
        return self._serve(request, self._keys, "")

    @app.route("/keys/", methods=["GET"])
    def keys_slash(self, request: IRequest) -> defer.Deferred[bytes]:
        return self._serve(request, self._keys, "")

    @app.route("/keys/<mid>", methods=["GET"])
    def keys_one(self, request: IRequest, mid: str) -> defer.Deferred[bytes]:
        return self._serve(request, self._keys, mid)

    @app.route("/keys", methods=["POST"])
    def keys_generate(self, request: IRequest) -> defer.Deferred[bytes]:
        return self._serve(request, self._generate_key, offers=("application/x-tar",))

    async def _generate_key(self, request: IRequest) -> Any:
        """``key.gen_accept``: a new key pair, accepted on the master, sent back as a tar."""
        body = self._read_body(request)
        if isinstance(body, list) and len(body) == 1 and isinstance(body[0], dict):
            body = body[0]
        if not isinstance(body, dict):
            raise ApiError("bad_request", KEYS_BODY_MESSAGE)
        values = {k: (v[0] if isinstance(v, list) and len(v) == 1 else v) for k, v in body.items()}
        unknown = sorted(str(k) for k in values if k not in KEYS_BODY_KEYS)
        if unknown:
            raise ApiError("unknown_key", f"Unknown keys: {', '.join(unknown)}. {KEYS_BODY_MESSAGE}")
        mid = values.get("mid")
        if not isinstance(mid, str) or not _valid_mid(mid):
            raise ApiError("bad_request", "mid: a minion id of 1-255 bytes without /, \\ or control characters")
        keysize = _key_size(values.get("keysize", 2048))
        force = to_bool(values.get("force", False))
        if force is None:
            raise ApiError("bad_request", "force must be true or false")
        chunk: dict[str, Any] = {
            "client": "wheel",
            "fun": "key.gen_accept",
            "id_": mid,
            "keysize": keysize,
            "force": force,
        }
        header_token = token_from_request(request)
        if header_token is not None:
            await self._require_token(request)
            self._check_csrf(request)
        elif "token" in values:
            chunk["token"] = values["token"]
        elif all(key in values for key in ("username", "password", "eauth")):
            chunk.update((key, values[key]) for key in ("username", "password", "eauth"))
        else:
            raise unauthenticated("Send X-Auth-Token, or token, or username, password and eauth")
        chunks = self._validate([chunk], header_token)
        results = await self._execute(chunks)
        entry = results[0] if results else {}
        data = entry.get("data") if isinstance(entry, dict) else None
        returned = data.get("return") if isinstance(data, dict) else None
        if isinstance(data, dict) and data.get("success") is False:
            raise ApiError("master_error", f"key.gen_accept failed: {str(returned)[:300]}")
        if returned == {}:
            raise ApiError("conflict", f"A key for {mid!r} is already accepted; send force=true to replace it")
        if not (isinstance(returned, dict) and all(isinstance(returned.get(k), str) for k in ("pub", "priv"))):
            raise ApiError("master_error", "key.gen_accept returned no key pair")
        archive = key_archive(returned["priv"], returned["pub"], time.time())
        request.setHeader(b"Content-Type", b"application/x-tar")
        request.setHeader(b"Content-Disposition", f'attachment; filename="saltkeys-{_file_safe(mid)}.tar"'.encode())
        request.setHeader(b"Cache-Control", b"no-store")
        return Raw(archive)

    # ------------------------------------------------------------------
    # /events, /hook

    @app.route("/events", methods=["GET"])
    def events(self, request: IRequest) -> defer.Deferred[bytes]:
        async def handler(request: IRequest) -> Any:
            await serve_events(self, request)
            return STREAMED

        return self._serve(request, handler, offers=(SSE,))

    @app.route("/hook", methods=["POST"])
    def hook(self, request: IRequest) -> defer.Deferred[bytes]:
        return self._serve(request, lambda r: serve_hook(self, r))

    @app.route("/hook/<anypath:suffix>", methods=["POST"])
    def hook_path(self, request: IRequest, suffix: str) -> defer.Deferred[bytes]:
        return self._serve(request, lambda r: serve_hook(self, r))

    # ------------------------------------------------------------------
    # websockets (mounted when ``websockets: True``)

    def _websocket(self, request: IRequest, kind: str, token: str | None) -> Any:
        if not self.config.websockets:
            return self._serve(request, _not_found)
        from .websockets import websocket_resource

        return websocket_resource(self, request, kind, token)

    @app.route("/all_events/<path:token>", methods=["GET"])
    def all_events(self, request: IRequest, token: str) -> Any:
        return self._websocket(request, "all_events", token)

    @app.route("/formatted_events/<path:token>", methods=["GET"])
    def formatted_events(self, request: IRequest, token: str) -> Any:
        return self._websocket(request, "formatted_events", token)

    @app.route("/ws", methods=["GET"])
    def ws_plain(self, request: IRequest) -> Any:
        return self._websocket(request, "ws", None)

    @app.route("/ws/<path:token>", methods=["GET"])
    def ws_token(self, request: IRequest, token: str) -> Any:
        return self._websocket(request, "ws", token)

    # ------------------------------------------------------------------
    # /stats, /health

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Whether both master connections are up, and the details."""
        channel_up = self.channel is not None and self.channel.recently_ok(self.clock.seconds())
        bus_up = self.bus.connected
        ok = channel_up and bus_up
        return ok, {
            "status": "ok" if ok else "unavailable",
            "request_channel": "up" if channel_up else "down",
            "event_bus": "up" if bus_up else "down",
            "tls": self.config.tls,
        }

    @app.route("/health", methods=["GET"])
    def health_route(self, request: IRequest) -> defer.Deferred[bytes]:
        async def handler(request: IRequest) -> Any:
            ok, body = self.health()
            return Response(body, 200 if ok else 503, {} if ok else {"Retry-After": "5"})

        return self._serve(request, handler)

    @app.route("/openapi.json", methods=["GET"])
    def openapi(self, request: IRequest) -> defer.Deferred[bytes]:
        async def handler(request: IRequest) -> Any:
            from ..openapi import build

            return build(self.config)

        return self._serve(request, handler)

    @app.route("/metrics", methods=["GET"])
    def metrics_route(self, request: IRequest) -> defer.Deferred[bytes]:
        async def handler(request: IRequest) -> Any:
            if not self.config.metrics:
                raise ApiError("not_found", "Not found")
            if not self.config.metrics_disable_auth:
                # Prometheus' ``authorization`` setting sends ``Authorization: Bearer <token>``
                token = token_from_request(request) or _bearer_token(request)
                _note_user(request, (await self.auth.validate(token)).get("name"))
            kinds: Counter[str] = Counter(getattr(s, "kind", "stream") for s in self.hub.streams)
            gauges = {
                "connections": getattr(self.site, "open_connections", 0),
                "streams": {"sse": kinds.get("sse", 0), "websocket": sum(v for k, v in kinds.items() if k != "sse")},
                "events_received": self.bus.events_received,
                "events_dropped": {"overflow": self.hub.dropped, "unsafe_tag": self.hub.unsafe_tags},
                "master_up": {
                    "request_channel": int(self.channel is not None and self.channel.recently_ok(self.clock.seconds())),
                    "event_bus": int(self.bus.connected),
                },
                "reconnects": self.bus.reconnects,
            }
            body, content_type = self.metrics.render(gauges)
            request.setHeader(b"Content-Type", content_type.encode())
            return Raw(body)

        return self._serve(request, handler)

    @app.route("/stats", methods=["GET"])
    def stats_route(self, request: IRequest) -> defer.Deferred[bytes]:
        async def handler(request: IRequest) -> Any:
            if not self.config.stats_disable_auth:
                await self._require_token(request)
            _ok, health = self.health()
            channel = self.channel
            return {
                "saltapi_twisted": {
                    "version": __version__,
                    "pid": os.getpid(),
                    "worker": self.worker,
                    "uptime": time.time() - self.stats.started,
                    "requests_by_status": {str(k): v for k, v in sorted(self.stats.requests.items())},
                    "logins": {"ok": self.stats.logins_ok, "failed": self.stats.logins_failed},
                    "streams": len(self.hub.streams),
                    "streams_dropped": self.hub.dropped,
                    "events_unsafe_tags_dropped": self.hub.unsafe_tags,
                    "jobs_watched": self.bus.watch_count,
                    "events_received": self.bus.events_received,
                    "reactor_lag_max": getattr(self.lag, "max_lag", None),
                    "reactor_lag_last_minute": getattr(self.lag, "recent_max", None),
                    "connections": {
                        "open": getattr(self.site, "open_connections", 0),
                        "refused": getattr(self.site, "refused_connections", 0),
                        "closed_slow": getattr(self.site, "slow_closed", 0),
                    },
                    "event_bus_reconnects": self.bus.reconnects,
                    "master": {
                        "request_channel": health["request_channel"],
                        "event_bus": health["event_bus"],
                        "requests": getattr(channel, "requests_total", 0),
                        "errors": getattr(channel, "errors_total", 0),
                        "timeouts": getattr(channel, "timeouts_total", 0),
                        "pending": getattr(channel, "pending", 0),
                    },
                }
            }

        return self._serve(request, handler)


async def _not_found(request: IRequest) -> Any:
    raise ApiError("not_found", "Not found")


def query_args(request: IRequest) -> dict[str, list[str]]:
    """The query string's arguments only (``request.args`` also holds form bodies)."""
    _path, _sep, query = request.uri.partition(b"?")
    try:
        return parse_qs(query.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=1000)
    except ValueError:
        raise ApiError("bad_request", "Too many query parameters") from None


def _header(request: IRequest, name: bytes) -> str | None:
    value = request.getHeader(name)
    if value is None:
        return None
    return value if isinstance(value, str) else value.decode("latin-1")


def _epoch_since(since: float | None, clock: IReactorTime) -> float | None:
    """A clock reading as epoch seconds (the jid check compares with jids' UTC stamps)."""
    if since is None:
        return None
    return time.time() - (clock.seconds() - since)


def error_page(code: int, word: str, message: str) -> dict[str, Any]:
    """An error body for layers outside klein (site-level refusals)."""
    return error_body(code, word, message)
