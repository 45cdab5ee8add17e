"""Tests for saltapi_twisted.negotiation (spec §3.2, §3.3; checklist R7, C1-C6, C10)."""

from __future__ import annotations

import json
import math
import time
from collections import OrderedDict
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from saltapi_twisted import negotiation
from saltapi_twisted.errors import ApiError
from saltapi_twisted.negotiation import (
    JSON,
    YAML,
    body_kind,
    choose_output,
    depth,
    normalize_lowstate,
    parse_body,
    serialize,
    to_plain,
)

FORM = "application/x-www-form-urlencoded"
SSE = "text/event-stream"
JSON_TYPES = ("application/json", "text/plain")
YAML_TYPES = ("application/x-yaml", "application/yaml", "text/yaml")
ALL_TYPES = JSON_TYPES + YAML_TYPES + (FORM,)

# C1: 6 nested levels of 9-way aliases over a 9-item list (9**7 leaves).
BILLION_LAUGHS = "\n".join(
    ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [
        f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]"
        for prev, name in zip("abcdef", "bcdefg", strict=True)
    ]
).encode()

# Every YAML test runs over libyaml's parser (used when present) and PyYAML's.
LOADERS: list[type] = [negotiation._PyLoader]
if negotiation._HAVE_LIBYAML:
    LOADERS.insert(0, negotiation._CLoader)


@pytest.fixture(params=LOADERS, ids=lambda cls: cls.__name__)
def loader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> type:
    monkeypatch.setattr(negotiation, "_Loader", request.param)
    return request.param


def refused(body: bytes, content_type: str | None, **kwargs: Any) -> ApiError:
    with pytest.raises(ApiError) as info:
        parse_body(body, content_type, **kwargs)
    return info.value


def quickly(seconds: float = 10.0):
    """A hang detector: the block must finish within *seconds* (quadratic input handling would take minutes)."""

    class _Timer:
        def __enter__(self) -> None:
            self.start = time.monotonic()

        def __exit__(self, *exc: object) -> None:
            elapsed = time.monotonic() - self.start
            assert elapsed < seconds, f"took {elapsed:.2f}s"

    return _Timer()


# ---------------------------------------------------------------------------
# choose_output


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, JSON),
        ("*/*", JSON),
        ("application/*", JSON),
        ("application/json", JSON),
        ("application/xml;q=0.9, */*;q=0.1", JSON),
        ("application/x-yaml", YAML),
        ("application/x-yaml, application/json", YAML),
        ("application/json, application/x-yaml", JSON),
        ("application/x-yaml;q=0.1, application/json;q=1", YAML),  # q= ignored
        ("  application/x-yaml ; charset=utf-8 ", YAML),
        ("text/html", None),
        ("text/html, application/xhtml+xml", None),
        ("", None),
        ("application/x-*", YAML),
        ("*/x-yaml", YAML),
        ("application/js?n", JSON),
        ("application/[xy]-yaml", YAML),
        ("text/*, */*", JSON),
        ("Application/JSON", None),  # case-sensitive, as rest_tornado's fnmatch on POSIX
        ("text/event-stream", None),
        ("[", None),
    ],
)
def test_choose_output(accept: str | None, expected: str | None) -> None:
    assert choose_output(accept) == expected


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, SSE),
        ("*/*", SSE),
        ("text/event-stream", SSE),
        ("text/*", SSE),
        ("application/json", JSON),
        ("application/*", JSON),
        ("application/x-yaml, text/event-stream", YAML),
        ("text/html", None),
    ],
)
def test_choose_output_offers(accept: str | None, expected: str | None) -> None:
    assert choose_output(accept, offers=(SSE, JSON, YAML)) == expected


def test_choose_output_many_wildcard_ranges_is_bounded() -> None:
    accept = ",".join(f"x{i}*/*y" for i in range(3000)) + ", */*"
    with quickly():
        assert choose_output(accept) == JSON


# ---------------------------------------------------------------------------
# serialize


