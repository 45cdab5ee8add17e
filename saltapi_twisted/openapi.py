"""The OpenAPI 3.1 description of the REST routes, served at ``/openapi.json``.

Written to match what the routes really do, so that a schema-valid request is
accepted and a schema-invalid one refused:

* **Request bodies** are described per media type: JSON (also sent as
  ``text/plain``, as browsers label ``fetch()`` strings), YAML
  (``application/x-yaml``, ``application/yaml``, ``text/yaml``) and forms. A
  form body is one flat chunk whose values are strings (a repeated key gives a
  list), so it gets a schema of its own.
* **Lowstate chunks** (spec §4.2) are a ``oneOf`` on ``client`` (with a
  ``discriminator``): the local family has ``additionalProperties: false``
  with the allowlist of :data:`saltapi_twisted.lowstate.LOCAL_ALLOWED_KEYS`,
  the value rules of the validator (``fun`` pattern, ``tgt_type`` enum,
  ``timeout`` range...) and the ``tgt``/``tgt_type: list`` coupling; runner
  and wheel chunks take any other key as a function keyword except the
  reserved ones. A caller's ``jid`` is not described: it is accepted only
  under conditions a schema cannot state (stamped within 60 s of now, naming no
  job), so the description leaves it out.
* **Responses** list every status the route can answer, each error with the
  ``{"status", "error", "return"}`` body narrowed to that status's error
  words; site-level refusals (408, 413, 431) apply to every operation.

:func:`build` takes the API configuration, when given, so the enabled clients,
the token length (from ``hash_type``), ``max_chunks``, ``max_tgt_length`` and
the ``*_disable_auth`` switches are those of the running server; without it the
defaults are described.

Limits the schema states more narrowly than the server (so generated requests
stay valid): lengths measured in UTF-8 bytes are described as "ASCII up to N
characters, or any text up to N/4"; numeric strings are described without
exponents; numbers sent on to the master are bounded to msgpack's 64-bit
range. The HTTP layer closes a connection whose request line and headers pass
16 KiB, which bounds path parameters before any route rule does.
"""

from __future__ import annotations

import re
from http import HTTPStatus
from typing import Any
from collections.abc import Iterable

from . import __version__
from .config import IMPLEMENTED_CLIENTS
from .errors import ERROR_STATUS
from .lowstate import (
    LOCAL_ALLOWED_KEYS,
    MAX_PASSWORD_LENGTH,
    MAX_TIMEOUT,
    MAX_USERNAME_LENGTH,
    RESERVED_KEYS,
    TGT_TYPES,
)

JSON = "application/json"
YAML = "application/x-yaml"
FORM = "application/x-www-form-urlencoded"
#: Request media types read as JSON, as YAML, as a form.
JSON_TYPES = (JSON, "text/plain")
YAML_TYPES = (YAML, "application/yaml", "text/yaml")
#: Response media types (``Accept`` negotiation).
RESPONSE_TYPES = (JSON, YAML)
SSE = "text/event-stream"
NULL = {"type": "null"}

# --------------------------------------------------------------------------
# Patterns (ECMA-262, as JSON Schema reads them). Each mirrors a rule of
# lowstate.py, app.py or hook.py.

#: Cores of the value rules, unanchored (``{END}`` marks the end of the value): :func:`_text` anchors them.
FUN_CORE = r"[A-Za-z0-9_][A-Za-z0-9_.]{0,255}"
#: Runner and wheel functions: the master refuses anything but ``<module>.<function>``.
MODULE_FUN_CORE = r"(?=[A-Za-z0-9_.]{1,256}{END})[A-Za-z0-9_]+\.[A-Za-z0-9_]*"
RET_CORE = r"[A-Za-z0-9_,]*"
EAUTH_CORE = r"[A-Za-z0-9_]{1,64}"
#: A decimal in (0, 86400], without exponent.
TIMEOUT_CORE = r"(?:[1-9][0-9]{0,3}|[1-7][0-9]{4}|8[0-5][0-9]{3})(?:\.[0-9]{1,6})?|86400"
#: A decimal in [0, 86400], without exponent.
WAIT_CORE = r"(?:[0-9]{1,4}|[1-7][0-9]{4}|8[0-5][0-9]{3})(?:\.[0-9]{1,6})?|86400"
#: A decimal >= 1, without exponent.
POSITIVE_CORE = r"[1-9][0-9]{0,9}(?:\.[0-9]{1,6})?"
BOOL_CORE = r"[Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee]|[Yy][Ee][Ss]|[Nn][Oo]|[01]"
#: 1-18 digits, not all zeros.
POSITIVE_INT_CORE = r"(?=[0-9]{1,18}{END})0*[1-9][0-9]*"
PERCENT_CORE = r"(?:0{0,2}[1-9]|0?[1-9][0-9]|100)%"

#: What the form loader takes off a value's ends: the control characters it
#: first turns into spaces, then what ``str.strip()`` removes.
FORM_STRIPPED = r"[\x00-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"

JID_PATTERN = r"^[0-9]{20}(?:_[A-Za-z0-9]{1,32})?$"
NO_CONTROL_PATTERN = r"^[^\x00-\x1f\x7f]*$"
ASCII_PRINTABLE_PATTERN = r"^[\x20-\x7e]*$"
#: A form value with no control character once the loader is done: controls
#: other than TAB-CR become spaces, both ends are stripped.
FORM_NO_CONTROL_PATTERN = f"^{FORM_STRIPPED}*" + r"[^\x09-\x0d\x7f]*" + f"{FORM_STRIPPED}*$"
FORM_ASCII_PATTERN = r"^[\x00-\x20]*[\x00-\x08\x0e-\x7e]*[\x00-\x20]*$"
#: Form values are stripped: a credential must keep a character that is not
#: whitespace (nor a control character, which the form loader turns into a space).
NON_BLANK_PATTERN = r"[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]"
#: A path segment: no ``/`` (``%2F`` is decoded before routing), not ``.`` or
#: ``..`` (clients collapse them).
MINION_PATTERN = r"^(?!\.\.?$)[^/\x00-\x1f\x7f]+$"
#: ``/keys/<mid>``: also no backslash.
KEY_MID_ASCII_PATTERN = r"^(?!\.\.?$)[\x20-\x2e\x30-\x5b\x5d-\x7e]+$"
KEY_MID_PATTERN = r"^(?!\.\.?$)[^/\\\x00-\x1f\x7f]+$"
HOOK_SEGMENT_PATTERN = r"^(?!\.\.?$)[A-Za-z0-9._~:@+=,-]+$"

#: The integers msgpack carries to the master (int64 / uint64).
MIN_WIRE_INT = -(2**63)
MAX_WIRE_INT = 2**64 - 1
MAX_KEY_MID_BYTES = 255
MAX_TAG_PATTERNS = 10
MAX_TAG_PATTERN_LENGTH = 256

LOGOUT_MESSAGE = "Your token has been cleared"

# --------------------------------------------------------------------------
# Errors and responses.

#: Refusals of the HTTP layer (web/site.py), answered before any route runs.
SITE_ERRORS = {"request_timeout": 408, "payload_too_large": 413, "header_too_large": 431}

