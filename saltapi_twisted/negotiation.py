"""Output negotiation (``Accept``) and bounded request-body decoding.

Spec §3.2 and §3.3; security checklist R7 and C1-C6, C10.

* :func:`choose_output` picks the response media type with rest_tornado's rule.
* :func:`serialize` writes a response body as JSON or YAML.
* :func:`parse_body` decodes a request body by its ``Content-Type``, refusing
  (:class:`~saltapi_twisted.errors.ApiError`) anything malformed or unbounded:
  deep nesting, YAML anchors/aliases and non-core tags, huge integers,
  non-finite numbers, too many form fields, bytes that are not UTF-8.
* :func:`normalize_lowstate` turns a parsed body into a list of chunks.

Nothing here recurses in Python over attacker-controlled nesting: the JSON
depth is checked on the text before decoding, the YAML depth while composing
(each level is refused before it is descended into), and :func:`depth` and
:func:`to_plain` walk with explicit stacks.
"""

from __future__ import annotations

import fnmatch
import json
import math
import secrets
import re
from collections.abc import Callable, Iterable, Mapping
from itertools import accumulate
from typing import Any
from json.encoder import encode_basestring
from urllib.parse import parse_qsl

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import (
    AliasEvent,
    CollectionStartEvent,
    StreamEndEvent,
)
from yaml.resolver import Resolver

from saltapi_twisted.errors import ApiError

try:  # libyaml's C parser: the events are produced in C, composed here.
    from yaml._yaml import CParser as _CParser

    _HAVE_LIBYAML = True
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    _HAVE_LIBYAML = False

__all__ = [
    "JSON",
    "YAML",
    "body_kind",
    "choose_output",
    "depth",
    "normalize_lowstate",
    "parse_body",
    "serialize",
    "to_plain",
]

#: The JSON media type (responses and request bodies).
JSON = "application/json"
#: The YAML media type (responses and request bodies).
YAML = "application/x-yaml"

#: Request media types (parameters stripped, lowercased) -> decoder name.
BODY_TYPES: dict[str, str] = {
    "application/json": "json",
    "text/plain": "json",
    "application/x-yaml": "yaml",
    "application/yaml": "yaml",
    "text/yaml": "yaml",
    "application/x-www-form-urlencoded": "form",
}

#: Longest integer literal accepted, in characters (CPython's default
#: ``sys.get_int_max_str_digits()``; fixed here so a process-wide change to that
#: limit does not change what the API accepts).
MAX_INT_DIGITS = 4300

TOP_LEVEL_MESSAGE = "The request body must be a mapping or a list of mappings"
ALIASES_MESSAGE = "YAML aliases not allowed"
UTF8_MESSAGE = "Request body is not valid UTF-8"

# Longest piece of client-supplied text echoed back in an error message.
_ECHO_MAX = 100


def _bad(message: str) -> ApiError:
    return ApiError("bad_request", message)


def _echo(text: str) -> str:
    return text if len(text) <= _ECHO_MAX else text[:_ECHO_MAX] + "..."


# ---------------------------------------------------------------------------
# Output negotiation

_WILDCARD_CHARS = frozenset("*?[")


def choose_output(accept: str | None, offers: tuple[str, ...] = (JSON, YAML)) -> str | None:
    """Pick the response media type for an ``Accept`` header (COMPAT).

    rest_tornado's rule: a missing header counts as ``*/*``; the header is split
    on ``,``; parameters, ``q=`` included, are ignored; the ranges are tried in
    the client's order and, for each, every offer in turn is matched as a
    shell-wildcard (:mod:`fnmatch`, case-sensitive like rest_tornado on POSIX)
    with the range as the pattern. The first hit wins.

    :param accept: the ``Accept`` header value, or ``None`` when absent.
    :param offers: the media types the resource can produce, in preference
        order (``/events`` passes ``("text/event-stream", JSON, YAML)``).
    :return: the chosen offer, or ``None`` (the caller answers 406).
    """
    if accept is None:
        accept = "*/*"
    for part in accept.split(","):
        media_range = part.split(";", 1)[0].strip()
        if _WILDCARD_CHARS.isdisjoint(media_range):
            if media_range in offers:
                return media_range
            continue
        # re's own cache is small and bounded, unlike fnmatch's, so
        # client-chosen patterns cannot grow the process.
        pattern = re.compile(fnmatch.translate(media_range))
        for offer in offers:
            if pattern.match(offer):
                return offer
    return None