def test_serialize_json_keeps_non_ascii_utf8() -> None:
    out = serialize({"return": [{"m1": "héllo ☃"}]}, JSON)
    assert out == '{"return": [{"m1": "héllo ☃"}]}'.encode()
    assert json.loads(out) == {"return": [{"m1": "héllo ☃"}]}


def test_serialize_json_odd_values() -> None:
    class Thing:
        def __str__(self) -> str:
            return "thing!"

    obj = {"b": b"ab\xff", "s": {3, 1, 2}, "t": (1, 2), "o": Thing(), "f": frozenset()}
    assert json.loads(serialize(obj, JSON)) == {
        "b": "ab\ufffd",
        "s": [1, 2, 3],
        "t": [1, 2],
        "o": "thing!",
        "f": [],
    }


def test_serialize_json_odd_keys() -> None:
    obj = {(1, 2): "tuple", b"k": "bytes", 3: "int", None: "none", True: "bool"}
    assert json.loads(serialize(obj, JSON)) == {
        "(1, 2)": "tuple",
        "k": "bytes",
        "3": "int",
        "null": "none",
        "true": "bool",
    }


def test_serialize_yaml_shape() -> None:
    out = serialize({"return": [{"m1": True, "m2": [1, 2]}]}, YAML)
    assert out == b"return:\n- m1: true\n  m2: [1, 2]\n"


def test_serialize_yaml_odd_values_round_trip() -> None:
    class Thing:
        def __str__(self) -> str:
            return "thing!"

    obj = {
        "bytes": b"\xffx",
        "set": {"b", "a"},
        "tuple": (1, (2, 3)),
        "odict": OrderedDict([("z", 1)]),
        "thing": Thing(),
        "date": "2024-01-01",
        "eq": "=",
        "merge": "<<",
        "unicode": "ünï ☃",
        7: "int key",
        b"bk": "bytes key",
    }
    out = serialize(obj, YAML)
    assert yaml.safe_load(out) == {
        "bytes": "\ufffdx",
        "set": ["a", "b"],
        "tuple": [1, [2, 3]],
        "odict": {"z": 1},
        "thing": "thing!",
        "date": "2024-01-01",
        "eq": "=",
        "merge": "<<",
        "unicode": "ünï ☃",
        "7": "int key",
        "bk": "bytes key",
    }
    assert "ünï ☃".encode() in out


@pytest.mark.parametrize(
    "text",
    ["\x85", "a\x85  b", "\u2028", "\u2029x", "\ufeff", "\r\n", " lead", "trail ", "\x00\x07"],
)
def test_serialize_yaml_awkward_strings_round_trip(text: str) -> None:
    for obj in ({text: None}, [text], {"k": text}):
        assert yaml.safe_load(serialize(obj, YAML)) == obj


def test_serialize_str_subclasses() -> None:
    import enum

    class Color(str, enum.Enum):
        RED = "red"

    class Num(enum.IntEnum):
        ONE = 1

    obj = {"c": Color.RED, "n": Num.ONE, Color.RED: 1}
    assert yaml.safe_load(serialize(obj, YAML)) == {"c": "red", "n": 1, "red": 1}
    assert json.loads(serialize(obj, JSON)) == {"c": "red", "n": 1, "red": 1}


def test_serialize_refuses_other_types_and_cycles() -> None:
    with pytest.raises(ValueError):
        serialize({}, "text/html")
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    for media_type in (JSON, YAML):
        with pytest.raises(ValueError):
            serialize(cyclic, media_type)


def test_to_plain_is_iterative() -> None:
    deep: Any = "leaf"
    for _ in range(5000):
        deep = (deep,)
    plain = to_plain(deep)
    assert depth(plain) == 5000
    with pytest.raises(ValueError):
        to_plain(deep, max_depth=100)


# ---------------------------------------------------------------------------
# depth, normalize_lowstate


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        ("x", 0),
        (None, 0),
        ([], 1),
        ({}, 1),
        ([1, {"a": [2]}], 3),
        ({"a": {"b": {"c": {}}}}, 4),
        ((1, (2,)), 2),
    ],
)
def test_depth(obj: Any, expected: int) -> None:
    assert depth(obj) == expected