#: status -> the error words it carries, from errors.ERROR_STATUS and the site.
ERROR_WORDS: dict[int, list[str]] = {}
for _word, _status in {**SITE_ERRORS, **ERROR_STATUS}.items():
    ERROR_WORDS.setdefault(_status, []).append(_word)

#: Why each status is answered (the response descriptions).
STATUS_REASONS = {
    400: "Bad request: an empty, malformed or unbounded body, a chunk refused by validation (spec §4.2), "
    "a bad path or query parameter, or a disabled client",
    401: "No, malformed, unknown, expired or revoked token, or bad credentials",
    403: "The master refused the call for this user (`forbidden`), or a cross-site POST authenticated only "
    "by the session cookie (`csrf`)",
    404: "Not found",
    406: "No type in `Accept` can be served",
    408: "The request body did not arrive in time (the connection is closed)",
    409: "A key for that minion id is already accepted (send `force`)",
    413: "The request body is over `max_request_body_size` (the connection is closed)",
    415: "Missing or unsupported `Content-Type`",
    429: "Rate limited; retry after `Retry-After` seconds",
    431: "The request line or a header field is over 16 KiB (the connection is closed)",
    500: "Unexpected error",
    502: "The master answered with an error",
    503: "The master is unavailable, or the API is shutting down; retry after `Retry-After` seconds",
    504: "The master did not answer in time",
}

#: Statuses every operation can answer: negotiation, site limits, crashes, shutdown.
BASE_STATUSES = (406, 408, 413, 431, 500, 503)
#: Statuses of an operation that checks a token or otherwise talks to the master.
MASTER_STATUSES = (401, 502, 503, 504)

RETRY_AFTER = {"description": "Seconds to wait", "required": True, "schema": {"type": "string", "pattern": r"^[0-9]+$"}}
WWW_AUTHENTICATE = {"description": "Always `Session`", "required": True, "schema": {"const": "Session"}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _content(schema: dict[str, Any], types: Iterable[str] = RESPONSE_TYPES) -> dict[str, Any]:
    return {media: {"schema": schema} for media in types}


def _error_response(status: int) -> dict[str, Any]:
    return {"$ref": f"#/components/responses/Error{status}"}


def _error_response_components() -> dict[str, Any]:
    return {f"Error{status}": _error_response_body(status) for status in sorted(ERROR_WORDS)}


def _error_response_body(status: int) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": STATUS_REASONS.get(status, HTTPStatus(status).phrase),
        "content": _content(_ref(f"Error{status}")),
    }
    if status == 401:
        response["headers"] = {"WWW-Authenticate": WWW_AUTHENTICATE}
    elif status in (429, 503):
        response["headers"] = {"Retry-After": RETRY_AFTER}
    return response