# ---------------------------------------------------------------------------
# Serialisation


def _bytes_text(value: bytes | bytearray | memoryview) -> str:
    return bytes(value).decode("utf-8", "replace")


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _bytes_text(value)
    if isinstance(value, (set, frozenset)):
        return _set_list(value)
    if isinstance(value, tuple):  # pragma: no cover - json encodes tuples itself
        return list(value)
    return str(value)


def _set_list(value: set[Any] | frozenset[Any]) -> list[Any]:
    try:
        return sorted(value)
    except TypeError:
        return list(value)


def _plain_key(key: Any) -> str:
    # The same spelling json.dumps gives non-string keys.
    if type(key) is str:
        return key
    if isinstance(key, str):
        return str.__str__(key)
    if isinstance(key, (bytes, bytearray, memoryview)):
        return _bytes_text(key)
    if key is True:
        return "true"
    if key is False:
        return "false"
    if key is None:
        return "null"
    if isinstance(key, int):
        return int.__repr__(key)
    if isinstance(key, float):
        return float.__repr__(key)
    return str(key)


def to_plain(obj: Any, *, max_depth: int = 10_000) -> Any:
    """Copy *obj* into types both JSON and ``yaml.safe_dump`` write as-is.

    ``bytes`` become ``str`` (UTF-8, undecodable bytes replaced); tuples, sets
    and lists become lists (sets sorted when their items allow it); mappings
    become dicts with ``str`` keys (spelled as ``json.dumps`` spells them);
    subclasses of ``str``/``int``/``float`` become the exact type; ``None``,
    ``bool``, ``int``, ``float`` and ``str`` stay; anything else becomes
    ``str(value)``. The walk uses an explicit stack.

    :param obj: the object to copy.
    :param max_depth: nesting beyond which :class:`ValueError` is raised (also
        the guard against reference cycles).
    :raises ValueError: for nesting deeper than *max_depth*.
    """
    root: list[Any] = [None]
    stack: list[tuple[Any, Any, Any, int]] = [(obj, root, 0, 0)]
    while stack:
        value, parent, slot, level = stack.pop()
        kind = type(value)
        if value is None or kind is bool or kind is str or kind is int or kind is float:
            parent[slot] = value
            continue
        if isinstance(value, Mapping):
            if level >= max_depth:
                raise ValueError(f"object nested deeper than {max_depth} levels")
            new_dict: dict[str, Any] = {}
            parent[slot] = new_dict
            pending = []
            for key, item in value.items():
                plain_key = _plain_key(key)
                new_dict[plain_key] = None
                pending.append((item, new_dict, plain_key, level + 1))
            stack.extend(reversed(pending))
            continue
        if isinstance(value, (list, tuple, set, frozenset)):
            if level >= max_depth:
                raise ValueError(f"object nested deeper than {max_depth} levels")
            items = _set_list(value) if isinstance(value, (set, frozenset)) else value
            new_list: list[Any] = [None] * len(items)
            parent[slot] = new_list
            stack.extend((item, new_list, index, level + 1) for index, item in enumerate(items))
            continue
        if isinstance(value, (bytes, bytearray, memoryview)):
            parent[slot] = _bytes_text(value)
        elif isinstance(value, bool):  # pragma: no cover - bool cannot be subclassed
            parent[slot] = bool(value)
        elif isinstance(value, str):
            parent[slot] = str.__str__(value)
        elif isinstance(value, int):
            parent[slot] = int(value)
        elif isinstance(value, float):
            parent[slot] = float(value)
        else:
            parent[slot] = str(value)
    return root[0]


class _Dumper(yaml.SafeDumper):
    """``SafeDumper`` that double-quotes strings holding U+0085 (NEL).

    With ``allow_unicode`` PyYAML writes NEL raw inside a single-quoted
    scalar, where a reader folds it into a space; double quotes escape it.
    """

    def represent_str(self, data: str) -> Any:
        if "\x85" in data:
            return self.represent_scalar("tag:yaml.org,2002:str", data, style='"')
        return super().represent_str(data)


_Dumper.add_representer(str, _Dumper.represent_str)


#: Strings longer than this are written in slices (:func:`serialize_in_slices`).
BIG_STRING = 1 << 20
#: Characters escaped per slice.
SLICE = 256 * 1024