def test_depth_deep_and_limited() -> None:
    deep: Any = []
    for _ in range(100_000):
        deep = [deep]
    assert depth(deep) == 100_001
    assert depth(deep, limit=10) == 11
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    assert depth(cyclic, limit=50) == 51


@pytest.mark.parametrize(
    ("parsed", "expected"),
    [
        ({"client": "local", "arg": "x"}, [{"client": "local", "arg": ["x"]}]),
        ({"client": "local", "arg": ["x"]}, [{"client": "local", "arg": ["x"]}]),
        ({"client": "local"}, [{"client": "local"}]),
        ({"arg": None}, [{"arg": [None]}]),
        ({"arg": {"a": 1}}, [{"arg": [{"a": 1}]}]),
        ([{"arg": 1}, {"arg": [2]}, {"fun": "x"}], [{"arg": [1]}, {"arg": [2]}, {"fun": "x"}]),
        ([{"arg": 1}, "junk", 3, None], [{"arg": [1]}, "junk", 3, None]),
        ([], []),
        (None, [None]),
        ("text", ["text"]),
    ],
)
def test_normalize_lowstate(parsed: Any, expected: list[Any]) -> None:
    assert normalize_lowstate(parsed) == expected


def test_normalize_lowstate_does_not_change_the_parsed_body() -> None:
    parsed = [{"client": "local", "arg": "x"}]
    normalize_lowstate(parsed)
    assert parsed == [{"client": "local", "arg": "x"}]
    single = {"arg": "y"}
    normalize_lowstate(single)
    assert single == {"arg": "y"}


# ---------------------------------------------------------------------------
# parse_body: media types


@pytest.mark.parametrize(
    ("content_type", "body", "expected"),
    [
        ("application/json", b'{"client": "local", "arg": [1]}', {"client": "local", "arg": [1]}),
        ("application/json; charset=utf-8", b'[{"a": "\xc3\xa9"}]', [{"a": "é"}]),
        ("Application/JSON", b"[]", []),
        ("text/plain;charset=UTF-8", b'{"a": 1}', {"a": 1}),
        (
            "application/x-yaml",
            b"client: local\narg: [1, x]\n",
            {"client": "local", "arg": [1, "x"]},
        ),
        ("application/yaml", b"- a: 1\n", [{"a": 1}]),
        ("text/yaml", b"{a: 1}", {"a": 1}),
        (" text/yaml ; charset=utf-8", b"a: yes", {"a": True}),
        (FORM, b"client=local&arg=1", {"client": "local", "arg": "1"}),
        (FORM + "; charset=utf-8", b"a=b", {"a": "b"}),
    ],
)
def test_parse_body_types(content_type: str, body: bytes, expected: Any) -> None:
    assert parse_body(body, content_type) == expected


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "",
        "application/xml",
        "multipart/form-data; boundary=x",
        "text/html",
        "application/jsonx",
    ],
)
def test_parse_body_unsupported_type_is_415(content_type: str | None) -> None:
    """C6."""
    err = refused(b'{"a": 1}', content_type)
    assert (err.status, err.word) == (415, "unsupported_media_type")
    assert err.message.startswith("Unsupported Content-Type: ")


def test_parse_body_415_message_names_the_type() -> None:
    assert (
        refused(b"x", "application/xml; q=1").message == "Unsupported Content-Type: application/xml"
    )
    assert len(refused(b"x", "a/" + "b" * 10_000).message) < 200