def _ok(schema: dict[str, Any], description: str = "OK", headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": _content(schema)}
    if headers:
        response["headers"] = headers
    return response


def _responses(success: dict[str, Any], *statuses: int) -> dict[str, Any]:
    codes = sorted(set(BASE_STATUSES) | set(statuses))
    responses = dict(success)
    for code in codes:
        responses.setdefault(str(code), _error_response(code))
    return responses


def _error_schemas() -> dict[str, Any]:
    schemas: dict[str, Any] = {
        "Error": {
            "type": "object",
            "description": "The body of every application error (spec §3.4).",
            "required": ["status", "error", "return"],
            "additionalProperties": False,
            "properties": {
                "status": {"type": "string", "pattern": r"^[1-5][0-9]{2} ", "description": "`<code> <reason>`"},
                "error": {"type": "string", "enum": sorted({*SITE_ERRORS, *ERROR_STATUS})},
                "return": {"type": "string", "description": "A human-readable message"},
            },
        }
    }
    for status, words in sorted(ERROR_WORDS.items()):
        schemas[f"Error{status}"] = {
            "allOf": [_ref("Error")],
            "properties": {
                "status": {"const": f"{status} {HTTPStatus(status).phrase}"},
                "error": {"enum": sorted(words)},
            },
        }
    return schemas


# --------------------------------------------------------------------------
# Lowstate.


class _Settings:
    """The configuration values the description depends on."""

    def __init__(self, config: Any = None) -> None:
        master = getattr(config, "master", None)
        enabled = getattr(master, "enabled_clients", None)
        self.enabled: tuple[str, ...] = tuple(enabled) if enabled is not None else tuple(IMPLEMENTED_CLIENTS)
        self.token_length: int = int(getattr(master, "token_length", 64))
        self.max_chunks: int = int(getattr(config, "max_chunks", 100))
        self.max_tgt_length: int = int(getattr(config, "max_tgt_length", 65536))
        self.webhook_disable_auth = bool(getattr(config, "webhook_disable_auth", False))
        self.stats_disable_auth = bool(getattr(config, "stats_disable_auth", False))
        self.metrics_disable_auth = bool(getattr(config, "metrics_disable_auth", False))


def _text(core: str, form: bool, **extra: Any) -> dict[str, Any]:
    """A string matching *core* whole; in a form, with what the form loader strips around it."""
    if form:
        end = f"{FORM_STRIPPED}*$"
        pattern = f"^{FORM_STRIPPED}*(?:{core.replace('{END}', end)}){end}"
    else:
        pattern = f"^(?:{core.replace('{END}', '$')})$"
    return {"type": "string", "pattern": pattern, **extra}


def _one_of_words(words: Iterable[str], form: bool) -> dict[str, Any]:
    """One of *words* (an enum; in a form, a pattern that allows what the loader strips)."""
    ordered = sorted(words)
    if not form:
        return {"type": "string", "enum": ordered}
    return _text("|".join(re.escape(word) for word in ordered), form)


def _token_schema(settings: _Settings, form: bool = False) -> dict[str, Any]:
    return _text(
        f"[0-9a-f]{{{settings.token_length}}}",
        form,
        description="A Salt eauth token: the hex digest length of the master's `hash_type`, lowercase",
    )


def _credential_properties(settings: _Settings, form: bool) -> dict[str, Any]:
    return {
        "token": _token_schema(settings, form),
        "username": {"type": "string", "maxLength": MAX_USERNAME_LENGTH},
        "password": {"type": "string", "maxLength": MAX_PASSWORD_LENGTH},
        "eauth": _text(EAUTH_CORE, form),
    }


def _bounded_text(max_bytes: int, form: bool) -> dict[str, Any]:
    """A string of at most *max_bytes* UTF-8 bytes and no control character."""
    return {
        "anyOf": [
            {
                "type": "string",
                "pattern": FORM_ASCII_PATTERN if form else ASCII_PRINTABLE_PATTERN,
                "maxLength": max_bytes,
            },
            {
                "type": "string",
                "pattern": FORM_NO_CONTROL_PATTERN if form else NO_CONTROL_PATTERN,
                "maxLength": max_bytes // 4,
            },
        ]
    }


def _tgt_schema(settings: _Settings, form: bool) -> dict[str, Any]:
    many: dict[str, Any] = {"type": "array", "items": _bounded_text(settings.max_tgt_length, form)}
    if form:
        many["minItems"] = 1  # no field at all is no target
    return {
        "description": "The target: a string with no control characters, or a list of them with "
        f"`tgt_type: list`; at most `max_tgt_length` ({settings.max_tgt_length}) UTF-8 bytes in all (the items "
        "together)",
        "anyOf": [_bounded_text(settings.max_tgt_length, form), many],
    }


def _tgt_coupling(form: bool) -> list[dict[str, Any]]:
    """A list ``tgt`` needs an effective ``tgt_type`` of ``list`` (``expr_form`` counts when ``tgt_type`` is absent)."""
    is_list = _one_of_words(["list"], form)
    return [
        {"properties": {"tgt": {"type": "string"}}},
        {"required": ["tgt_type"], "properties": {"tgt_type": is_list}},
        {"not": TGT_TYPE_GIVEN, "required": ["expr_form"], "properties": {"expr_form": is_list}},
    ]


#: ``tgt_type`` is given (not absent, not null).
TGT_TYPE_GIVEN = {"required": ["tgt_type"], "properties": {"tgt_type": {"type": "string"}}}


def _expr_form_rule(form: bool) -> list[dict[str, Any]]:
    """``expr_form`` is read only when ``tgt_type`` is not given (a null one counts as absent)."""
    expr_form = _one_of_words(TGT_TYPES, form)
    if not form:
        expr_form = {"anyOf": [expr_form, NULL]}
    return [TGT_TYPE_GIVEN, {"properties": {"expr_form": expr_form}}]


def _timeout_schema(form: bool) -> dict[str, Any]:
    text = _text(TIMEOUT_CORE, form)
    description = f"Seconds, above 0 and at most {MAX_TIMEOUT:g}; a number or a numeric string"
    if form:
        return {**text, "description": description}
    return {
        "description": description,
        "anyOf": [{"type": "number", "exclusiveMinimum": 0, "maximum": MAX_TIMEOUT}, text],
    }


def _bool_schema(form: bool) -> dict[str, Any]:
    text = _text(BOOL_CORE, form)
    description = "A boolean, 0/1, or true/false/yes/no/1/0 (any case)"
    if form:
        return {**text, "description": description}
    return {"description": description, "anyOf": [{"type": "boolean"}, {"enum": [0, 1]}, text]}


def _positive_int_schema(form: bool) -> dict[str, Any]:
    text = _text(POSITIVE_INT_CORE, form)
    if form:
        return text
    return {"anyOf": [{"type": "integer", "minimum": 1, "maximum": MAX_WIRE_INT}, text]}


def _batch_schema(form: bool) -> dict[str, Any]:
    texts = [_text(POSITIVE_INT_CORE, form), _text(PERCENT_CORE, form)]
    return {
        "description": "Minions per window: a whole number from 1, or a percentage `<n>%` (1-100)",
        "anyOf": texts if form else [{"type": "integer", "minimum": 1}, *texts],
    }


def _wait_schema(form: bool) -> dict[str, Any]:
    text = _text(WAIT_CORE, form)
    if form:
        return text
    return {"anyOf": [{"type": "number", "minimum": 0, "maximum": MAX_TIMEOUT}, text]}


def _fun_schema(allow_list: bool, form: bool) -> dict[str, Any]:
    if not allow_list:
        return _text(MODULE_FUN_CORE, form, description="`<module>.<function>`")
    one = _text(FUN_CORE, form, description="A function name")
    many: dict[str, Any] = {"type": "array", "minItems": 1, "items": one}
    return {"anyOf": [one, many], "description": "A function name, or a list of them (compound command)"}


def _kwarg_schema(forbidden: Iterable[str]) -> dict[str, Any]:
    names = sorted(forbidden)
    key_rule: dict[str, Any] = {"pattern": "^__"}
    if names:
        key_rule = {"anyOf": [key_rule, {"enum": names}]}
    return {
        "type": "object",
        "additionalProperties": VALUE,
        "description": "Keyword arguments; no key may start with `__`"
        + (f" or be one of {', '.join(names)}" if names else ""),
        "propertyNames": {"not": key_rule},
    }


def _value_schema() -> dict[str, Any]:
    """Any JSON value; the description states what JSON Schema cannot (integer literals past 64 bits)."""
    return {
        "description": "Any JSON value. Values travel to the master as msgpack: an integer literal must lie in "
        f"[{MIN_WIRE_INT}, {MAX_WIRE_INT}] (a float may be any finite number) and strings must be valid Unicode "
        "(no lone surrogates).",
        "anyOf": [
            {"type": ["string", "number", "boolean", "null"]},
            {"type": "array", "items": _ref("Value")},
            {"type": "object", "additionalProperties": _ref("Value")},
        ],
    }


VALUE = _ref("Value")


def _absent_if_null(properties: dict[str, Any], keep: Iterable[str]) -> dict[str, Any]:
    """Chunk keys whose ``null`` means "absent" (salt-pepper sends unset options so): all but *keep*."""
    kept = set(keep)
    out: dict[str, Any] = {}
    for name, schema in properties.items():
        if name in kept or schema is False or schema == VALUE:
            out[name] = schema
        else:
            out[name] = {"anyOf": [schema, NULL]}
    return out


def _form_text_list() -> dict[str, Any]:
    return {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}


def _local_chunk(
    clients: list[str], extra: Iterable[str], settings: _Settings, form: bool, client_required: bool = True
) -> dict[str, Any]:
    """A local-family chunk: the allowlist, nothing else."""
    any_value = {"type": "string"} if form else VALUE
    properties: dict[str, Any] = {
        "client": _one_of_words(clients, form),
        "tgt": _tgt_schema(settings, form),
        "fun": _fun_schema(True, form),
        "arg": _form_text_list() if form else {**VALUE, "description": "Positional arguments; a non-list is wrapped"},
        "tgt_type": {**_one_of_words(TGT_TYPES, form), "description": "How `tgt` is matched (default `glob`)"},
        "expr_form": {"description": "Alias of `tgt_type`, read only when `tgt_type` is absent"},
        "ret": _text(RET_CORE, form, description="Returners, comma-separated"),
        "ret_config": any_value,
        "ret_kwargs": any_value,
        "metadata": any_value,
        "timeout": _timeout_schema(form),
        "full_return": _bool_schema(form),
        **_credential_properties(settings, form),
    }
    if not form:  # a form value is a string, never a mapping
        properties["kwarg"] = _kwarg_schema(())
    if "batch" in extra:
        properties["batch"] = _batch_schema(form)
    if "batch_wait" in extra:
        properties["batch_wait"] = {
            **_wait_schema(form),
            "description": f"Seconds between window starts, 0 to {MAX_TIMEOUT:g}",
        }
    if "subset" in extra:
        properties["subset"] = {**_positive_int_schema(form), "description": "How many minions to run on"}
    allowed = set().union(*(LOCAL_ALLOWED_KEYS[c] for c in clients)) - {"jid"}
    if form:
        allowed.discard("kwarg")
    missing = allowed - set(properties)
    if missing:  # lowstate.py grew a key this description does not know
        raise RuntimeError(f"openapi: no schema for chunk keys {sorted(missing)}")
    required = ["tgt", "fun"]
    if client_required:
        required.insert(0, "client")
    properties = {k: v for k, v in properties.items() if k in allowed}
    rules = {"allOf": [{"anyOf": _tgt_coupling(form)}, {"anyOf": _expr_form_rule(form)}]}
    if form:
        return {
            "type": "object",
            "required": required,
            "properties": properties,
            "additionalProperties": False,
            **rules,
        }
    return {
        "type": "object",
        "description": "Only these keys; a key whose value is `null` counts as absent.",
        "required": required,
        "properties": _absent_if_null(properties, ("client", "tgt", "fun")),
        "additionalProperties": NULL,
        **rules,
    }


def _function_chunk(clients: list[str], wheel: bool, settings: _Settings, form: bool) -> dict[str, Any]:
    """A runner or wheel chunk: other keys are function keywords."""
    forbidden_kwarg = (
        set(RESERVED_KEYS) | {"client", "fun", "full_return", "token", "username", "password", "eauth"}
        if wheel
        else set()
    )
    properties: dict[str, Any] = {
        "client": _one_of_words(clients, form),
        "fun": _fun_schema(False, form),
        "arg": _form_text_list() if form else {**VALUE, "description": "Positional arguments; a non-list is wrapped"},
        "timeout": _timeout_schema(form),
        "full_return": _bool_schema(form),
        **_credential_properties(settings, form),
    }
    if not form:
        properties["kwarg"] = _kwarg_schema(forbidden_kwarg)
        properties = _absent_if_null(properties, ("client", "fun"))
    # A reserved key is refused, unless null (absent).
    refused: Any = False if form else NULL
    for key in sorted(RESERVED_KEYS):
        properties[key] = refused
    return {
        "type": "object",
        "required": ["client", "fun"],
        "description": "Keys other than those listed are passed to the function as keyword arguments; "
        "reserved keys and keys starting with `__` are refused (a key whose value is `null` counts as absent).",
        "properties": properties,
        "patternProperties": {"^__": refused},
        "additionalProperties": _form_text_list() if form else VALUE,
    }


def _chunk_components(settings: _Settings) -> dict[str, Any]:
    """Component schemas for every chunk kind, JSON/YAML and form."""
    enabled: list[str] = [c for c in IMPLEMENTED_CLIENTS if c in settings.enabled]

    def only(*clients: str) -> list[str]:
        return [c for c in clients if c in enabled]

    families: dict[str, tuple[list[str], tuple[str, ...]]] = {
        "LocalChunk": (only("local", "local_async"), ()),
        "LocalBatchChunk": (only("local_batch"), ("batch", "batch_wait")),
        "LocalSubsetChunk": (only("local_subset"), ("subset",)),
    }
    schemas: dict[str, Any] = {"Value": _value_schema()}
    mapping: dict[str, str] = {}
    form_refs: list[dict[str, str]] = []
    for name, (clients, extra) in families.items():
        if not clients:
            continue
        schemas[name] = _local_chunk(clients, extra, settings, form=False)
        schemas[name + "Form"] = _local_chunk(clients, extra, settings, form=True)
        form_refs.append(_ref(name + "Form"))
        mapping.update({c: f"#/components/schemas/{name}" for c in clients})
    for name, clients, wheel in (
        ("RunnerChunk", only("runner", "runner_async"), False),
        ("WheelChunk", only("wheel", "wheel_async"), True),
    ):
        if not clients:
            continue
        schemas[name] = _function_chunk(clients, wheel, settings, form=False)
        schemas[name + "Form"] = _function_chunk(clients, wheel, settings, form=True)
        form_refs.append(_ref(name + "Form"))
        mapping.update({c: f"#/components/schemas/{name}" for c in clients})
    refs = [_ref(n) for n in dict.fromkeys(v.rsplit("/", 1)[1] for v in mapping.values())]
    if refs:
        schemas["Chunk"] = {
            "description": "One lowstate chunk; `client` decides which keys it may carry (spec §4.2, §4.4).",
            "oneOf": refs,
            "discriminator": {"propertyName": "client", "mapping": mapping},
        }
        schemas["ChunkForm"] = {"oneOf": form_refs}
    else:
        schemas["Chunk"] = schemas["ChunkForm"] = {"not": {}, "description": "No client is enabled"}
    schemas["Lowstate"] = {
        "description": "One chunk, or a list of 1 to `max_chunks` chunks; all are validated before any runs.",
        "oneOf": [
            _ref("Chunk"),
            {"type": "array", "minItems": 1, "maxItems": settings.max_chunks, "items": _ref("Chunk")},
        ],
    }
    if "local_async" in enabled:
        minion = _local_chunk(["local_async"], (), settings, form=False, client_required=False)
        minion_form = _local_chunk(["local_async"], (), settings, form=True, client_required=False)
        schemas["MinionsChunk"] = minion
        schemas["MinionsChunkForm"] = minion_form
    else:
        schemas["MinionsChunk"] = schemas["MinionsChunkForm"] = {"not": {}, "description": "local_async is disabled"}
    schemas["MinionsLowstate"] = {
        "description": "`local_async` chunks (`client` may be left out; any other client is refused).",
        "oneOf": [
            _ref("MinionsChunk"),
            {"type": "array", "minItems": 1, "maxItems": settings.max_chunks, "items": _ref("MinionsChunk")},
        ],
    }
    return schemas


def _credentials_components() -> dict[str, Any]:
    def single(schema: dict[str, Any]) -> dict[str, Any]:
        return {"anyOf": [schema, {"type": "array", "minItems": 1, "maxItems": 1, "items": schema}]}

    credentials = {
        "type": "object",
        "description": "Other keys are ignored. A value may also be a one-item list.",
        "required": ["username", "password", "eauth"],
        "properties": {
            "username": single({"type": "string", "minLength": 1, "maxLength": MAX_USERNAME_LENGTH}),
            "password": single({"type": "string", "maxLength": MAX_PASSWORD_LENGTH}),
            "eauth": single(_text(EAUTH_CORE, False)),
            "token_expire": {
                "description": "Requested lifetime in seconds; the master honours it per `token_expire_user_override`",
                "anyOf": [
                    {"type": "number", "exclusiveMinimum": 0, "maximum": 1e10},
                    _text(POSITIVE_CORE, False),
                    NULL,
                ],
            },
        },
    }
    credentials_form = {
        "type": "object",
        "description": "Other fields are ignored.",
        "required": ["username", "password", "eauth"],
        "properties": {
            "username": {"type": "string", "maxLength": MAX_USERNAME_LENGTH, "pattern": NON_BLANK_PATTERN},
            "password": {"type": "string", "maxLength": MAX_PASSWORD_LENGTH},
            "eauth": _text(EAUTH_CORE, True),
            "token_expire": _text(POSITIVE_CORE, True),
        },
        "additionalProperties": {"type": "string"},
    }
    return {
        "Credentials": credentials,
        "CredentialsBody": {
            "oneOf": [
                _ref("Credentials"),
                {"type": "array", "minItems": 1, "maxItems": 1, "items": _ref("Credentials")},
            ]
        },
        "CredentialsForm": credentials_form,
    }


def _response_components(settings: _Settings) -> dict[str, Any]:
    token = _token_schema(settings)
    return {
        "LoginEntry": {
            "type": "object",
            "required": ["token", "expire", "start", "user", "eauth", "perms"],
            "properties": {
                "token": token,
                "expire": {"type": "number", "description": "Epoch seconds"},
                "start": {"type": "number", "description": "Epoch seconds"},
                "user": {"type": "string"},
                "eauth": {"type": "string"},
                "perms": {"type": "array", "description": "From `external_auth`: strings first, then the rest"},
            },
        },
        "Login": {
            "type": "object",
            "required": ["return"],
            "properties": {"return": {"type": "array", "minItems": 1, "maxItems": 1, "items": _ref("LoginEntry")}},
        },
        "TokenEntry": {
            "type": "object",
            "required": ["token", "start", "expire", "name", "eauth"],
            "properties": {
                "token": token,
                "start": {"type": "number"},
                "expire": {"type": "number"},
                "name": {"type": "string"},
                "eauth": {"type": "string"},
            },
        },
        "Results": {
            "type": "object",
            "description": "One entry per chunk that ran (a chunk of `local_batch` gives one per window). "
            "A synchronous `local` entry is `{minion: return}` or the no-minions string; an async entry is "
            '`{"jid", "minions"}` (`{}` when nothing matched); a failed chunk after the first gives '
            '`"Failed to authenticate"` or `"Unexpected exception while handling request: ..."`.',
            "required": ["return"],
            "additionalProperties": False,
            "properties": {"return": {"type": "array"}},
        },
        "Published": {
            "type": "object",
            "required": ["return", "_links"],
            "additionalProperties": False,
            "properties": {
                "return": {
                    "type": "array",
                    "items": {
                        "anyOf": [
                            {
                                "type": "object",
                                "required": ["jid", "minions"],
                                "properties": {
                                    "jid": {"type": "string", "pattern": JID_PATTERN},
                                    "minions": {"type": "array", "items": {"type": "string"}},
                                },
                            },
                            {"type": "object", "maxProperties": 0, "description": "No minion matched"},
                            {"type": "string", "description": "A chunk after the first that failed"},
                        ]
                    },
                },
                "_links": {
                    "type": "object",
                    "required": ["jobs"],
                    "properties": {
                        "jobs": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["href"],
                                "properties": {"href": {"type": "string", "pattern": r"^/jobs/[0-9]{20}"}},
                            },
                        }
                    },
                },
            },
        },
        "Health": {
            "type": "object",
            "required": ["status", "request_channel", "event_bus", "tls"],
            "additionalProperties": False,
            "properties": {
                "status": {"enum": ["ok", "unavailable"]},
                "request_channel": {"enum": ["up", "down"]},
                "event_bus": {"enum": ["up", "down"]},
                "tls": {"type": "boolean"},
            },
        },
        "Stats": {
            "type": "object",
            "required": ["saltapi_twisted"],
            "properties": {
                "saltapi_twisted": {
                    "type": "object",
                    "required": ["version", "uptime", "requests_by_status", "streams", "master"],
                    "properties": {
                        "version": {"type": "string"},
                        "uptime": {"type": "number"},
                        "requests_by_status": {"type": "object", "additionalProperties": {"type": "integer"}},
                        "logins": {"type": "object"},
                        "streams": {"type": "integer"},
                        "connections": {"type": "object"},
                        "master": {"type": "object"},
                    },
                }
            },
        },
    }