def _big_strings(obj: Any, found: dict[int, str], depth: int = 0) -> None:
    if isinstance(obj, str):
        if len(obj) > BIG_STRING:
            found[id(obj)] = obj
    elif depth < 200 and isinstance(obj, dict):
        for value in obj.values():
            _big_strings(value, found, depth + 1)
    elif depth < 200 and isinstance(obj, (list, tuple)):
        for value in obj:
            _big_strings(value, found, depth + 1)


def _with_placeholders(obj: Any, names: dict[int, str], depth: int = 0) -> Any:
    if isinstance(obj, str):
        return names.get(id(obj), obj)
    if depth < 200 and isinstance(obj, dict):
        return {key: _with_placeholders(value, names, depth + 1) for key, value in obj.items()}
    if depth < 200 and isinstance(obj, (list, tuple)):
        return [_with_placeholders(value, names, depth + 1) for value in obj]
    return obj


async def serialize_in_slices(obj: Any, media_type: str, pause: Callable[[], Any]) -> bytes:
    """:func:`serialize`, the same bytes, with a pause between slices of long strings.

    A job return of tens of megabytes is one string: JSON-escaping it in one
    call would hold the reactor for its whole length. Each string longer than
    :data:`BIG_STRING` is replaced by a unique placeholder, the rest is
    written at once, and the long strings are escaped :data:`SLICE`
    characters at a time, awaiting *pause()* (the next reactor turn) between
    slices. JSON escapes character by character, so the slices join into
    exactly what :func:`serialize` writes.
    """
    found: dict[int, str] = {}
    if media_type == JSON:
        _big_strings(obj, found)
    if not found:
        return serialize(obj, media_type)
    nonce = secrets.token_hex(8)
    names = {key: f"\x00saltapi-{nonce}-{index}\x00" for index, key in enumerate(found)}
    skeleton = serialize(_with_placeholders(obj, names), JSON).decode("utf-8")
    by_marker = {json.dumps(name, ensure_ascii=False): found[key] for key, name in names.items()}
    parts = re.split("(" + "|".join(map(re.escape, by_marker)) + ")", skeleton)
    pieces: list[bytes] = []
    for index, part in enumerate(parts):
        if index % 2 == 0:
            pieces.append(part.encode("utf-8", "replace"))
            continue
        text = by_marker[part]
        pieces.append(b'"')
        for start in range(0, len(text), SLICE):
            await pause()
            pieces.append(encode_basestring(text[start : start + SLICE])[1:-1].encode("utf-8", "replace"))
        pieces.append(b'"')
    return b"".join(pieces)


def serialize(obj: Any, media_type: str) -> bytes:
    """Write a response body.

    JSON: ``json.dumps(..., ensure_ascii=False)``, UTF-8; ``bytes`` are decoded
    (UTF-8 with replacement), sets and tuples become lists, other objects
    ``str()``. YAML: ``yaml.safe_dump(to_plain(obj), default_flow_style=None,
    allow_unicode=True)`` (a ``SafeDumper`` that also double-quotes strings
    holding U+0085, which PyYAML otherwise writes so they do not read back),
    UTF-8.

    :param obj: the object to write.
    :param media_type: :data:`JSON` or :data:`YAML`.
    :raises ValueError: for another media type, or an object that cannot be
        written (too deep, cyclic); the caller answers 500.
    """
    try:
        if media_type == JSON:
            try:
                text = json.dumps(obj, ensure_ascii=False, default=_json_default)
            except (TypeError, ValueError):
                # Keys json cannot write (tuples, bytes...) or a cycle.
                text = json.dumps(to_plain(obj), ensure_ascii=False, default=_json_default)
        elif media_type == YAML:
            text = yaml.dump(to_plain(obj), Dumper=_Dumper, default_flow_style=None, allow_unicode=True)
        else:
            raise ValueError(f"cannot serialise to {media_type!r}")
    except RecursionError as exc:
        raise ValueError("object nested too deeply to serialise") from exc
    return text.encode("utf-8", "replace")


# ---------------------------------------------------------------------------
# Shared helpers


def depth(obj: Any, limit: int | None = None) -> int:
    """Nesting depth of dicts and lists/tuples: a scalar is 0, ``[]`` is 1.

    Walks with an explicit stack.

    :param obj: the object to measure.
    :param limit: stop as soon as the depth exceeds this and return
        ``limit + 1`` (bounds the work, and terminates on cycles).
    """
    best = 0
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        value, level = stack.pop()
        if isinstance(value, dict):
            children: Iterable[Any] = value.values()
        elif isinstance(value, (list, tuple)):
            children = value
        else:
            continue
        if level > best:
            best = level
            if limit is not None and best > limit:
                return limit + 1
        stack.extend((child, level + 1) for child in children)
    return best