@pytest.mark.parametrize("content_type", [*ALL_TYPES, None, "application/xml"])
@pytest.mark.parametrize("body", [b"", b"   ", b"\r\n\t "])
def test_parse_body_empty_is_none(content_type: str | None, body: bytes) -> None:
    assert parse_body(body, content_type) is None


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", b"1"),
        ("application/json", b'"text"'),
        ("application/json", b"null"),
        ("application/json", b"true"),
        ("text/plain", b"3.5"),
        ("application/x-yaml", b"just a string"),
        ("application/x-yaml", b"42"),
        ("application/x-yaml", b"~"),
        ("application/x-yaml", b"# only a comment"),
        ("application/x-yaml", b"---\n"),
    ],
)
def test_parse_body_top_level_must_be_dict_or_list(content_type: str, body: bytes) -> None:
    err = refused(body, content_type)
    assert (err.status, err.message) == (
        400,
        "The request body must be a mapping or a list of mappings",
    )


@pytest.mark.parametrize("content_type", ALL_TYPES)
@pytest.mark.parametrize("body", [b"\xff\xfe", b'{"a": "\xc3"}', b"a=\xe9t\xe9", b"\xed\xa0\x80"])
def test_parse_body_invalid_utf8(content_type: str, body: bytes) -> None:
    """C5."""
    err = refused(body, content_type)
    assert (err.status, err.word, err.message) == (
        400,
        "bad_request",
        "Request body is not valid UTF-8",
    )


# ---------------------------------------------------------------------------
# parse_body: JSON


@pytest.mark.parametrize(
    "body", [b"{", b"{'a': 1}", b'{"a": 1,}', b"[1] [2]", b'{"a" 1}', b"\xef\xbb\xbf[]"]
)
def test_json_invalid(body: bytes) -> None:
    err = refused(body, JSON)
    assert err.status == 400
    assert err.message.startswith("Invalid JSON: ")


@pytest.mark.parametrize("levels", [65, 1000, 100_000])
def test_json_too_deep(levels: int) -> None:
    """C3: never a RecursionError/500, and fast."""
    for body in (
        b"[" * levels + b"]" * levels,
        b"[" * levels,
        b'{"a":' * levels + b"1" + b"}" * levels,
    ):
        with quickly():
            err = refused(body, JSON)
        assert err.status == 400
        assert "nested too deeply" in err.message


def test_json_depth_limit_is_exact() -> None:
    assert depth(parse_body(b"[" * 64 + b"]" * 64, JSON)) == 64
    assert refused(b"[" * 11 + b"]" * 11, JSON, max_depth=10).status == 400
    assert parse_body(b"[" * 10 + b"]" * 10, JSON, max_depth=10) is not None


def test_json_brackets_inside_strings_do_not_count() -> None:
    body = json.dumps({"a": "[" * 1000, "b": '\\"[[[' + "{" * 500, "c": ["]"] * 3}).encode()
    assert parse_body(body, JSON)["a"] == "[" * 1000


def test_json_pathological_strings_are_linear() -> None:
    body = b'"' + b'\\"' * 500_000
    with quickly():
        assert refused(body, JSON).message.startswith("Invalid JSON: ")
    body = b"[" + b"[[]]," * 200_000 + b"[]]"
    with quickly():
        assert len(parse_body(body, JSON)) == 200_001


def test_json_huge_integer() -> None:
    """C4."""
    body = b'{"client": "local", "arg": [' + b"9" * 100_000 + b"]}"
    with quickly():
        err = refused(body, JSON)
    assert err.status == 400
    assert "Integer too large" in err.message
    assert refused(b"[-" + b"1" * 4301 + b"]", JSON).status == 400
    assert parse_body(b"[-" + b"1" * 4300 + b"]", JSON) == [-int("1" * 4300)]


@pytest.mark.parametrize(
    "body", [b"[NaN]", b"[Infinity]", b'{"a": -Infinity}', b"[1e999]", b"[-1e400]"]
)
def test_json_non_finite(body: bytes) -> None:
    assert refused(body, JSON).status == 400


def test_json_numbers_and_unicode() -> None:
    assert parse_body(b'{"i": 10, "f": 1.5, "e": 1e3, "u": "\\u00e9\\ud83d\\ude00"}', JSON) == {
        "i": 10,
        "f": 1.5,
        "e": 1000.0,
        "u": "é\U0001f600",
    }


