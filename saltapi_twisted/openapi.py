"""The OpenAPI 3.1 description of the REST routes, served at ``/openapi.json``.

Written to match what the routes do (statuses, bodies, errors); the test
suite checks the running server against it with schemathesis.
"""

from __future__ import annotations

from typing import Any

from . import __version__

JSON = "application/json"
YAML = "application/x-yaml"
FORM = "application/x-www-form-urlencoded"

ERROR = {"$ref": "#/components/schemas/Error"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": ERROR}, YAML: {"schema": ERROR}}}


def _ok(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}, YAML: {"schema": schema}}}


COMMON_ERRORS = {
    "400": _error("Bad request: body, limits or parameters"),
    "401": _error("Missing, malformed, unknown, expired or revoked token, or bad credentials"),
    "403": _error("The master refused the call for this user, or a cross-site request"),
    "406": _error("No acceptable output type"),
    "413": _error("Request body too large"),
    "415": _error("Unsupported Content-Type"),
    "429": _error("Rate limited"),
    "500": _error("Unexpected error"),
    "502": _error("The master answered with an error"),
    "503": _error("The master is unavailable, or the API is shutting down"),
    "504": _error("The master did not answer in time"),
}

TOKEN_HEADER = {"X-Auth-Token": []}
COOKIE = {"session_id": []}
SECURED = [TOKEN_HEADER, COOKIE]

CHUNK = {
    "type": "object",
    "required": ["client"],
    "properties": {
        "client": {
            "type": "string",
            "enum": ["local", "local_async", "local_batch", "local_subset", "runner", "runner_async", "wheel",
                     "wheel_async"],
        },
        "tgt": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
        "fun": {"type": "string"},
        "arg": {"type": "array"},
        "kwarg": {"type": "object"},
        "tgt_type": {"type": "string"},
        "timeout": {"type": "number"},
        "token": {"type": "string"},
        "username": {"type": "string"},
        "password": {"type": "string"},
        "eauth": {"type": "string"},
        "full_return": {"type": "boolean"},
        "batch": {"type": "string"},
        "subset": {"type": "integer"},
    },
}

LOWSTATE = {"oneOf": [{"type": "array", "items": CHUNK, "minItems": 1}, CHUNK]}

CREDENTIALS = {
    "type": "object",
    "required": ["username", "password", "eauth"],
    "properties": {
        "username": {"type": "string"},
        "password": {"type": "string"},
        "eauth": {"type": "string"},
        "token_expire": {"type": "number"},
    },
}

LOGIN_ENTRY = {
    "type": "object",
    "required": ["token", "expire", "start", "user", "eauth", "perms"],
    "properties": {
        "token": {"type": "string"},
        "expire": {"type": "number"},
        "start": {"type": "number"},
        "user": {"type": "string"},
        "eauth": {"type": "string"},
        "perms": {"type": "array"},
    },
}

RETURN_LIST = {"type": "object", "required": ["return"], "properties": {"return": {"type": "array"}}}


def _body(schema: dict[str, Any], required: bool = True) -> dict[str, Any]:
    return {
        "required": required,
        "content": {JSON: {"schema": schema}, YAML: {"schema": schema}, FORM: {"schema": {"type": "object"}}},
    }


def _op(summary: str, responses: dict[str, Any], secured: bool = True, **extra: Any) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": summary, "responses": {**COMMON_ERRORS, **responses}}
    if secured:
        operation["security"] = SECURED
    operation.update(extra)
    return operation


def _options() -> dict[str, Any]:
    return {"summary": "CORS preflight", "responses": {"204": {"description": "No content"}, "406": COMMON_ERRORS["406"]}}


def _path_param(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}, "description": description}