def _check_top_level(obj: Any) -> Any:
    if not isinstance(obj, (dict, list)):
        raise _bad(TOP_LEVEL_MESSAGE)
    return obj


def _depth_error(max_depth: int) -> ApiError:
    return _bad(f"The request body is nested too deeply (limit {max_depth} levels)")


def _int_error() -> ApiError:
    return _bad(f"Integer too large (limit {MAX_INT_DIGITS} digits)")


def _non_finite_error() -> ApiError:
    return _bad("Non-finite numbers (NaN, Infinity) are not allowed")


# ---------------------------------------------------------------------------
# JSON

# A JSON string, or an unterminated one running to the end of the text. The
# match can always be made from the opening quote without backtracking into
# another start, so the scan is linear whatever the input. It runs on the UTF-8
# bytes: no multi-byte sequence contains a '"' or '\\' byte.
_JSON_STRING = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKET_BYTES = bytes(c for c in range(256) if c not in b"[]{}")
_BRACKET_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def _json_too_deep(body: bytes, max_depth: int) -> bool:
    """Whether a JSON text nests arrays/objects deeper than *max_depth*.

    Exact for valid JSON: brackets inside strings are removed first. Linear,
    and the per-bracket work is done by C iterators.
    """
    if body.count(b"[") + body.count(b"{") <= max_depth:
        return False
    brackets = _JSON_STRING.sub(b"", body).translate(None, _NOT_BRACKET_BYTES)
    if not brackets:
        return False
    return max(accumulate(map(_BRACKET_STEP.__getitem__, brackets))) > max_depth


def _json_int(literal: str) -> int:
    if len(literal.lstrip("-")) > MAX_INT_DIGITS:
        raise _int_error()
    return int(literal)


def _json_float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise _non_finite_error()
    return value


def _json_constant(name: str) -> Any:
    raise _non_finite_error()


def _parse_json(body: bytes, text: str, max_depth: int) -> Any:
    if _json_too_deep(body, max_depth):
        raise _depth_error(max_depth)
    try:
        return json.loads(
            text,
            parse_int=_json_int,
            parse_float=_json_float,
            parse_constant=_json_constant,
        )
    except RecursionError:
        raise _depth_error(max_depth) from None
    except ValueError as exc:  # JSONDecodeError, or int() refusing the literal
        raise _bad(f"Invalid JSON: {_echo(str(exc))}") from None


# ---------------------------------------------------------------------------
# YAML

_YAML_TAG = "tag:yaml.org,2002:"
#: Explicit tags accepted: the core schema, and the non-specific ``!``.
YAML_TAGS = frozenset([_YAML_TAG + name for name in ("str", "int", "float", "bool", "null", "seq", "map")] + ["!"])


class _BoundedComposer(Composer):
    """A composer that refuses anchors, aliases, non-core tags and deep nesting.

    Each event is checked before its node is built, so an alias is refused at
    its first appearance (in fact at the first anchor, which must precede it)
    before anything is expanded, and a collection one level too deep before it
    is descended into.
    """

    max_depth = 64
    _level = 0

    # Provided by the parser half of the loader.
    check_event: Callable[..., bool]
    peek_event: Callable[[], Any]
    get_event: Callable[[], Any]

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, AliasEvent) or event.anchor is not None:
            raise _bad(ALIASES_MESSAGE)
        tag = event.tag
        if tag is not None and tag not in YAML_TAGS:
            raise _bad(f"YAML tag not allowed: {_echo(tag)}")
        if not isinstance(event, CollectionStartEvent):
            return super().compose_node(parent, index)
        self._level += 1
        if self._level > self.max_depth:
            raise _depth_error(self.max_depth)
        node = super().compose_node(parent, index)
        self._level -= 1
        return node

    def get_single_node(self) -> Any:
        self.get_event()  # StreamStartEvent
        document = None
        if not self.check_event(StreamEndEvent):
            document = self.compose_document()
        if not self.check_event(StreamEndEvent):
            raise _bad("Multiple YAML documents are not allowed")
        self.get_event()
        return document