# ---------------------------------------------------------------------------
# parse_body: YAML


def test_yaml_billion_laughs(loader: type) -> None:
    """C1: refused at the first anchor/alias, before any expansion."""
    assert BILLION_LAUGHS.count(b"*") == 54
    with quickly(0.1):
        err = refused(BILLION_LAUGHS, YAML)
    assert (err.status, err.word, err.message) == (400, "bad_request", "YAML aliases not allowed")


def test_yaml_alias_refused_before_building_anything(
    loader: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[Any] = []
    events: list[Any] = []
    original_construct = loader.construct_document
    original_get_event = loader.get_event

    def spy_construct(self: Any, node: Any) -> Any:
        built.append(node)
        return original_construct(self, node)

    def spy_get_event(self: Any) -> Any:
        event = original_get_event(self)
        events.append(event)
        return event

    monkeypatch.setattr(loader, "construct_document", spy_construct)
    monkeypatch.setattr(loader, "get_event", spy_get_event)
    refused(BILLION_LAUGHS, YAML)
    assert built == []
    # stream, document, mapping, key "a"; the anchored list is refused on sight
    assert len(events) == 4
    assert events[-1].value == "a"


@pytest.mark.parametrize(
    "body",
    [
        b"a: &x 1",  # an anchor without an alias
        b"a: *x",  # an alias without an anchor
        b"- &a [1]\n- *a",
        b"base: &b {x: 1}\nother:\n  <<: *b\n",
        b"&top {a: 1}",
        b"[&a x, *a]",
    ],
)
def test_yaml_anchors_and_aliases(loader: type, body: bytes) -> None:
    assert refused(body, YAML).message == "YAML aliases not allowed"


@pytest.mark.parametrize(
    "body",
    [
        b'!!python/object/apply:os.system ["touch S"]',
        b'a: !!python/object/apply:os.system ["touch S"]',
        b"- !!python/name:os.system",
        b"a: !!python/object:collections.OrderedDict {}",
        b"a: !!binary aGVsbG8=",
        b"a: !!set {x, y}",
        b"a: !!omap [{x: 1}]",
        b"a: !!timestamp 2024-01-01",
        b"a: !custom x",
        b"%TAG !e! tag:yaml.org,2002:python/\n---\na: !e!object:os.system {}",
        b"%TAG !! tag:example.com,2000:\n---\na: !!str x",
        b"a: !<tag:yaml.org,2002:python/none> x",
    ],
)
def test_yaml_non_core_tags(
    loader: type, body: bytes, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """C2: refused; nothing runs."""
    monkeypatch.chdir(tmp_path)
    err = refused(body, YAML)
    assert err.status == 400
    assert err.message.startswith("YAML tag not allowed: ")
    assert not (tmp_path / "S").exists()


def test_yaml_core_tags_allowed(loader: type) -> None:
    body = (
        b"a: !!str 1\nb: !!int '2'\nc: !!float '1.5'\nd: !!bool 'true'\n"
        b"e: !!null ''\nf: !!seq [1]\ng: !!map {x: 1}\nh: ! x"
    )
    assert parse_body(body, YAML) == {
        "a": "1",
        "b": 2,
        "c": 1.5,
        "d": True,
        "e": None,
        "f": [1],
        "g": {"x": 1},
        "h": "x",
    }


def test_yaml_salt_compatible_scalars(loader: type) -> None:
    body = (
        b"date: 2024-01-01\nstamp: 2024-01-01 10:00:00\neq: =\non: on\n"
        b"num: 0x1f\nsexa: 1:30\nmerge: {<<: {x: 1}, y: 2}"
    )
    assert parse_body(body, YAML) == {
        "date": "2024-01-01",
        "stamp": "2024-01-01 10:00:00",
        "eq": "=",
        True: True,
        "num": 31,
        "sexa": 90,
        "merge": {"x": 1, "y": 2},
    }


@pytest.mark.parametrize(
    "body",
    [b"a: !!int ''", b"a: !!bool maybe", b"a: !!float x", b"a: !!int [1]", b"a: !!str {b: 1}"],
)
def test_yaml_core_tag_on_wrong_value(loader: type, body: bytes) -> None:
    err = refused(body, YAML)
    assert err.status == 400
    assert err.message.startswith("Invalid YAML: ")


@pytest.mark.parametrize(
    "body", [b"a: [1", b"a: b: c", b"\t- x", b"{a: 1", b"- a\nb: 1", b"a: '\x07'", b"[1, 2]]"]
)
def test_yaml_invalid(loader: type, body: bytes) -> None:
    err = refused(body, YAML)
    assert err.status == 400
    assert err.message.startswith("Invalid YAML: ")
    assert len(err.message) < 250


@pytest.mark.parametrize("body", [b"a: 1\n---\nb: 2", b"--- [1]\n--- [2]\n", b"---\n...\n---\n"])
def test_yaml_multiple_documents(loader: type, body: bytes) -> None:
    assert refused(body, YAML).message == "Multiple YAML documents are not allowed"


def test_yaml_single_explicit_document(loader: type) -> None:
    assert parse_body(b"---\na: 1\n...\n", YAML) == {"a": 1}


@pytest.mark.parametrize(
    "make",
    [
        lambda n: b"[" * n + b"]" * n,
        lambda n: b"[" * n,
        lambda n: b"{a: " * n + b"1" + b"}" * n,
        # block nesting by indentation: the body grows as n**2, so capped
        lambda n: b"".join(b" " * i + b"- \n" for i in range(min(n, 1500))),
        lambda n: b"".join(b" " * i + b"a:\n" for i in range(min(n, 1500))) + b" " * n + b"x",
        lambda n: b"- " * n + b"x",
    ],
)
@pytest.mark.parametrize("levels", [65, 1000, 100_000])
def test_yaml_too_deep(loader: type, make: Any, levels: int) -> None:
    if loader is negotiation._PyLoader and levels == 100_000:
        levels = 20_000  # the pure-Python scanner is slow, not unbounded
    body = make(levels)
    with quickly(2.0):
        err = refused(body, YAML)
    assert err.status == 400


def test_yaml_depth_limit_is_exact(loader: type) -> None:
    assert depth(parse_body(b"[" * 64 + b"]" * 64, YAML)) == 64
    err = refused(b"[" * 65 + b"]" * 65, YAML)
    assert "nested too deeply" in err.message
    assert refused(b"a: {b: {c: 1}}", YAML, max_depth=2).status == 400
    assert parse_body(b"a: {b: 1}", YAML, max_depth=2) == {"a": {"b": 1}}


def test_yaml_numbers(loader: type) -> None:
    assert refused(b"a: " + b"9" * 100_000, YAML).message.startswith("Integer too large")
    with quickly():
        assert refused(b"a: " + b"1:1" * 300_000, YAML).status == 400  # sexagesimal
    assert parse_body(b"a: " + b"1" * 4300, YAML) == {"a": int("1" * 4300)}
    for body in (b"a: .nan", b"a: .inf", b"a: -.Inf", b"a: 1.0e+999"):
        assert refused(body, YAML).message.startswith("Non-finite")


# ---------------------------------------------------------------------------
# parse_body: forms


@pytest.mark.parametrize(
    ("body", "query", "expected"),
    [
        (
            b"client=local&tgt=*&fun=test.ping",
            None,
            {"client": "local", "tgt": "*", "fun": "test.ping"},
        ),
        (b"arg=1&arg=2&arg=3", None, {"arg": ["1", "2", "3"]}),
        (b"arg=1", None, {"arg": "1"}),
        (b"arg[]=x&arg[]=y", None, {"arg[]": ["x", "y"]}),
        (b"a=+x+&b=%20y%20&c=", None, {"a": "x", "b": "y", "c": ""}),
        (b"a&b=", None, {"a": "", "b": ""}),
        (
            b"a=true&b=null&c=[1]&d={x: 1}",
            None,
            {"a": "true", "b": "null", "c": "[1]", "d": "{x: 1}"},
        ),
        (b"a=%C3%A9t%C3%A9&%C3%A9=1", None, {"a": "été", "é": "1"}),
        (b"a=x%01y%1fz%09", None, {"a": "x y z"}),
        (b"a=x;b=y", None, {"a": "x;b=y"}),
        (b"&&a=1&&", None, {"a": "1"}),
        (
            b"b=2&a=body",
            {"a": ["q1", "q2"], "z": [" 9 "]},
            {"a": ["q1", "q2", "body"], "z": "9", "b": "2"},
        ),
        (b"x=1", {b"y": [b"2"]}, {"y": "2", "x": "1"}),
    ],
)
def test_form(body: bytes, query: dict[Any, list[Any]] | None, expected: dict[str, Any]) -> None:
    result = parse_body(body, FORM, query=query)
    assert result == expected
    assert list(result) == list(expected)


def test_form_query_ignored_for_json_and_yaml() -> None:
    assert parse_body(b'{"a": 1}', JSON, query={"b": ["2"]}) == {"a": 1}
    assert parse_body(b"a: 1", YAML, query={"b": ["2"]}) == {"a": 1}


def test_form_bad_percent_escape_utf8() -> None:
    assert refused(b"a=%ff", FORM).message == "Request body is not valid UTF-8"
    assert (
        refused(b"a=1", FORM, query={b"\xff": [b"1"]}).message == "Request body is not valid UTF-8"
    )


def test_form_field_limit() -> None:
    """C10."""
    with quickly():
        err = refused(b"&".join([b"a=1"] * 100_000), FORM)
    assert (err.status, err.message) == (400, "Too many form fields (limit 1000)")
    assert len(parse_body(b"&".join(b"a%d=1" % i for i in range(1000)), FORM)) == 1000
    assert refused(b"&".join([b"a=1"] * 1001), FORM).status == 400
    assert refused(b"a=1&b=2", FORM, max_fields=1).status == 400
    assert refused(b"a=1", FORM, query={"q": ["1", "2"]}, max_fields=2).status == 400
    assert refused(b"a=1", FORM, query={"q": ["1", "2", "3"]}, max_fields=2).status == 400
    assert parse_body(b"a=1", FORM, query={"q": ["1"]}, max_fields=2) == {"q": "1", "a": "1"}


# ---------------------------------------------------------------------------
# body_kind


@pytest.mark.parametrize(
    ("content_type", "kind"),
    [
        ("application/json", "json"),
        ("text/plain; charset=utf-8", "json"),
        (b"application/x-yaml", "yaml"),
        ("TEXT/YAML", "yaml"),
        (FORM, "form"),
        ("application/xml", None),
        ("", None),
        (None, None),
    ],
)
def test_body_kind(content_type: Any, kind: str | None) -> None:
    assert body_kind(content_type) == kind


# ---------------------------------------------------------------------------
# Properties

YAMLISH = st.text(
    alphabet=st.sampled_from(list("ab01-:,[]{}&*!|>?'\"#%@`\\ \n\t.~<=+_xe/")), max_size=80
)
JSONISH = st.text(alphabet=st.sampled_from(list('[]{}",:0123456789-.eE+ \\utrfalsn')), max_size=80)
FORMISH = st.text(alphabet=st.sampled_from(list("ab=&%;+[] 0f9xF\x01")), max_size=80)


def _parse_or_api_error(body: bytes, content_type: str) -> None:
    # Hypothesis tests here are not parametrised over the loader fixture
    # (pytest-twisted wraps a shared hypothesis inner test twice), so each
    # example runs over every YAML loader itself.
    for loader_class in LOADERS:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(negotiation, "_Loader", loader_class)
            try:
                result = parse_body(body, content_type, query={"q": ["1"]})
            except ApiError as exc:
                assert exc.status in (400, 415)
                continue
        assert result is None or isinstance(result, (dict, list))


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=200), content_type=st.sampled_from(ALL_TYPES))
def test_arbitrary_bytes_only_api_errors(body: bytes, content_type: str) -> None:
    _parse_or_api_error(body, content_type)