# --------------------------------------------------------------------------
# Operations.

TOKEN_SECURITY: list[dict[str, list[str]]] = [{"X-Auth-Token": []}, {"session_id": []}]


def _security(disabled: bool) -> list[dict[str, list[str]]]:
    return [] if disabled else TOKEN_SECURITY


def _body(
    json_schema: dict[str, Any],
    form_schema: dict[str, Any],
    required: bool = True,
    examples: dict[str, Any] | None = None,
) -> dict[str, Any]:
    content: dict[str, Any] = {}
    for media in JSON_TYPES + YAML_TYPES:
        content[media] = {"schema": json_schema}
        if examples and media in (JSON, YAML):
            content[media]["examples"] = examples
    content[FORM] = {"schema": form_schema}
    return {"required": required, "content": content}


def _op(op_id: str, summary: str, responses: dict[str, Any], security: list[Any], **extra: Any) -> dict[str, Any]:
    operation: dict[str, Any] = {"operationId": op_id, "summary": summary, "security": security}
    operation.update(extra)
    operation["responses"] = responses
    return operation


def _options(op_id: str, parameters: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    headers = {
        "Access-Control-Allow-Methods": {"required": True, "schema": {"const": "OPTIONS, GET, POST"}},
        "Access-Control-Expose-Headers": {"required": True, "schema": {"const": "X-Auth-Token"}},
        "Access-Control-Allow-Headers": {
            "description": "The requested headers the API accepts (only when `Access-Control-Request-Headers` "
            "was sent)",
            "schema": {"type": "string"},
        },
    }
    operation: dict[str, Any] = {
        "operationId": op_id,
        "summary": "CORS preflight (answered on every REST route, with or without `cors_origin`)",
        "security": [],
        "parameters": [
            *(parameters or []),
            {"name": "Access-Control-Request-Headers", "in": "header", "required": False, "schema": {"type": "string"}},
        ],
        "responses": _responses({"204": {"description": "No content", "headers": headers}}),
    }
    return operation


def _path_param(name: str, schema: dict[str, Any], description: str, example: str | None = None) -> dict[str, Any]:
    parameter = {"name": name, "in": "path", "required": True, "schema": schema, "description": description}
    if example is not None:
        parameter["example"] = example
    return parameter


def _segment(name: str) -> dict[str, Any]:
    """``OPTIONS`` reads nothing of the path: any value is answered."""
    return _path_param(name, {"type": "string"}, "Anything (not read)")


def _minion_param(settings: _Settings) -> dict[str, Any]:
    return _path_param(
        "mid",
        {"type": "string", "pattern": MINION_PATTERN},
        "A minion id or glob: no control characters, at most `max_tgt_length` "
        f"({settings.max_tgt_length}) UTF-8 bytes (the whole request line must fit in 16 KiB)",
        "minion-1",
    )


def _key_mid_param() -> dict[str, Any]:
    return _path_param(
        "mid",
        {
            "anyOf": [
                {"type": "string", "pattern": KEY_MID_ASCII_PATTERN, "maxLength": MAX_KEY_MID_BYTES},
                {"type": "string", "pattern": KEY_MID_PATTERN, "maxLength": MAX_KEY_MID_BYTES // 4},
            ]
        },
        "A minion id: 1-255 UTF-8 bytes, no `/`, `\\`, NUL or control characters, not `.` or `..`",
        "minion-1",
    )


FORMAT_PARAM = {
    "name": "format",
    "in": "query",
    "required": False,
    "description": '`cherrypy` gives rest_cherrypy\'s `{"info": [...], "return": [{minion: return}]}` for one '
    "job; the default is the block key `jobs_format`. No other query parameter is accepted.",
    "schema": {"type": "string", "enum": ["tornado", "cherrypy"]},
}

LOWSTATE_EXAMPLES = {
    "ping": {"summary": "Ping every minion", "value": {"client": "local", "tgt": "*", "fun": "test.ping"}},
    "echo": {
        "summary": "Two chunks: a synchronous and an asynchronous one",
        "value": [
            {"client": "local", "tgt": "minion-1", "fun": "test.echo", "arg": ["hello"], "timeout": 30},
            {"client": "local_async", "tgt": "minion-*", "fun": "test.arg", "arg": [1], "kwarg": {"a": "b"}},
        ],
    },
    "list": {
        "summary": "A list target",
        "value": {"client": "local", "tgt": ["minion-1", "minion-2"], "tgt_type": "list", "fun": "test.version"},
    },
    "runner": {"summary": "A runner", "value": {"client": "runner", "fun": "jobs.list_jobs"}},
}


def _lowstate_paths(settings: _Settings) -> dict[str, Any]:
    lowstate_statuses = (400, 403, 415, *MASTER_STATUSES)
    results = _ok(_ref("Results"), "One entry per chunk that ran")
    run_examples = {
        "credentials": {
            "summary": "A chunk with its own credentials",
            "value": {
                "client": "local",
                "tgt": "*",
                "fun": "test.ping",
                "username": "alice",
                "password": "secret",
                "eauth": "pam",
            },
        }
    }
    minions_examples = {"ping": {"summary": "Start test.ping", "value": {"tgt": "*", "fun": "test.ping"}}}
    location = {"Location": {"description": "`/jobs/<jid>` of the first job started", "schema": {"type": "string"}}}
    published = _ok(_ref("Published"), "The jobs started", location)
    published["links"] = {
        "job": {
            "operationId": "jobs_one_get",
            "parameters": {"jid": "$response.body#/return/0/jid"},
            "description": "The first job started",
        }
    }
    return {
        "/": {
            "get": _op(
                "root_get",
                "Capabilities: the enabled clients",
                _responses(
                    {
                        "200": _ok(
                            {
                                "type": "object",
                                "required": ["return", "clients"],
                                "additionalProperties": False,
                                "properties": {
                                    "return": {"const": "Welcome"},
                                    "clients": {
                                        "type": "array",
                                        "items": {"enum": list(IMPLEMENTED_CLIENTS)},
                                        "uniqueItems": True,
                                    },
                                },
                            }
                        )
                    }
                ),
                [],
            ),
            "post": _op(
                "root_post",
                "Run lowstate chunks",
                _responses({"200": results}, *lowstate_statuses),
                TOKEN_SECURITY,
                description="The header or cookie token is injected into every chunk without a `token`; "
                "a chunk's own `token` wins. Every chunk is validated before any runs.",
                requestBody=_body(_ref("Lowstate"), _ref("ChunkForm"), examples=LOWSTATE_EXAMPLES),
            ),
            "options": _options("root_options"),
        },
        "/run": {
            "post": _op(
                "run_post",
                "Run chunks carrying their own credentials",
                _responses({"200": results}, *lowstate_statuses),
                [{}, *TOKEN_SECURITY],
                description="Each chunk carries a `token` or `username`, `password` and `eauth`; a header or "
                "cookie token is optional and injected into chunks without a `token`. A chunk without "
                "credentials gets 401 before anything runs.",
                requestBody=_body(_ref("Lowstate"), _ref("ChunkForm"), examples=run_examples),
            ),
            "options": _options("run_options"),
        },
        "/minions": {
            "get": _op(
                "minions_get",
                "Grains of every minion (`local` `grains.items` on `*`)",
                _responses({"200": results}, 400, 403, *MASTER_STATUSES),
                TOKEN_SECURITY,
            ),
            "post": _op(
                "minions_post",
                "Start `local_async` jobs",
                _responses({"202": published}, *lowstate_statuses),
                TOKEN_SECURITY,
                requestBody=_body(_ref("MinionsLowstate"), _ref("MinionsChunkForm"), examples=minions_examples),
            ),
            "options": _options("minions_options"),
        },
        "/minions/": {
            "get": _op(
                "minions_slash_get",
                "Grains of every minion (as `/minions`)",
                _responses({"200": results}, 400, 403, *MASTER_STATUSES),
                TOKEN_SECURITY,
            ),
            "post": _op(
                "minions_slash_post",
                "Start `local_async` jobs (as `POST /minions`)",
                _responses({"202": published}, *lowstate_statuses),
                TOKEN_SECURITY,
                requestBody=_body(_ref("MinionsLowstate"), _ref("MinionsChunkForm")),
            ),
            "options": _options("minions_slash_options"),
        },
        "/minions/{mid}": {
            "get": _op(
                "minions_one_get",
                "Grains of the matching minions (`local` `grains.items`, glob)",
                _responses({"200": results}, 400, 403, *MASTER_STATUSES),
                TOKEN_SECURITY,
                parameters=[_minion_param(settings)],
            ),
            "options": _options("minions_one_options", [_segment("mid")]),
        },
    }


def _job_paths() -> dict[str, Any]:
    jobs_ok = _ok(_ref("Results"), '`{"return": [{jid: job}]}` (runner `jobs.list_jobs`)')
    job_ok = _ok(
        {
            "oneOf": [
                _ref("Results"),
                {
                    "type": "object",
                    "required": ["info", "return"],
                    "additionalProperties": False,
                    "properties": {"info": {"type": "array"}, "return": {"type": "array"}},
                },
            ]
        },
        'Runner `jobs.list_job`: `{"return": [job]}`, or the rest_cherrypy shape with `format=cherrypy`',
    )
    statuses = (400, 403, *MASTER_STATUSES)
    jid = _path_param("jid", {"type": "string", "pattern": JID_PATTERN}, "A job id", "20240101120000123456")
    return {
        "/jobs": {
            "get": _op(
                "jobs_get",
                "Recent jobs",
                _responses({"200": jobs_ok}, *statuses),
                TOKEN_SECURITY,
                parameters=[FORMAT_PARAM],
            ),
            "options": _options("jobs_options"),
        },
        "/jobs/": {
            "get": _op(
                "jobs_slash_get",
                "Recent jobs (as `/jobs`)",
                _responses({"200": jobs_ok}, *statuses),
                TOKEN_SECURITY,
                parameters=[FORMAT_PARAM],
            ),
            "options": _options("jobs_slash_options"),
        },
        "/jobs/{jid}": {
            "get": _op(
                "jobs_one_get",
                "One job",
                _responses({"200": job_ok}, *statuses),
                TOKEN_SECURITY,
                parameters=[jid, FORMAT_PARAM],
            ),
            "options": _options("jobs_one_options", [_segment("jid")]),
        },
    }


#: ``keysize``: a whole number of bits from 2048 to 8192, no leading zero.
KEYSIZE_CORE = r"204[89]|20[5-9][0-9]|2[1-9][0-9]{2}|[3-7][0-9]{3}|8[01][0-9]{2}|818[0-9]|819[0-2]"
TAR = "application/x-tar"


def _keys_post(settings: _Settings) -> dict[str, Any]:
    """``POST /keys``: body, responses, security."""

    def single(schema: dict[str, Any]) -> dict[str, Any]:
        return {"anyOf": [schema, {"type": "array", "minItems": 1, "maxItems": 1, "items": schema}]}

    mid = {
        "anyOf": [
            {"type": "string", "pattern": KEY_MID_ASCII_PATTERN, "maxLength": MAX_KEY_MID_BYTES},
            {"type": "string", "pattern": KEY_MID_PATTERN, "maxLength": MAX_KEY_MID_BYTES // 4},
        ],
        "description": "The new minion's id: 1-255 UTF-8 bytes, no `/`, `\\`, NUL or control characters",
    }
    keysize = {"anyOf": [{"type": "integer", "minimum": 2048, "maximum": 8192}, _text(KEYSIZE_CORE, False)]}
    request = {
        "type": "object",
        "required": ["mid"],
        "additionalProperties": False,
        "description": "Credentials: `X-Auth-Token` (or the cookie), else `token`, else `username`, `password` "
        "and `eauth` in the body. A value may also be a one-item list.",
        "properties": {
            "mid": single(mid),
            "keysize": single({**keysize, "description": "Bits (default 2048)"}),
            "force": single({**_bool_schema(False), "description": "Replace an accepted key (default false)"}),
            "token": single(_token_schema(settings)),
            "username": single({"type": "string", "minLength": 1, "maxLength": MAX_USERNAME_LENGTH}),
            "password": single({"type": "string", "maxLength": MAX_PASSWORD_LENGTH}),
            "eauth": single(_text(EAUTH_CORE, False)),
        },
    }
    form = {
        "type": "object",
        "required": ["mid"],
        "additionalProperties": False,
        "properties": {
            "mid": mid,
            "keysize": _text(KEYSIZE_CORE, True),
            "force": _bool_schema(True),
            "token": _token_schema(settings, form=True),
            "username": {"type": "string", "maxLength": MAX_USERNAME_LENGTH, "pattern": NON_BLANK_PATTERN},
            "password": {"type": "string", "maxLength": MAX_PASSWORD_LENGTH},
            "eauth": _text(EAUTH_CORE, True),
        },
    }
    body = {
        "oneOf": [request, {"type": "array", "minItems": 1, "maxItems": 1, "items": request}],
    }
    tar = {
        "description": "An uncompressed tar of `minion.pem` (0600) and `minion.pub` (0644)",
        "content": {TAR: {"schema": {"type": "string", "format": "binary"}}},
        "headers": {
            "Content-Disposition": {
                "required": True,
                "schema": {"type": "string", "pattern": r'^attachment; filename="saltkeys-[A-Za-z0-9._-]+\.tar"$'},
            },
            "Cache-Control": {"required": True, "schema": {"const": "no-store"}},
        },
    }
    return _op(
        "keys_post",
        "Generate a key pair, accept it on the master (wheel `key.gen_accept`) and download it",
        _responses({"200": tar}, 400, 403, 409, 415, *MASTER_STATUSES),
        [*TOKEN_SECURITY, {}],
        requestBody=_body(body, form, examples={"new": {"value": {"mid": "web-7", "keysize": 4096}}}),
        description="`Accept` may also be `application/x-tar`. 409 when a key for `mid` is already accepted "
        "and `force` is not true.",
    )


def _key_paths(settings: _Settings) -> dict[str, Any]:
    keys = {
        "type": "object",
        "required": ["return"],
        "additionalProperties": False,
        "properties": {
            "return": {
                "description": "`key.list_all`: `{local, minions, minions_pre, minions_rejected, minions_denied}`",
            }
        },
    }
    statuses = (400, 403, *MASTER_STATUSES)
    return {
        "/keys": {
            "get": _op(
                "keys_get",
                "Minion keys (wheel `key.list_all`)",
                _responses({"200": _ok(keys)}, *statuses),
                TOKEN_SECURITY,
            ),
            "post": _keys_post(settings),
            "options": _options("keys_options"),
        },
        "/keys/": {
            "get": _op(
                "keys_slash_get", "Minion keys (as `/keys`)", _responses({"200": _ok(keys)}, *statuses), TOKEN_SECURITY
            ),
            "options": _options("keys_slash_options"),
        },
        "/keys/{mid}": {
            "get": _op(
                "keys_one_get",
                "One minion's key fingerprints (wheel `key.finger`)",
                _responses({"200": _ok(keys)}, *statuses),
                TOKEN_SECURITY,
                parameters=[_key_mid_param()],
            ),
            "options": _options("keys_one_options", [_segment("mid")]),
        },
    }


def _auth_paths(settings: _Settings) -> dict[str, Any]:
    login_examples = {
        "pam": {"summary": "PAM credentials", "value": {"username": "alice", "password": "secret", "eauth": "pam"}}
    }
    login_headers = {
        "X-Auth-Token": {"required": True, "schema": _token_schema(settings)},
        "Set-Cookie": {
            "required": True,
            "description": "`session_id=<token>; Path=/; Max-Age=<seconds left>; HttpOnly; SameSite=...`"
            " (+ `Secure` over TLS)",
            "schema": {"type": "string", "pattern": "^session_id="},
        },
        "Cache-Control": {"required": True, "schema": {"const": "no-store"}},
    }
    credentials_body = _body(_ref("CredentialsBody"), _ref("CredentialsForm"), examples=login_examples)
    mint_statuses = (400, 415, 429, *MASTER_STATUSES)
    return {
        "/login": {
            "get": _op(
                "login_get",
                "The current token's login entry (token introspection)",
                _responses(
                    {
                        "200": _ok(
                            _ref("Login"),
                            headers={"Cache-Control": {"required": True, "schema": {"const": "no-store"}}},
                        )
                    },
                    *MASTER_STATUSES,
                ),
                TOKEN_SECURITY,
            ),
            "post": _op(
                "login_post",
                "Log in: the master mints a token",
                _responses({"200": _ok(_ref("Login"), headers=login_headers)}, *mint_statuses),
                [],
                requestBody=credentials_body,
            ),
            "options": _options("login_options"),
        },
        "/logout": {
            "post": _op(
                "logout_post",
                "Revoke the token for this API (until it expires) and expire the cookie",
                _responses(
                    {
                        "200": _ok(
                            {
                                "type": "object",
                                "required": ["return"],
                                "additionalProperties": False,
                                "properties": {"return": {"const": LOGOUT_MESSAGE}},
                            }
                        )
                    },
                    *MASTER_STATUSES,
                ),
                TOKEN_SECURITY,
            ),
            "options": _options("logout_options"),
        },
        "/token": {
            "post": _op(
                "token_post",
                "Mint a token (rest_cherrypy shape, no cookie)",
                _responses(
                    {
                        "200": _ok(
                            {"type": "array", "minItems": 1, "maxItems": 1, "items": _ref("TokenEntry")},
                            headers={"Cache-Control": {"required": True, "schema": {"const": "no-store"}}},
                        )
                    },
                    *mint_statuses,
                ),
                [],
                requestBody=credentials_body,
            ),
            "options": _options("token_options"),
        },
    }


def _stream_paths(settings: _Settings) -> dict[str, Any]:
    sse = {
        "description": "An endless event stream: `retry: 400`, then per event `tag:`, `data:` "
        '(`{"data", "tag"}`) and `id: <boot>-<seq>` lines; comments `: keepalive`, `: overflow`, '
        "`: token expired`, `: bus-reconnected`, `: replay-unavailable`, `: shutdown`.",
        "headers": {
            "Cache-Control": {"required": True, "schema": {"const": "no-cache"}},
            "X-Accel-Buffering": {"required": True, "schema": {"const": "no"}},
        },
        "content": {SSE: {"schema": {"type": "string"}}},
    }
    hook_ok = _ok(
        {
            "type": "object",
            "required": ["success"],
            "additionalProperties": False,
            "properties": {"success": {"const": True}},
        },
        "The event was handed to the bus",
    )
    hook_body = _body(
        {"oneOf": [{"type": "object", "additionalProperties": VALUE}, {"type": "array", "items": VALUE}]},
        {
            "type": "object",
            "additionalProperties": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
        },
        required=False,
    )
    hook_statuses = (400, 403, 415, 429, *MASTER_STATUSES)
    hook_security = _security(settings.webhook_disable_auth)
    hook_description = (
        "Fires `salt/netapi/hook[/<path>]` with `{post, get, headers, body}`; credential headers are "
        "redacted. An empty body is accepted (`post: {}`)."
    )
    return {
        "/events": {
            "get": _op(
                "events_get",
                "Server-Sent Events of the master's bus",
                _responses({"200": sse}, 400, *MASTER_STATUSES),
                TOKEN_SECURITY,
                description="`Accept` may also be `text/event-stream`. The only query parameters are `tag` "
                "and `last_event_id`; `token`/`salt_token` and any other parameter get 400.",
                parameters=[
                    {
                        "name": "tag",
                        "in": "query",
                        "required": False,
                        "description": "Tag patterns: a shell glob when it holds `*`, `?` or `[`, else a prefix",
                        "schema": {
                            "type": "array",
                            "maxItems": MAX_TAG_PATTERNS,
                            "items": {"type": "string", "minLength": 1, "maxLength": MAX_TAG_PATTERN_LENGTH},
                        },
                        "style": "form",
                        "explode": True,
                    },
                    {
                        "name": "last_event_id",
                        "in": "query",
                        "required": False,
                        "description": "As `Last-Event-ID` (the header wins)",
                        "schema": {"type": "string"},
                    },
                    {
                        "name": "Last-Event-ID",
                        "in": "header",
                        "required": False,
                        "description": "`<boot>-<seq>` of the last event seen: later events are replayed when "
                        "buffered, else the stream starts live after `: replay-unavailable`",
                        "schema": {"type": "string"},
                    },
                ],
            ),
            "options": _options("events_options"),
        },
        "/hook": {
            "post": _op(
                "hook_post",
                "Fire salt/netapi/hook",
                _responses({"200": hook_ok}, *hook_statuses),
                hook_security,
                description=hook_description,
                requestBody=hook_body,
            ),
            "options": _options("hook_options"),
        },
        "/hook/{suffix}": {
            "post": _op(
                "hook_path_post",
                "Fire salt/netapi/hook/<suffix>",
                _responses({"200": hook_ok}, *hook_statuses),
                hook_security,
                description=hook_description + " The percent-decoded suffix may also hold `/` between "
                "segments (no empty, `.` or `..` segment; one trailing `/` kept), at most 200 characters.",
                parameters=[
                    _path_param(
                        "suffix",
                        {"type": "string", "pattern": HOOK_SEGMENT_PATTERN, "maxLength": 200},
                        "The tag suffix: characters of `A-Z a-z 0-9 . _ ~ : @ + = , -`",
                        "my_service",
                    )
                ],
                requestBody=hook_body,
            ),
            "options": _options("hook_path_options", [_segment("suffix")]),
        },
    }


def _ops_paths(settings: _Settings) -> dict[str, Any]:
    metrics_ok = {
        "description": "Prometheus text format",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    }
    metrics_statuses = () if settings.metrics_disable_auth else MASTER_STATUSES
    stats_statuses = () if settings.stats_disable_auth else MASTER_STATUSES
    unhealthy = {
        "description": "A master connection is down (the health body), or the API is shutting down (an error)",
        "headers": {"Retry-After": RETRY_AFTER},
        "content": _content({"oneOf": [_ref("Health"), _ref("Error503")]}),
    }
    return {
        "/stats": {
            "get": _op(
                "stats_get",
                "The server's own counters",
                _responses({"200": _ok(_ref("Stats"))}, *stats_statuses),
                _security(settings.stats_disable_auth),
            ),
            "options": _options("stats_options"),
        },
        "/health": {
            "get": _op(
                "health_get",
                "Health for load balancers (no master round trip per call)",
                _responses({"200": _ok(_ref("Health"), "Both master connections are up"), "503": unhealthy}),
                [],
            ),
            "options": _options("health_options"),
        },
        "/metrics": {
            "get": _op(
                "metrics_get",
                "Prometheus metrics (404 unless `metrics: true`)",
                _responses({"200": metrics_ok}, 404, *metrics_statuses),
                [] if settings.metrics_disable_auth else [*TOKEN_SECURITY, {"bearer": []}],
            ),
            "options": _options("metrics_options"),
        },
        "/openapi.json": {
            "get": _op(
                "openapi_get",
                "This description",
                _responses(
                    {
                        "200": _ok(
                            {
                                "type": "object",
                                "required": ["openapi", "paths"],
                                "properties": {"openapi": {"const": "3.1.0"}},
                            }
                        )
                    }
                ),
                [],
            ),
        },
    }


def build(config: Any = None) -> dict[str, Any]:
    """The OpenAPI document.

    :param config: the :class:`~saltapi_twisted.config.ApiConfig` of the running
        server (enabled clients, token length, limits, auth switches); the
        defaults are described without it.
    """
    settings = _Settings(config)
    paths: dict[str, Any] = {}
    paths.update(_lowstate_paths(settings))
    paths.update(_auth_paths(settings))
    paths.update(_job_paths())
    paths.update(_key_paths(settings))
    paths.update(_stream_paths(settings))
    paths.update(_ops_paths(settings))
    # OPTIONS is answered on the app's REST paths (web/app.py REST_PATHS).
    from .web.app import REST_PATHS

    for rule in REST_PATHS:
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule)
        if path in paths and "options" not in paths[path]:
            paths[path]["options"] = _options(path.strip("/").replace("/", "_").replace(".", "_") + "_options")
    schemas: dict[str, Any] = {}
    schemas.update(_error_schemas())
    schemas.update(_chunk_components(settings))
    schemas.update(_credentials_components())
    schemas.update(_response_components(settings))
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "saltapi_twisted",
            "version": __version__,
            "description": "REST and streaming API for the Salt master (rest_tornado compatible).\n\n"
            "Responses are JSON or YAML by `Accept` (406 otherwise). Request bodies are JSON (also labelled "
            "`text/plain`), YAML or forms (one flat chunk of strings, a repeated field giving a list, at most "
            "`max_form_fields` fields, values stripped); another or no `Content-Type` gets 415. Every error carries "
            '`{"status", "error", "return"}`; an unknown path gets 404 and a wrong method 405 with `Allow`. '
            "Every response carries `X-Content-Type-Options: nosniff`, and `X-Salt-Version` when known. "
            "Websocket routes (`/all_events/<token>`, `/formatted_events/<token>`, `/ws[/<token>]`, with "
            "`websockets: true`) are not described here.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": _error_response_components(),
            "securitySchemes": {
                "X-Auth-Token": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-Auth-Token",
                    "description": "The token from `/login` (wins over the cookie)",
                },
                "session_id": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": "session_id",
                    "description": "The cookie `/login` sets",
                },
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "`Authorization: Bearer <token>`, on `/metrics` only (Prometheus' `authorization`)",
                },
            },
        },
    }