class _BoundedConstructor(SafeConstructor):
    """``SafeConstructor`` with Salt's timestamps-as-strings and number bounds."""

    def construct_yaml_int(self, node: Any) -> int:
        # Also bounds YAML 1.1 sexagesimal ints ("1:2:3..."), whose conversion
        # is quadratic in their length.
        if len(node.value) > MAX_INT_DIGITS:
            raise _int_error()
        return super().construct_yaml_int(node)

    def construct_yaml_float(self, node: Any) -> float:
        if len(node.value) > MAX_INT_DIGITS:
            raise _bad(f"Number too long (limit {MAX_INT_DIGITS} characters)")
        value = super().construct_yaml_float(node)
        if not math.isfinite(value):
            raise _non_finite_error()
        return value

    def construct_scalar_text(self, node: Any) -> Any:
        return self.construct_scalar(node)


# Constructors are per class: this table replaces SafeConstructor's.
_BoundedConstructor.yaml_constructors = {
    **SafeConstructor.yaml_constructors,
    _YAML_TAG + "int": _BoundedConstructor.construct_yaml_int,
    _YAML_TAG + "float": _BoundedConstructor.construct_yaml_float,
    # Like Salt's loader, dates stay strings (a datetime could not be sent on).
    _YAML_TAG + "timestamp": _BoundedConstructor.construct_scalar_text,
    # An unquoted "=" resolves to the YAML 1.1 "value" tag, which
    # SafeConstructor cannot build; keep it the string it looks like.
    _YAML_TAG + "value": _BoundedConstructor.construct_scalar_text,
}
for _name in ("binary", "omap", "pairs", "set"):
    # Reachable only through explicit tags, which the composer refuses;
    # dropped so they stay unreachable.
    del _BoundedConstructor.yaml_constructors[_YAML_TAG + _name]


class _PyLoader(
    yaml.reader.Reader,
    yaml.scanner.Scanner,
    yaml.parser.Parser,
    _BoundedComposer,
    _BoundedConstructor,
    Resolver,
):
    """The bounded loader over PyYAML's pure-Python parser."""

    def __init__(self, stream: str) -> None:
        yaml.reader.Reader.__init__(self, stream)
        yaml.scanner.Scanner.__init__(self)
        yaml.parser.Parser.__init__(self)
        _BoundedComposer.__init__(self)
        _BoundedConstructor.__init__(self)
        Resolver.__init__(self)


if _HAVE_LIBYAML:

    class _CLoader(_BoundedComposer, _CParser, _BoundedConstructor, Resolver):
        """The bounded loader over libyaml's parser (events in C, nodes here)."""

        def __init__(self, stream: str) -> None:
            _CParser.__init__(self, stream)
            _BoundedComposer.__init__(self)
            _BoundedConstructor.__init__(self)
            Resolver.__init__(self)

    _Loader: type = _CLoader
else:  # pragma: no cover
    _Loader = _PyLoader


def _yaml_message(exc: Exception) -> str:
    if isinstance(exc, yaml.MarkedYAMLError):
        text = exc.problem or exc.context or "malformed document"
        mark = exc.problem_mark or exc.context_mark
        if mark is not None:
            text = f"{text} (line {mark.line + 1}, column {mark.column + 1})"
    else:
        # SafeConstructor's ValueError/KeyError/IndexError for an explicit core
        # tag on a scalar that does not fit it (!!int "", !!bool maybe).
        text = "a value does not fit its tag"
    return f"Invalid YAML: {_echo(text)}"


def _parse_yaml(text: str, max_depth: int) -> Any:
    loader = None
    try:
        loader = _Loader(text)  # the pure-Python reader checks characters here
        loader.max_depth = max_depth
        return loader.get_single_data()
    except ApiError:
        raise
    except RecursionError:
        raise _depth_error(max_depth) from None
    except Exception as exc:  # noqa: BLE001 - untrusted input: any failure is a 400
        raise _bad(_yaml_message(exc)) from None
    finally:
        if loader is not None:
            loader.dispose()


# ---------------------------------------------------------------------------
# Forms

# Tornado replaces these control characters in argument values with spaces.
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0e-\x1f]")


def _form_value(value: str) -> str:
    return _CONTROL_CHARS.sub(" ", value).strip()


def _as_text(value: str | bytes) -> str:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise _bad(UTF8_MESSAGE) from None
    return value