@settings(max_examples=500, deadline=None)
@given(text=YAMLISH)
def test_yamlish_text_only_api_errors(text: str) -> None:
    _parse_or_api_error(text.encode(), YAML)


@settings(max_examples=300, deadline=None)
@given(text=JSONISH, content_type=st.sampled_from(JSON_TYPES))
def test_jsonish_text_only_api_errors(text: str, content_type: str) -> None:
    _parse_or_api_error(text.encode(), content_type)


@settings(max_examples=300, deadline=None)
@given(text=FORMISH)
def test_formish_text_only_api_errors(text: str) -> None:
    _parse_or_api_error(text.encode(), FORM)


SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
DOCUMENTS = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
BODIES = st.lists(DOCUMENTS, max_size=4) | st.dictionaries(
    st.text(max_size=8), DOCUMENTS, max_size=4
)


@settings(max_examples=200, deadline=None)
@given(obj=BODIES)
def test_yaml_serialize_round_trips(obj: Any) -> None:
    out = serialize(obj, YAML)
    assert yaml.safe_load(out) == obj
    for loader_class in LOADERS:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(negotiation, "_Loader", loader_class)
            assert parse_body(out, YAML) == obj


@settings(max_examples=200, deadline=None)
@given(obj=BODIES)
def test_json_serialize_round_trips(obj: Any) -> None:
    out = serialize(obj, JSON)
    assert json.loads(out) == obj
    assert parse_body(out, JSON) == obj


