"""Validate and normalise lowstate chunks, and build the master loads from them.

Pure code: no I/O, no Twisted, no clock of its own (the caller passes ``now``).

Validation (spec §4.2) runs **stage by stage over every chunk** before anything
runs (checklist R5): all chunks pass check 1, then all pass check 2, and so on
up to check 8. The first failure decides, so a request whose second chunk names
an unknown client is a 400 even if its first chunk lacks credentials (checklist
L11). Check 9 (every distinct token is valid on the master) is the caller's,
with :func:`distinct_tokens`.

Messages name the chunk (``"chunk 2: ..."``, counted from 1) and the offending
keys, never a value: values may be passwords or tokens. The ``invalid_client``
and ``client_disabled`` texts are Salt's own, without a chunk prefix.

The load builders (:func:`local_publish_load`, :func:`runner_load`,
:func:`wheel_load`) copy keys from an allowlist and choose ``cmd`` themselves
(checklist R2); a key the caller slipped into a chunk never reaches the master
unless the allowlist names it.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from saltapi_twisted.config import IMPLEMENTED_CLIENTS
from saltapi_twisted.errors import ApiError, unauthenticated

# --------------------------------------------------------------------------
# Vocabulary.

#: The clients whose chunks become a ``publish``.
LOCAL_FAMILY = frozenset({"local", "local_async", "local_batch", "local_subset"})
#: The clients whose chunks become a ``runner`` request.
RUNNER_FAMILY = frozenset({"runner", "runner_async"})
#: The clients whose chunks become a ``wheel`` request.
WHEEL_FAMILY = frozenset({"wheel", "wheel_async"})

#: Keys no chunk may carry (besides any key starting with ``__``).
RESERVED_KEYS = frozenset({"cmd", "key", "user", "auth_list", "kwargs", "to", "print_event", "_stamp"})

#: The credential keys.
CREDENTIAL_KEYS = ("token", "username", "password", "eauth")

_COMMON_KEYS = frozenset({"client", *CREDENTIAL_KEYS})
_LOCAL_KEYS = _COMMON_KEYS | {
    "tgt",
    "fun",
    "arg",
    "kwarg",
    "tgt_type",
    "expr_form",
    "ret",
    "ret_config",
    "ret_kwargs",
    "metadata",
    "timeout",
    "jid",
    "full_return",
}

#: client -> every key a chunk of that client may carry (local family only;
#: runner and wheel chunks may carry any non-reserved key).
LOCAL_ALLOWED_KEYS: dict[str, frozenset[str]] = {
    "local": _LOCAL_KEYS,
    "local_async": _LOCAL_KEYS,
    "local_batch": _LOCAL_KEYS | {"batch", "batch_wait"},
    "local_subset": _LOCAL_KEYS | {"subset"},
}

#: Target types the master understands.
TGT_TYPES = frozenset(
    {
        "glob",
        "pcre",
        "list",
        "grain",
        "grain_pcre",
        "pillar",
        "pillar_pcre",
        "pillar_exact",
        "nodegroup",
        "range",
        "compound",
        "ipcidr",
    }
)

#: Top-level keys a ``publish`` load can hold.
PUBLISH_LOAD_KEYS = frozenset({"cmd", "tgt", "fun", "arg", "tgt_type", "ret", "user", "kwargs", "jid"})
#: Chunk keys the publish load's ``kwargs`` carries besides the credentials;
#: the master copies them into the job.
PUBLISH_KWARGS_EXTRAS = ("metadata", "ret_config", "ret_kwargs")

#: Runner/wheel chunk keys the API consumes; every other key is a function keyword.
_CONSUMED_KEYS = frozenset({"client", *CREDENTIAL_KEYS, "fun", "arg", "kwarg", "full_return", "timeout"})

#: Keys a wheel ``kwarg`` dict may not hold: they would land at the top level of
#: the wheel load, beside ``cmd``, ``fun`` and the credentials.
_WHEEL_KWARG_FORBIDDEN = RESERVED_KEYS | {"client", "fun", "full_return", *CREDENTIAL_KEYS}

MAX_TIMEOUT = 86400.0
MAX_FUN_LENGTH = 256
MAX_USERNAME_LENGTH = 256
MAX_PASSWORD_LENGTH = 4096
#: A caller's jid must be stamped within this many seconds of now, and the bus
#: must have been connected at least this long.
JID_WINDOW = 60.0

NO_CREDENTIALS = "No credentials: send a token or username, password and eauth"
INVALID_CLIENT = "400 Invalid Client: Client not found in salt clients"

_FUN_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.]{0,255}", re.ASCII)
_RET_RE = re.compile(r"[A-Za-z0-9_,]*", re.ASCII)
_EAUTH_RE = re.compile(r"[A-Za-z0-9_]{1,64}", re.ASCII)
_JID_RE = re.compile(r"([0-9]{20})(?:_[A-Za-z0-9]{1,32})?", re.ASCII)
_TOKEN_RE = re.compile(r"[0-9a-f]+", re.ASCII)
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_NUMBER_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)
_DIGITS_RE = re.compile(r"[0-9]{1,18}", re.ASCII)
_PERCENT_RE = re.compile(r"([0-9]{1,3})%", re.ASCII)
_TRUE_WORDS = frozenset({"true", "1", "yes"})
_FALSE_WORDS = frozenset({"false", "0", "no"})

#: How many key names an error message lists, and how much of each.
_MAX_NAMES = 32
_MAX_NAME_CHARS = 64


# --------------------------------------------------------------------------
# Public helpers.


def token_well_formed(token: object, length: int) -> bool:
    """Whether *token* is exactly *length* characters of ``[0-9a-f]``.

    Uppercase, whitespace, ``0x``, non-ASCII digits and non-strings are all
    refused. The length is checked before the pattern runs.

    :param token: the candidate, of any type.
    :param length: the hex length of the master's ``hash_type`` digest.
    """
    if not isinstance(token, str) or isinstance(length, bool) or not isinstance(length, int):
        return False
    if length <= 0 or len(token) != length:
        return False
    return _TOKEN_RE.fullmatch(token) is not None


@dataclass(frozen=True)
class Limits:
    """The bounds :func:`validate_lowstate` enforces.

    :param max_chunks: the most chunks one request may hold.
    :param max_tgt_length: the most UTF-8 bytes a ``tgt`` may hold (a list
        target: all its elements together).
    :param token_length: N, the hex length of a token.
    """

    max_chunks: int = 100
    max_tgt_length: int = 65536
    token_length: int = 64


def validate_lowstate(
    chunks: list,
    *,
    enabled_clients: Collection[str],
    limits: Limits,
    header_token: str | None,
    require_credentials: bool = True,
    now: float | None = None,
    jid_seen: Callable[[str], bool] | None = None,
    bus_connected_since: float | None = None,
) -> list[dict]:
    """Check every chunk (spec §4.2, checks 1-8) and return normalised copies.

    Nothing is returned unless every chunk passes, so the caller runs all
    chunks or none. The input is never modified. A non-list *chunks* is taken
    as one chunk, as rest_tornado does.

    Normalisation: ``expr_form`` becomes ``tgt_type`` (only when ``tgt_type``
    is absent; otherwise it is dropped); local-family chunks get ``arg``
    (default ``[]``) and ``tgt_type`` (default ``"glob"``); a non-list ``arg``
    is wrapped in a list; ``timeout`` and ``batch_wait`` become floats,
    ``full_return`` a bool, ``batch`` a string (``"3"`` or ``"10%"``) and
    ``subset`` an int. ``kwarg`` stays absent when absent. The returned dicts,
    their ``arg`` lists and their ``kwarg`` dicts are new; deeper values are
    shared with the input and never modified.

    Credentials: *header_token* (the ``X-Auth-Token`` header or session cookie)
    is injected into every chunk without a ``token`` key; a chunk's own
    ``token`` wins. A chunk may carry a token and ``username``/``password``/
    ``eauth`` together: both are kept and the token wins when the load is built.

    :param chunks: the parsed request body.
    :param enabled_clients: the clients ``netapi_enable_clients`` enables.
    :param limits: the configured bounds.
    :param header_token: the header or cookie token, if any.
    :param require_credentials: refuse chunks with neither a token nor
        username, password and eauth (check 7).
    :param now: the current time (seconds since the epoch) for checking a
        caller's ``jid``; ``time.time()`` when not given.
    :param jid_seen: whether a ``salt/job/<jid>/...`` event has named a jid;
        without it no caller jid is accepted.
    :param bus_connected_since: when the event bus connection came up, or
        ``None`` while it is down; a caller jid needs a full minute of it.
    :raises ApiError: ``bad_request``, ``invalid_client``, ``client_disabled``,
        ``reserved_key``, ``unknown_key`` or ``invalid_value`` (400), or
        ``unauthenticated`` (401).
    """
    if not isinstance(chunks, (list, tuple)):
        chunks = [chunks]

    # 1. count
    if not chunks:
        raise ApiError("bad_request", "No chunks: send at least one lowstate chunk")
    if len(chunks) > limits.max_chunks:
        raise ApiError("bad_request", f"Too many chunks: {len(chunks)} sent, at most {limits.max_chunks} allowed")

    # 2. implemented client
    for chunk in chunks:
        client = chunk.get("client") if isinstance(chunk, dict) else None
        if not isinstance(client, str) or client not in IMPLEMENTED_CLIENTS:
            raise ApiError("invalid_client", INVALID_CLIENT)

    # 3. enabled client
    enabled = frozenset(c for c in enabled_clients if isinstance(c, str))
    for chunk in chunks:
        if chunk["client"] not in enabled:
            raise ApiError(
                "client_disabled",
                f"Client disabled: '{chunk['client']}'. Add to 'netapi_enable_clients' master config option to enable.",
            )

    # 4. reserved keys
    for index, chunk in enumerate(chunks, 1):
        reserved = [k for k in chunk if _is_reserved(k)]
        if reserved:
            raise ApiError("reserved_key", f"chunk {index}: reserved keys not allowed: {_names(reserved)}")

    # 5. allowlists
    for index, chunk in enumerate(chunks, 1):
        allowed = LOCAL_ALLOWED_KEYS.get(chunk["client"])
        unknown = [k for k in chunk if not isinstance(k, str) or (allowed is not None and k not in allowed)]
        if unknown:
            client = chunk["client"]
            message = f"chunk {index}: unknown keys for client '{client}': {_names(unknown)}"
            raise ApiError("unknown_key", message)

    # 6. values
    if now is None:
        now = time.time()
    jid_check = _JidCheck(now, jid_seen, bus_connected_since)
    normalised = [_check_values(index, chunk, limits, jid_check) for index, chunk in enumerate(chunks, 1)]

    # 7. credentials
    for chunk in normalised:
        if "token" not in chunk and header_token is not None:
            chunk["token"] = header_token
        if require_credentials and not _has_credentials(chunk):
            raise unauthenticated(NO_CREDENTIALS)

    # 8. token format
    for chunk in normalised:
        if "token" in chunk and not token_well_formed(chunk["token"], limits.token_length):
            raise unauthenticated()

    return normalised


def distinct_tokens(chunks: Iterable[dict]) -> list[str]:
    """The tokens of validated *chunks*, in order of first use, each once.

    The caller checks each with the master (spec §4.2 check 9).
    """
    seen: dict[str, None] = {}
    for chunk in chunks:
        token = chunk.get("token")
        if isinstance(token, str):
            seen.setdefault(token, None)
    return list(seen)


def local_publish_load(chunk: dict) -> dict:
    """The master ``publish`` load for a validated local-family *chunk*.

    The load is built from an allowlist: ``cmd`` is always ``"publish"``,
    and only ``tgt fun arg tgt_type ret user kwargs`` (and ``jid`` when the
    caller supplied one) are present. ``kwarg`` becomes a trailing
    ``{"__kwarg__": True, ...}`` element of ``arg``. ``kwargs`` holds the
    credentials (the token if there is one, else eauth, username and password)
    and any ``metadata``, ``ret_config`` and ``ret_kwargs``. No ``to`` is sent
    (it only matters to syndics) and no ``jid`` is invented: the master
    assigns it. ``user`` is the eauth username, or ``"saltapi"`` with a token;
    the master overwrites it with the authenticated name either way.

    :raises ApiError: 401 if the chunk carries no credentials.
    """
    credentials = _credentials(chunk)
    arg = _arg_list(chunk)
    kwarg = chunk.get("kwarg")
    if isinstance(kwarg, dict) and kwarg:
        arg.append({**kwarg, "__kwarg__": True})
    kwargs: dict[str, Any] = {k: chunk[k] for k in PUBLISH_KWARGS_EXTRAS if k in chunk}
    kwargs.update(credentials)
    load: dict[str, Any] = {
        "cmd": "publish",
        "tgt": chunk["tgt"],
        "fun": chunk["fun"],
        "arg": arg,
        "tgt_type": chunk.get("tgt_type") or chunk.get("expr_form") or "glob",
        "ret": chunk.get("ret", ""),
        "user": credentials["username"] if "token" not in credentials else "saltapi",
        "kwargs": kwargs,
    }
    if "jid" in chunk:
        load["jid"] = chunk["jid"]
    return load


def runner_load(chunk: dict) -> dict:
    """The master ``runner`` load for a validated runner-family *chunk*.

    Built from an allowlist: the top level holds only ``cmd`` (always
    ``"runner"``), ``fun``, ``kwarg`` and the credentials (the token if there
    is one, else eauth, username and password). ``kwarg`` is
    ``{"arg": [...], "kwarg": {...}}`` as ``RunnerClient.cmd_async`` sends it;
    the inner ``kwarg`` is the chunk's ``kwarg`` plus every chunk key the API
    does not consume (reserved and ``__`` keys are never copied).

    :raises ApiError: 401 if the chunk carries no credentials.
    """
    credentials = _credentials(chunk)
    keywords = {k: v for k, v in _function_keywords(chunk).items() if not k.startswith("__")}
    load: dict[str, Any] = {
        "cmd": "runner",
        "fun": chunk["fun"],
        "kwarg": {"arg": _arg_list(chunk), "kwarg": keywords},
    }
    load.update(credentials)
    return load


def wheel_load(chunk: dict) -> dict:
    """The master ``wheel`` load for a validated wheel-family *chunk*.

    The master takes wheel keyword arguments as top-level keys of the load, so
    the chunk's ``kwarg`` and every chunk key the API does not consume are
    spread there. The load is still built from an allowlist: ``cmd`` (always
    ``"wheel"``), ``fun`` and the credentials (the token if there is one, else
    eauth, username and password) are set last and cannot be overridden, and
    reserved keys, ``__`` keys, credential keys and ``client``/``fun``/
    ``full_return`` are never copied from the keywords. ``arg`` is sent only
    when non-empty (wheel functions take keywords).

    :raises ApiError: 401 if the chunk carries no credentials.
    """
    credentials = _credentials(chunk)
    load: dict[str, Any] = {
        k: v for k, v in _function_keywords(chunk).items() if k not in _WHEEL_KWARG_FORBIDDEN and not k.startswith("__")
    }
    arg = _arg_list(chunk)
    if arg:
        load["arg"] = arg
    load["cmd"] = "wheel"
    load["fun"] = chunk["fun"]
    load.update(credentials)
    return load


# --------------------------------------------------------------------------
# Internals.


def _is_reserved(key: object) -> bool:
    return isinstance(key, str) and (key in RESERVED_KEYS or key.startswith("__"))


def _show(key: object) -> str:
    text = key if isinstance(key, str) else str(key)
    if len(text) > _MAX_NAME_CHARS:
        text = text[:_MAX_NAME_CHARS] + "..."
    return repr(text)


def _names(keys: Iterable[object]) -> str:
    shown = sorted(_show(k) for k in keys)
    text = ", ".join(shown[:_MAX_NAMES])
    if len(shown) > _MAX_NAMES:
        text += f" and {len(shown) - _MAX_NAMES} more"
    return text


def _invalid(index: int, message: str) -> ApiError:
    return ApiError("invalid_value", f"chunk {index}: {message}")


def _utf8_length(text: str) -> int | None:
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:  # lone surrogates could not be sent
        return None


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _to_float(value: object) -> float | None:
    """A finite float from a number or a plain decimal string, else ``None``."""
    if isinstance(value, str):
        if len(value) > 64 or not _NUMBER_RE.fullmatch(value):
            return None
    elif not _is_number(value):
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (OverflowError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _positive_int(value: object) -> int | None:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if _is_number(value) and isinstance(value, int):
        return value if value >= 1 else None
    if isinstance(value, str) and _DIGITS_RE.fullmatch(value):
        number = int(value)
        return number if number >= 1 else None
    return None


def _check_fun(value: object, allow_list: bool) -> bool:
    if isinstance(value, str):
        return _FUN_RE.fullmatch(value) is not None
    if allow_list and isinstance(value, list) and value:
        return all(isinstance(v, str) and _FUN_RE.fullmatch(v) is not None for v in value)
    return False


def _keyword_dict_problem(kwarg: dict, forbidden: frozenset[str]) -> list[object]:
    return [k for k in kwarg if not isinstance(k, str) or k.startswith("__") or k in forbidden]


class _JidCheck:
    """Decides whether a caller-supplied jid names no existing job (spec §4.2)."""

    def __init__(self, now: float, jid_seen: Callable[[str], bool] | None, bus_connected_since: float | None) -> None:
        self.now = now
        self.jid_seen = jid_seen
        self.bus_connected_since = bus_connected_since
        self.in_request: set[str] = set()

    def problem(self, jid: object) -> str | None:
        if not isinstance(jid, str):
            return "jid must be a string"
        match = _JID_RE.fullmatch(jid)
        if match is None:
            return "jid must be 20 digits, optionally followed by _ and 1-32 letters or digits"
        digits = match.group(1)
        try:
            stamp = datetime(
                int(digits[0:4]),
                int(digits[4:6]),
                int(digits[6:8]),
                int(digits[8:10]),
                int(digits[10:12]),
                int(digits[12:14]),
                int(digits[14:20]),
                tzinfo=UTC,
            ).timestamp()
        except ValueError:
            return "jid does not start with a valid UTC timestamp"
        if abs(stamp - self.now) > JID_WINDOW:
            return f"jid timestamp must lie within {JID_WINDOW:g} s of now"
        since = self.bus_connected_since
        if since is None or since > self.now - JID_WINDOW or self.jid_seen is None:
            return "jid cannot be checked for reuse now (the event bus has not been watched for a minute)"
        if jid in self.in_request or self.jid_seen(jid):
            return "jid names an existing job"
        self.in_request.add(jid)
        return None


def _check_values(index: int, chunk: dict, limits: Limits, jid_check: _JidCheck) -> dict:
    """Check 6 for one chunk; returns its normalised copy."""
    client = chunk["client"]
    local = client in LOCAL_FAMILY
    out = dict(chunk)

    if "fun" not in chunk:
        raise _invalid(index, "fun is required")
    if not _check_fun(chunk["fun"], allow_list=local):
        what = "a function name or a list of them" if local else "a function name"
        rule = f"1-{MAX_FUN_LENGTH} characters of A-Z a-z 0-9 _ . not starting with '.'"
        raise _invalid(index, f"fun must be {what}: {rule}")
    if isinstance(out["fun"], list):
        out["fun"] = list(out["fun"])

    if local:
        if "tgt_type" in chunk:
            tgt_type = chunk["tgt_type"]
            key = "tgt_type"
        else:
            tgt_type = chunk.get("expr_form", "glob")
            key = "expr_form"
        if not isinstance(tgt_type, str) or tgt_type not in TGT_TYPES:
            raise _invalid(index, f"{key} must be one of " + " ".join(sorted(TGT_TYPES)))
        out.pop("expr_form", None)
        out["tgt_type"] = tgt_type

        if "tgt" not in chunk:
            raise _invalid(index, "tgt is required")
        tgt = chunk["tgt"]
        if isinstance(tgt, list):
            if tgt_type != "list":
                raise _invalid(index, "tgt may be a list only with tgt_type list")
            parts = tgt
            out["tgt"] = list(tgt)
        elif isinstance(tgt, str):
            parts = [tgt]
        else:
            raise _invalid(index, "tgt must be a string (or a list of strings with tgt_type list)")
        total = 0
        for part in parts:
            if not isinstance(part, str):
                raise _invalid(index, "tgt list elements must be strings")
            size = _utf8_length(part)
            if size is None:
                raise _invalid(index, "tgt is not valid UTF-8 text")
            if _CONTROL_RE.search(part):
                raise _invalid(index, "tgt must not contain NUL or control characters")
            total += size
        if total > limits.max_tgt_length:
            raise _invalid(index, f"tgt is longer than {limits.max_tgt_length} bytes")

    if "arg" in chunk:
        arg = chunk["arg"]
        out["arg"] = list(arg) if isinstance(arg, list) else [arg]
    elif local:
        out["arg"] = []

    if "kwarg" in chunk:
        kwarg = chunk["kwarg"]
        if not isinstance(kwarg, dict):
            raise _invalid(index, "kwarg must be a mapping")
        wheel = client in WHEEL_FAMILY
        bad = _keyword_dict_problem(kwarg, _WHEEL_KWARG_FORBIDDEN if wheel else frozenset())
        if bad:
            raise ApiError("reserved_key", f"chunk {index}: kwarg keys not allowed: {_names(bad)}")
        out["kwarg"] = dict(kwarg)

    if "timeout" in chunk:
        timeout = _to_float(chunk["timeout"])
        if timeout is None or not 0 < timeout <= MAX_TIMEOUT:
            raise _invalid(index, f"timeout must be a number of seconds above 0 and at most {MAX_TIMEOUT:g}")
        out["timeout"] = timeout

    if "full_return" in chunk:
        flag = _to_bool(chunk["full_return"])
        if flag is None:
            raise _invalid(index, "full_return must be true or false")
        out["full_return"] = flag

    if local:
        _check_local_extras(index, chunk, out, jid_check)

    _check_credentials(index, chunk)
    return out


def _to_bool(value: object) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.lower()
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
    return None


#: A boolean as the API accepts it: true/false, 0/1, or yes/no/true/false/1/0 text (any case); None otherwise.
to_bool = _to_bool


def _check_local_extras(index: int, chunk: dict, out: dict, jid_check: _JidCheck) -> None:
    if "ret" in chunk:
        ret = chunk["ret"]
        if not isinstance(ret, str) or not _RET_RE.fullmatch(ret):
            raise _invalid(index, "ret must be returner names of A-Z a-z 0-9 _ separated by commas")

    if "batch" in chunk:
        batch = chunk["batch"]
        normal: str | None = None
        if isinstance(batch, str) and (match := _PERCENT_RE.fullmatch(batch)):
            percent = int(match.group(1))
            normal = f"{percent}%" if 1 <= percent <= 100 else None
        else:
            size = _positive_int(batch)
            normal = None if size is None else str(size)
        if normal is None:
            raise _invalid(index, "batch must be a whole number from 1, or a percentage '<n>%' (1-100)")
        out["batch"] = normal

    if "batch_wait" in chunk:
        wait = _to_float(chunk["batch_wait"])
        if wait is None or not 0 <= wait <= MAX_TIMEOUT:
            raise _invalid(index, "batch_wait must be a number of seconds from 0 to 86400")
        out["batch_wait"] = wait

    if "subset" in chunk:
        subset = _positive_int(chunk["subset"])
        if subset is None:
            raise _invalid(index, "subset must be a whole number from 1")
        out["subset"] = subset

    if "jid" in chunk:
        problem = jid_check.problem(chunk["jid"])
        if problem is not None:
            raise _invalid(index, problem)


def _check_credentials(index: int, chunk: dict) -> None:
    if "username" in chunk:
        username = chunk["username"]
        size = _utf8_length(username) if isinstance(username, str) else None
        if size is None or len(username) > MAX_USERNAME_LENGTH:
            raise _invalid(index, f"username must be text of at most {MAX_USERNAME_LENGTH} characters")
    if "password" in chunk:
        password = chunk["password"]
        size = _utf8_length(password) if isinstance(password, str) else None
        if size is None or len(password) > MAX_PASSWORD_LENGTH:
            raise _invalid(index, f"password must be text of at most {MAX_PASSWORD_LENGTH} characters")
    if "eauth" in chunk:
        eauth = chunk["eauth"]
        if not isinstance(eauth, str) or not _EAUTH_RE.fullmatch(eauth):
            raise _invalid(index, "eauth must be 1-64 characters of A-Z a-z 0-9 _")


def _has_credentials(chunk: dict) -> bool:
    return "token" in chunk or all(k in chunk for k in ("username", "password", "eauth"))


def _credentials(chunk: dict) -> dict[str, Any]:
    """``{"token": T}`` if the chunk has a token, else eauth, username, password."""
    if "token" in chunk:
        return {"token": chunk["token"]}
    if all(k in chunk for k in ("username", "password", "eauth")):
        return {"eauth": chunk["eauth"], "username": chunk["username"], "password": chunk["password"]}
    raise unauthenticated(NO_CREDENTIALS)


def _arg_list(chunk: dict) -> list:
    arg = chunk.get("arg", [])
    return list(arg) if isinstance(arg, list) else [arg]


def _function_keywords(chunk: dict) -> dict[str, Any]:
    """A runner/wheel chunk's ``kwarg`` plus its unconsumed, non-reserved keys."""
    keywords: dict[str, Any] = {}
    kwarg = chunk.get("kwarg")
    if isinstance(kwarg, dict):
        keywords.update((k, v) for k, v in kwarg.items() if isinstance(k, str))
    keywords.update(
        (k, v) for k, v in chunk.items() if isinstance(k, str) and k not in _CONSUMED_KEYS and not _is_reserved(k)
    )
    return keywords