def _parse_form(text: str, query: dict[Any, list[Any]] | None, max_fields: int) -> dict[str, Any]:
    """rest_tornado's form loader: query arguments, then body arguments."""
    too_many = _bad(f"Too many form fields (limit {max_fields})")
    merged: dict[str, list[str]] = {}
    count = 0
    for name, values in (query or {}).items():
        count += len(values)
        if count > max_fields:
            raise too_many
        merged.setdefault(_as_text(name), []).extend(_as_text(v) for v in values)
    try:
        pairs = parse_qsl(
            text,
            keep_blank_values=True,
            strict_parsing=False,
            errors="strict",
            max_num_fields=max_fields - count,
        )
    except UnicodeDecodeError:
        raise _bad(UTF8_MESSAGE) from None
    except ValueError:  # "Max number of fields exceeded"
        raise too_many from None
    for name, value in pairs:
        merged.setdefault(name, []).append(value)
    result: dict[str, Any] = {}
    for name, values in merged.items():
        stripped = [_form_value(v) for v in values]
        result[name] = stripped[0] if len(stripped) == 1 else stripped
    return result


# ---------------------------------------------------------------------------
# Request bodies


def body_kind(content_type: str | bytes | None) -> str | None:
    """``"json"``, ``"yaml"``, ``"form"`` or ``None`` for a ``Content-Type``."""
    media_type = _media_type(content_type)
    return BODY_TYPES.get(media_type) if media_type else None


def _media_type(content_type: str | bytes | None) -> str:
    if content_type is None:
        return ""
    if isinstance(content_type, bytes):
        content_type = content_type.decode("latin-1")
    return content_type.split(";", 1)[0].strip().lower()


def parse_body(
    body: bytes,
    content_type: str | bytes | None,
    *,
    query: dict[Any, list[Any]] | None = None,
    max_depth: int = 64,
    max_fields: int = 1000,
) -> Any:
    """Decode a request body by its ``Content-Type`` (spec §3.3).

    =====================================================  ==============
    media type (parameters ignored, case-insensitive)       decoder
    =====================================================  ==============
    ``application/json``, ``text/plain``                    JSON
    ``application/x-yaml``, ``application/yaml``,           safe YAML
    ``text/yaml``
    ``application/x-www-form-urlencoded``                   form loader
    =====================================================  ==============

    An empty (or all-whitespace) body gives ``None`` whatever the
    ``Content-Type``, as rest_tornado skips decoding then; the caller decides
    whether a body was required. JSON and YAML must give a dict or a list; the
    form loader always gives a dict (single key -> string, repeated key -> list
    in order, values stripped, no type coercion, *query* merged in first).

    :param body: the raw body.
    :param content_type: the ``Content-Type`` header value, or ``None``.
    :param query: the query-string arguments (name -> values in order), merged
        into form bodies only.
    :param max_depth: deepest nesting of arrays/objects accepted.
    :param max_fields: most form fields accepted, query arguments included.
    :raises ApiError: ``unsupported_media_type`` (415) for a missing or unknown
        type; ``bad_request`` (400) for bytes that are not UTF-8, malformed
        JSON/YAML, nesting over *max_depth*, YAML anchors/aliases
        (``YAML aliases not allowed``), non-core YAML tags, several YAML
        documents, integers over :data:`MAX_INT_DIGITS` digits, NaN/Infinity,
        more than *max_fields* form fields, or a JSON/YAML top level that is
        neither a dict nor a list.
    """
    if not body.strip():
        return None
    media_type = _media_type(content_type)
    kind = BODY_TYPES.get(media_type)
    if kind is None:
        shown = _echo(media_type) if media_type else "(none)"
        raise ApiError("unsupported_media_type", f"Unsupported Content-Type: {shown}")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise _bad(UTF8_MESSAGE) from None
    if kind == "form":
        return _parse_form(text, query, max_fields)
    if kind == "json":
        return _check_top_level(_parse_json(body, text, max_depth))
    return _check_top_level(_parse_yaml(text, max_depth))


def normalize_lowstate(obj: Any) -> list[Any]:
    """rest_tornado's lowstate normalisation (COMPAT).

    A list is used as is (copied), anything else becomes a one-item list; in
    each dict item whose ``arg`` is present and not a list, ``arg`` is wrapped
    in a list. Dict items are copied, not changed in place, so the parsed body
    stays as the client sent it. Non-dict items are left for the validator.

    :param obj: the parsed body.
    """
    items = list(obj) if isinstance(obj, list) else [obj]
    for index, item in enumerate(items):
        if isinstance(item, dict) and "arg" in item and not isinstance(item["arg"], list):
            item = dict(item)
            item["arg"] = [item["arg"]]
            items[index] = item
    return items