def test_serialize_json_nan_as_json_dumps_writes_it() -> None:
    assert math.isnan(json.loads(serialize([float("nan")], JSON))[0])


# --------------------------------------------------------------------------
# serialize_in_slices: the same bytes as serialize, long strings in slices


def _run_sliced(obj: Any, media: str = JSON) -> tuple[bytes, int]:
    import asyncio

    from saltapi_twisted.negotiation import serialize_in_slices

    pauses = 0

    async def pause() -> None:
        nonlocal pauses
        pauses += 1

    return asyncio.run(serialize_in_slices(obj, media, pause)), pauses


@pytest.mark.parametrize(
    "obj",
    [
        {"return": [{"minion-1": "a" * (3 * 1024 * 1024 + 7)}]},
        {"x": "é\"\\\n\u2028\x00" * 400_000, "y": [1, 2.5, None, True], "z": "small"},
        ["\ud800" * (1024 * 1024 + 1), {"k": b"bytes" * 10}],
        {"same": ("b" * (1024 * 1024 + 1),) * 2},
    ],
)
def test_sliced_json_is_byte_identical(obj: Any) -> None:
    from saltapi_twisted.negotiation import SLICE

    out, pauses = _run_sliced(obj)
    assert out == serialize(obj, JSON)
    longest = max(len(v) for v in _strings(obj))
    assert pauses >= longest // SLICE


def _strings(obj: Any) -> list[str]:
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        return [s for v in obj.values() for s in _strings(v)]
    if isinstance(obj, (list, tuple)):
        return [s for v in obj for s in _strings(v)]
    return []


def test_small_bodies_and_yaml_are_written_at_once() -> None:
    out, pauses = _run_sliced({"return": ["x" * 1000]})
    assert (out, pauses) == (serialize({"return": ["x" * 1000]}, JSON), 0)
    big = {"return": "y" * (2 * 1024 * 1024)}
    out, pauses = _run_sliced(big, YAML)
    assert (out, pauses) == (serialize(big, YAML), 0)


def test_placeholder_text_in_the_data_is_left_alone() -> None:
    obj = {"a": "\x00saltapi-0000000000000000-0\x00", "b": "c" * (1024 * 1024 + 1)}
    out, _pauses = _run_sliced(obj)
    assert out == serialize(obj, JSON)