def build() -> dict[str, Any]:
    """The OpenAPI document."""
    paths: dict[str, Any] = {
        "/": {
            "get": _op(
                "Capabilities: the enabled clients",
                {"200": _ok({"type": "object", "required": ["return", "clients"],
                             "properties": {"return": {"const": "Welcome"},
                                            "clients": {"type": "array", "items": {"type": "string"}}}})},
                secured=False,
            ),
            "post": _op("Run lowstate chunks", {"200": _ok(RETURN_LIST)}, requestBody=_body(LOWSTATE)),
            "options": _options(),
        },
        "/run": {
            "post": _op("Run chunks carrying their own credentials", {"200": _ok(RETURN_LIST)}, secured=False,
                        requestBody=_body(LOWSTATE)),
            "options": _options(),
        },
        "/login": {
            "get": _op("The current token's login entry", {"200": _ok(
                {"type": "object", "properties": {"return": {"type": "array", "items": LOGIN_ENTRY}}})}),
            "post": _op("Log in (mint a token)", {"200": _ok(
                {"type": "object", "properties": {"return": {"type": "array", "items": LOGIN_ENTRY}}})},
                secured=False, requestBody=_body(CREDENTIALS)),
            "options": _options(),
        },
        "/logout": {
            "post": _op("Revoke the token for this API", {"200": _ok(
                {"type": "object", "properties": {"return": {"const": "Your token has been cleared"}}})}),
            "options": _options(),
        },
        "/token": {
            "post": _op("Mint a token (rest_cherrypy shape)", {"200": _ok({"type": "array"})}, secured=False,
                        requestBody=_body(CREDENTIALS)),
            "options": _options(),
        },
        "/minions": {
            "get": _op("Grains of every minion", {"200": _ok(RETURN_LIST)}),
            "post": _op("Publish local_async chunks", {"202": _ok(
                {"type": "object", "required": ["return", "_links"]})}, requestBody=_body(LOWSTATE)),
            "options": _options(),
        },
        "/minions/{mid}": {
            "get": _op("Grains of matching minions", {"200": _ok(RETURN_LIST)},
                       parameters=[_path_param("mid", "A minion id or glob")]),
            "options": {**_options(), "parameters": [_path_param("mid", "A minion id or glob")]},
        },
        "/jobs": {
            "get": _op("Recent jobs", {"200": _ok(RETURN_LIST)}),
            "options": _options(),
        },
        "/jobs/{jid}": {
            "get": _op(
                "One job", {"200": _ok({"type": "object"})},
                parameters=[
                    _path_param("jid", "A job id"),
                    {"name": "format", "in": "query", "required": False,
                     "schema": {"type": "string", "enum": ["tornado", "cherrypy"]}},
                ],
            ),
            "options": {**_options(), "parameters": [_path_param("jid", "A job id")]},
        },
        "/keys": {
            "get": _op("Minion keys", {"200": _ok({"type": "object", "properties": {"return": {"type": "object"}}})}),
            "options": _options(),
        },
        "/keys/{mid}": {
            "get": _op("One minion's key fingerprint", {"200": _ok({"type": "object"})},
                       parameters=[_path_param("mid", "A minion id")]),
            "options": {**_options(), "parameters": [_path_param("mid", "A minion id")]},
        },
        "/events": {
            "get": _op(
                "Server-Sent Events of the master's bus",
                {"200": {"description": "An event stream", "content": {"text/event-stream": {"schema": {"type": "string"}}}}},
                parameters=[
                    {"name": "tag", "in": "query", "required": False,
                     "schema": {"type": "array", "items": {"type": "string"}}, "style": "form", "explode": True},
                    {"name": "Last-Event-ID", "in": "header", "required": False, "schema": {"type": "string"}},
                ],
            ),
            "options": _options(),
        },
        "/hook/{path}": {
            "post": _op("Fire salt/netapi/hook/<path>", {"200": _ok(
                {"type": "object", "properties": {"success": {"const": True}}})},
                parameters=[_path_param("path", "The tag suffix")], requestBody=_body({"type": "object"}, False)),
            "options": {**_options(), "parameters": [_path_param("path", "The tag suffix")]},
        },
        "/stats": {
            "get": _op("The server's own counters", {"200": _ok({"type": "object"})}),
            "options": _options(),
        },
        "/health": {
            "get": _op(
                "Health for load balancers",
                {"200": _ok({"type": "object"}), "503": _ok({"type": "object"}, "Something is down")},
                secured=False,
            ),
            "options": _options(),
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "saltapi_twisted", "version": __version__,
                 "description": "REST and streaming API for the Salt master (rest_tornado compatible)."},
        "paths": paths,
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["status", "error", "return"],
                    "properties": {"status": {"type": "string"}, "error": {"type": "string"},
                                   "return": {"type": "string"}},
                }
            },
            "securitySchemes": {
                "X-Auth-Token": {"type": "apiKey", "in": "header", "name": "X-Auth-Token"},
                "session_id": {"type": "apiKey", "in": "cookie", "name": "session_id"},
            },
        },
    }
